"""Causality for every registered variant: a future token never changes a past output."""

from __future__ import annotations

import pytest
import torch

from motlab.config import GPTConfig
from motlab.layers import FFN_REGISTRY, build_ffn, ffn_config
from motlab.model import GPT

D, D_FF, B, T = 16, 32, 8, 12

# Small configs for each variant; a new registry entry falls back to its defaults (scaled down).
SMALL = {
    "dense": {},
    "mot": {"group_size": 4, "n_experts": 4},
    "token_choice": {"n_experts": 4, "capacity_factor": 1.0},
    "expert_choice": {"group_size": 4, "n_experts": 4},
}


def _layer_cfg(name: str):
    return ffn_config({"variant": name, **SMALL.get(name, {})})


@pytest.mark.parametrize("name", sorted(FFN_REGISTRY))
def test_layer_is_causal(name: str) -> None:
    torch.manual_seed(0)
    layer = build_ffn(D, D_FF, _layer_cfg(name))
    x = torch.randn(B, T, D)
    out, _ = layer(x)
    for t in (0, 5, T - 2):
        for b in (0, 3):
            x2 = x.clone()
            x2[b, t + 1] += torch.randn(D) * 3  # perturb token t+1 of sequence b
            out2, _ = layer(x2)
            torch.testing.assert_close(out2[:, : t + 1], out[:, : t + 1], rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(FFN_REGISTRY))
def test_model_is_causal(name: str) -> None:
    torch.manual_seed(0)
    cfg = GPTConfig(
        size=None,
        d_model=D,
        d_ff=D_FF,
        n_layers=2,
        n_heads=2,
        vocab_size=50,
        seq_len=T,
        ffn={"variant": name, **SMALL.get(name, {})},
        moe_blocks="all",
    )
    model = GPT(cfg).eval()
    tokens = torch.randint(0, 50, (B, T))
    logits = model(tokens)
    t, b = 6, 2
    tokens2 = tokens.clone()
    tokens2[b, t + 1] = (tokens[b, t + 1] + 1) % 50
    logits2 = model(tokens2)
    torch.testing.assert_close(logits2[:, : t + 1], logits[:, : t + 1], rtol=1e-6, atol=1e-6)
    assert not torch.allclose(logits2[b, t + 1], logits[b, t + 1])


def test_late_token_never_displaces_an_earlier_one() -> None:
    """Position-major filling under tight capacity: changing the last position of one sequence
    (which batch-major filling would let displace earlier positions of later sequences) leaves
    every earlier position of every sequence unchanged."""
    torch.manual_seed(1)
    layer = build_ffn(
        D, D_FF, ffn_config({"variant": "token_choice", "n_experts": 2, "capacity_factor": 0.5})
    )
    x = torch.randn(B, T, D)
    out, aux = layer(x)
    assert aux.stats["dropped_fraction"] > 0  # capacity binds
    x2 = x.clone()
    x2[0, T - 1] = x[0, 0]  # last position of seq 0 now looks like its first
    out2, _ = layer(x2)
    torch.testing.assert_close(out2[:, : T - 1], out[:, : T - 1], rtol=0, atol=0)
