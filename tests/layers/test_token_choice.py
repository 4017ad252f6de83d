"""Token choice: capacity, drops, the Switch load-balancing loss (METHOD.md §3)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from motlab.layers import TokenChoice, TokenChoiceConfig

D, D_FF = 4, 8


def _tc(**kw) -> TokenChoice:
    torch.manual_seed(0)
    return TokenChoice(D, D_FF, TokenChoiceConfig(**{"n_experts": 2, **kw}))


def _force_routing(tc: TokenChoice) -> None:
    """Router that sends a token to expert 0 iff its first feature is positive."""
    with torch.no_grad():
        tc.experts.router.zero_()
        tc.experts.router[0, 0] = 5.0
        tc.experts.router[0, 1] = -5.0


def test_capacity_is_respected_and_drops_reported() -> None:
    tc = _tc(capacity_factor=1.0)  # C = int(1.0 * 8 * 1 / 2) = 4
    _force_routing(tc)
    x = torch.randn(2, 4, D)
    x[..., 0] = 1.0  # all 8 tokens want expert 0
    out, aux = tc(x)
    assert tc.capacity(8) == 4
    assert aux.stats["tokens_per_expert"].tolist() == [4.0, 0.0]
    assert aux.stats["dropped_fraction"].item() == pytest.approx(0.5)
    # Position-major filling: positions 0 and 1 of both sequences are kept, 2 and 3 dropped.
    kept = out.abs().sum(-1) > 0
    assert kept.tolist() == [[True, True, False, False], [True, True, False, False]]


def test_output_is_scaled_by_gate_probability() -> None:
    tc = _tc(capacity_factor=None)
    x = torch.randn(3, 2, D)
    out, _ = tc(x)
    probs = torch.softmax(x @ tc.experts.router, dim=-1)
    gate, idx = probs.max(-1)
    for b in range(3):
        for t in range(2):
            e = idx[b, t]
            y = tc.experts(x[b, t].expand(2, 1, D).contiguous())[e, 0]
            torch.testing.assert_close(out[b, t], gate[b, t] * y)


def test_load_balancing_loss_matches_switch_formula_by_hand() -> None:
    tc = _tc(capacity_factor=None, load_balancing_weight=0.01)
    with torch.no_grad():
        tc.experts.router.zero_()
        tc.experts.router[0, 0] = 1.0  # logits = (x0, 0)
    # Four tokens with first features ln 3, ln 3, ln 3, -ln 3 → p0 = 3/4, 3/4, 3/4, 1/4.
    x = torch.zeros(1, 4, D)
    x[0, :, 0] = torch.tensor([3.0, 3.0, 3.0, 1 / 3]).log()
    _, aux = tc(x)
    mean_p = [(0.75 * 3 + 0.25) / 4, (0.25 * 3 + 0.75) / 4]  # 0.625, 0.375
    frac = [3 / 4, 1 / 4]
    expected = 2 * (mean_p[0] * frac[0] + mean_p[1] * frac[1])  # E · Σ p̄_e f_e = 1.125
    assert aux.stats["load_balancing"].item() == pytest.approx(expected)
    assert aux.losses["load_balancing_loss"].item() == pytest.approx(0.01 * expected)


def test_z_loss_is_optional() -> None:
    x = torch.randn(2, 3, D)
    assert "z_loss" not in _tc()(x)[1].losses
    _, aux = _tc(z_loss_weight=1e-3)(x)
    logits = x.reshape(-1, D) @ _tc().experts.router
    expected = torch.logsumexp(logits, -1).pow(2).mean() * 1e-3
    assert aux.losses["z_loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_top2_routes_each_token_to_two_experts() -> None:
    tc = TokenChoice(D, D_FF, TokenChoiceConfig(n_experts=3, top_k=2, capacity_factor=None))
    _, aux = tc(torch.randn(2, 5, D))
    assert aux.stats["tokens_per_expert"].sum().item() == 20
    assert aux.stats["dropped_fraction"].item() == 0


def test_bad_top_k() -> None:
    with pytest.raises(ValueError, match="top_k"):
        _tc(top_k=3)


@pytest.mark.parametrize(("top_k", "capacity_factor"), [(1, 0.5), (2, 0.75), (2, None)])
def test_output_matches_position_major_filling_written_as_loops(
    top_k: int, capacity_factor: float | None, assert_same_grads: Callable[..., None]
) -> None:
    """METHOD.md §3 term by term: assignments visited position by position (then sequence,
    then k), each kept while its expert has room, output Σ gate · expert(x) over kept ones."""
    torch.manual_seed(3)
    E, B, T = 3, 4, 5
    tc = TokenChoice(
        D, D_FF, TokenChoiceConfig(n_experts=E, top_k=top_k, capacity_factor=capacity_factor)
    )
    x = torch.randn(B, T, D, requires_grad=True)
    out, aux = tc(x)
    probs = torch.softmax(x @ tc.experts.router, dim=-1)
    gate, expert = probs.topk(top_k, dim=-1)
    C = tc.capacity(B * T)
    taken = [0] * E
    expected = torch.zeros_like(x)
    for t in range(T):
        for b in range(B):
            for k in range(top_k):
                e = int(expert[b, t, k])
                if taken[e] < C:
                    taken[e] += 1
                    y = torch.relu(x[b, t] @ tc.experts.w1[e]) @ tc.experts.w2[e]
                    expected[b, t] += gate[b, t, k] * y
    torch.testing.assert_close(out, expected)
    assert_same_grads(out, expected, [x, *tc.parameters()])
    assert aux.stats["tokens_per_expert"].tolist() == [float(n) for n in taken]


def test_load_balancing_counts_all_top_k_choices() -> None:
    """For top_k > 1, frac_e counts every one of a token's K choices (normalised by K), as
    GShard and the authors' code do, not only its first choice."""
    tc = _tc(n_experts=3, top_k=2, capacity_factor=None)
    x = torch.randn(2, 5, D)
    _, aux = tc(x)
    probs = torch.softmax(x.reshape(-1, D) @ tc.experts.router, dim=-1)
    choices = probs.topk(2, dim=-1).indices.reshape(-1)
    frac = torch.bincount(choices, minlength=3).float() / choices.numel()
    expected = 3 * (probs.mean(dim=0) * frac).sum()
    assert aux.stats["load_balancing"].item() == pytest.approx(expected.item(), rel=1e-6)
    first_only = torch.bincount(probs.argmax(-1), minlength=3).float() / probs.shape[0]
    assert not torch.allclose(frac, first_only)  # the two counts differ on this batch


def test_counts_in_float32_whatever_the_default_dtype() -> None:
    torch.set_default_dtype(torch.float64)
    try:
        tc = _tc(capacity_factor=1.0)
        _, aux = tc(torch.randn(2, 4, D))
    finally:
        torch.set_default_dtype(torch.float32)
    assert aux.stats["tokens_per_expert"].dtype == torch.float32


def test_reports_its_statistics_and_losses() -> None:
    _, aux = _tc(z_loss_weight=1e-3)(torch.randn(2, 4, D))
    assert set(aux.stats) == {"load_balancing", "z_loss", "dropped_fraction", "tokens_per_expert"}
    assert set(aux.losses) == {"load_balancing_loss", "z_loss"}


@pytest.mark.parametrize("shape", [(1, 1), (1, 3), (4, 6)])
@pytest.mark.parametrize("top_k", [1, 2])
def test_dropless_equals_no_capacity_limit(shape, top_k) -> None:
    """Dropless (assignments sorted by expert, each expert on its own run) computes what an
    unlimited capacity (C = N·K, mostly empty slots) does, on tokens all sent to one expert
    too. (Its compiled form, which gathers each assignment's weights, is checked against it by
    the registry's decoding-step compile test.)"""
    tc = _tc(n_experts=4, top_k=top_k, capacity_factor=None)
    x = torch.randn(*shape, D)
    reference, ref_aux = tc(x)
    tc.set_capacity("dropless")
    out, aux = tc(x)
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-6)
    assert aux.stats["dropped_fraction"] == 0
    assert torch.equal(aux.stats["tokens_per_expert"], ref_aux.stats["tokens_per_expert"])
    _force_routing(tc)
    x[..., 0] = 1.0
    tc.set_capacity("training")
    reference, _ = tc(x)
    tc.set_capacity("dropless")
    torch.testing.assert_close(tc(x)[0], reference, rtol=0, atol=1e-6)


def test_with_capacity_left_padding_takes_no_slot() -> None:
    """At a training capacity, a left-padded row computes what its real tokens alone compute:
    padding is ranked apart and C counts the real tokens."""
    tc = _tc(capacity_factor=1.0)
    _force_routing(tc)
    x = torch.randn(1, 8, D)
    x[..., 0] = 1.0  # every token wants expert 0: C = int(1.0 · 5 / 2) = 2 of the 5 real ones
    real = torch.tensor([[False, False, False, True, True, True, True, True]])
    out, aux = tc.forward_masked(x, real)
    alone, alone_aux = tc(x[:, 3:])
    torch.testing.assert_close(out[:, 3:], alone, rtol=0, atol=0)
    assert (
        aux.stats["dropped_fraction"] == alone_aux.stats["dropped_fraction"] == pytest.approx(0.6)
    )
