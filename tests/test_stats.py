"""Parameter and FLOP accounting against METHOD.md's reference counts and the real modules."""

from __future__ import annotations

import pytest
from variant_suite import check_counts

from motlab.config import GPTConfig
from motlab.layers import FFN_REGISTRY, FFNLayer, LayerCost, build_ffn, ffn_config
from motlab.model import GPT
from motlab.stats import count_parameters, model_stats

REFERENCE = {  # METHOD.md §1 (vocab 50257, context 256, no final norm)
    ("medium", "dense"): 76.8e6,
    ("medium", "mot"): 336.9e6,
    ("base", "dense"): 162.4e6,
    ("base", "mot"): 1.04e9,
}


@pytest.mark.parametrize("size,variant", sorted(REFERENCE))
def test_reference_parameter_counts(size: str, variant: str) -> None:
    cfg = GPTConfig(
        size=size,
        ffn={"variant": variant, "group_size": 32, "n_experts": 32}
        if variant == "mot"
        else {"variant": "dense"},
    )
    assert model_stats(cfg).total_params == pytest.approx(REFERENCE[size, variant], rel=0.01)


@pytest.mark.parametrize(
    "ffn",
    [
        {"variant": "dense"},
        {"variant": "mot", "group_size": 4, "n_experts": 8},
        {"variant": "token_choice", "n_experts": 4, "top_k": 2},
        {"variant": "expert_choice", "group_size": 4, "n_experts": 4},
    ],
)
def test_counts_match_the_built_module(ffn) -> None:
    cfg = GPTConfig(size="mini", vocab_size=1000, seq_len=64, ffn=ffn)
    assert model_stats(cfg).total_params == count_parameters(GPT(cfg))


def test_flop_matched_variants_cost_about_the_same() -> None:
    dense = model_stats(GPTConfig(size="medium"))
    mot = model_stats(GPTConfig(size="medium", ffn={"variant": "mot"}))
    mot512 = model_stats(GPTConfig(size="medium", ffn={"variant": "mot", "n_experts": 512}))
    tc = model_stats(GPTConfig(size="medium", ffn={"variant": "token_choice"}))
    assert mot.active_params == pytest.approx(dense.active_params, rel=0.01)
    assert tc.flops_per_token == pytest.approx(dense.flops_per_token, rel=0.01)
    # Mixing is ~2 % of the FFN for /32E and far more for 512 experts (METHOD.md §2).
    assert 1.0 < mot.flops_per_token / dense.flops_per_token < 1.01
    assert mot512.flops_per_token > mot.flops_per_token * 1.04


# D = 16, d_ff = 32 and each variant's defaults (G = E = 32, top-1, FLOP-matched F = 32):
KNOWN_COSTS = {
    # W1 and W2: 2 D d_ff.
    "dense": LayerCost(active_params=2 * 16 * 32, forward_macs=2 * 16 * 32),
    # Router D E; each expert (2 D F) runs one mixture per G tokens: E 2 D F / G; mixing and
    # unmixing E D each.
    "mot": LayerCost(16 * 32 + 32 * 2 * 16 * 32 / 32, 32 * 2 * 16 * 32 / 32 + 3 * 32 * 16),
    # Router D E, and the one expert a token goes to: 2 D F.
    "token_choice": LayerCost(16 * 32 + 2 * 16 * 32, 16 * 32 + 2 * 16 * 32),
    # Router D E; each expert picks C = G k / E = 1 token per group of G: E C 2 D F / G; the
    # output LayerNorm's 2 D parameters are active, not multiply-adds.
    "expert_choice": LayerCost(16 * 32 + 32 * 2 * 16 * 32 / 32 + 2 * 16, 16 * 32 + 2 * 16 * 32),
}


def test_the_known_costs_are_exact_numbers() -> None:
    assert {k: (c.active_params, c.forward_macs) for k, c in KNOWN_COSTS.items()} == {
        "dense": (1024, 1024), "mot": (1536, 2560), "token_choice": (1536, 1536),
        "expert_choice": (1568, 1536),
    }  # fmt: skip


@pytest.mark.parametrize("name", sorted(FFN_REGISTRY))
def test_counts_follow_every_registered_variant(name: str) -> None:
    assert name in KNOWN_COSTS, (
        f"variant {name!r}: add its cost at the suite's shapes (D = 16, d_ff = 32, its "
        "defaults) to KNOWN_COSTS, worked out by hand"
    )
    check_counts(name, KNOWN_COSTS[name])


@pytest.mark.parametrize(
    "ffn",
    [
        {"variant": "dense"},
        {"variant": "mot", "group_size": 4, "n_experts": 8},
        {"variant": "mot", "group_size": 8, "n_experts": 32, "d_expert": 16},
        {"variant": "expert_choice", "group_size": 4, "n_experts": 2, "output_norm": False},
    ],
)
def test_analytic_cost_equals_the_measured_default(ffn) -> None:
    """The built-in layers' own cost() agrees with FFNLayer's default, which measures the
    multiply-adds of a meta-device forward pass with torch's FLOP counter (token choice is the
    exception by design: its padded capacity slots run but are not a token's compute)."""
    layer = build_ffn(64, 128, ffn_config(ffn))
    measured = FFNLayer.cost(layer)
    assert layer.cost().forward_macs == pytest.approx(measured.forward_macs, rel=1e-9)
