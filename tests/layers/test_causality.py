"""Causality for every registered variant: a future token never changes a past output."""

from __future__ import annotations

import pytest
import torch
from variant_suite import D_FF, D, check_layer_causal, check_model_causal

from motlab.layers import FFN_REGISTRY, build_ffn, ffn_config

B, T = 8, 12


@pytest.mark.parametrize("name", sorted(FFN_REGISTRY))
def test_layer_is_causal(name: str) -> None:
    check_layer_causal(name)


@pytest.mark.parametrize("name", sorted(FFN_REGISTRY))
def test_model_is_causal(name: str) -> None:
    check_model_causal(name)


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
