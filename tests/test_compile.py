"""The compiled model computes what the eager model computes (outputs, aux, gradients).

Compiled with ``fullgraph=True``: every variant must trace as one graph, because a graph break
splits the GPU step into pieces with Python (and often a host-device sync) in between.
"""

from __future__ import annotations

import pytest
import torch

from motlab.config import GPTConfig
from motlab.layers import FFN_REGISTRY
from motlab.lit import LitLM
from motlab.model import GPT

SMALL = {
    "mot": {"group_size": 4, "n_experts": 4},
    "token_choice": {"n_experts": 4, "capacity_factor": 1.0},
    "expert_choice": {"group_size": 4, "n_experts": 4},
}


def _config(name: str) -> GPTConfig:
    return GPTConfig(
        size=None, d_model=32, d_ff=64, n_layers=2, n_heads=2, vocab_size=100, seq_len=16,
        ffn={"variant": name, **SMALL.get(name, {})},
    )  # fmt: skip


def _take_grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The gradients of ``module`` by parameter name, which are then cleared."""
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    module.zero_grad()
    return grads


def _assert_same_grads(module: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    for n, p in module.named_parameters():
        if n in expected:
            torch.testing.assert_close(p.grad, expected[n], rtol=1e-3, atol=1e-5, msg=n)


@pytest.mark.parametrize("name", sorted(FFN_REGISTRY))
def test_compiled_matches_eager(name: str) -> None:
    torch.manual_seed(0)
    model = GPT(_config(name))
    tokens = torch.randint(0, 100, (8, 16))

    logits, aux = model.forward_with_aux(tokens)
    (logits.square().mean() + aux.total_loss()).backward()
    eager_grads = _take_grads(model)

    torch._dynamo.reset()
    compiled = torch.compile(model.forward_with_aux, fullgraph=True)  # one graph: no breaks
    logits_c, aux_c = compiled(tokens)
    (logits_c.square().mean() + aux_c.total_loss()).backward()

    torch.testing.assert_close(logits_c, logits, rtol=1e-4, atol=1e-5)
    for key in aux.stats:
        torch.testing.assert_close(aux_c.stats[key], aux.stats[key], rtol=1e-4, atol=1e-5)
    _assert_same_grads(model, eager_grads)


def test_compiled_training_loss_matches_eager() -> None:
    """``model.compile`` compiles the cross-entropy with the model; it must equal the eager loss."""
    torch.manual_seed(0)
    lit = LitLM(_config("mot"), compile=True)
    batch = torch.randint(0, 100, (8, 17))

    ce, _ = lit._cross_entropy(batch)
    ce.backward()
    eager_grads = _take_grads(lit)

    torch._dynamo.reset()
    lit._set_loss()
    ce_c, _ = lit._loss(batch)
    ce_c.backward()

    torch.testing.assert_close(ce_c, ce, rtol=1e-5, atol=1e-6)
    _assert_same_grads(lit, eager_grads)
