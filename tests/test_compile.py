"""The compiled model computes what the eager model computes (outputs, aux, gradients).

Compiled with ``fullgraph=True``: every variant must trace as one graph, because a graph break
splits the GPU step into pieces with Python (and often a host-device sync) in between.
"""

from __future__ import annotations

import pytest
import torch
from variant_suite import assert_same_grads, check_compiled_matches_eager, take_grads

from motlab.config import GPTConfig
from motlab.layers import FFN_REGISTRY
from motlab.lit import LitLM


def _config(name: str) -> GPTConfig:
    return GPTConfig(
        size=None, d_model=32, d_ff=64, n_layers=2, n_heads=2, vocab_size=100, seq_len=16,
        ffn={"variant": name, "group_size": 4, "n_experts": 4},
    )  # fmt: skip


@pytest.mark.parametrize("name", sorted(FFN_REGISTRY))
def test_compiled_matches_eager(name: str) -> None:
    check_compiled_matches_eager(name)


def test_compiled_training_loss_matches_eager() -> None:
    """``model.compile`` compiles the cross-entropy with the model; it must equal the eager loss."""
    torch.manual_seed(0)
    lit = LitLM(_config("mot"), compile=True)
    batch = torch.randint(0, 100, (8, 17))

    ce, _ = lit._cross_entropy(batch)
    ce.backward()
    eager_grads = take_grads(lit)

    torch._dynamo.reset()
    ce_c, _ = lit.loss_fn(batch)
    ce_c.backward()

    torch.testing.assert_close(ce_c, ce, rtol=1e-5, atol=1e-6)
    assert_same_grads(lit, eager_grads)
