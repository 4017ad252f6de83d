"""Causal expert choice: each expert picks c tokens per group and position (METHOD.md §4)."""

from __future__ import annotations

import pytest
import torch

from motlab.layers import ExpertChoice, ExpertChoiceConfig

D, D_FF, T = 8, 16, 3


def _ec(**kw) -> ExpertChoice:
    torch.manual_seed(0)
    cfg = ExpertChoiceConfig(**{"group_size": 4, "n_experts": 2, "top_k": 1, **kw})
    return ExpertChoice(D, D_FF, cfg)


@pytest.mark.parametrize("top_k,c", [(1, 2), (2, 4)])
def test_each_expert_picks_c_tokens_per_group(top_k: int, c: int) -> None:
    ec = _ec(top_k=top_k, output_norm=False)
    assert ec.c == c
    counts = {}

    def count(module, inputs, output):  # the experts see (E, n·c·T, D)
        counts["shape"] = inputs[0].shape

    ec.experts.register_forward_hook(count)
    x = torch.randn(8, T, D)
    ec(x)
    assert counts["shape"] == (2, 2 * c * T, D)


def test_output_matches_explicit_top_c_selection() -> None:
    ec = _ec(output_norm=False)
    x = torch.randn(4, T, D)  # one group
    out, aux = ec(x)
    scores = torch.softmax(x @ ec.experts.router, dim=-1)  # (G, T, E)
    expected = torch.zeros_like(out)
    for t in range(T):
        for e in range(2):
            gate, picks = scores[:, t, e].topk(2)
            for g, s in zip(picks.tolist(), gate, strict=True):
                y = ec.experts(x[g, t].expand(2, 1, D).contiguous())[e, 0]
                expected[g, t] += s * y
    torch.testing.assert_close(out, expected)
    assert 0 <= aux.stats["unrouted_fraction"] <= 1


def test_experts_must_divide_group_times_k() -> None:
    with pytest.raises(ValueError, match="to divide group_size \\* top_k"):
        _ec(n_experts=3)


def test_batch_not_a_multiple_of_group_size() -> None:
    with pytest.raises(ValueError, match="group_size=4"):
        _ec()(torch.randn(6, T, D))


def test_output_norm_gives_unpicked_tokens_beta_and_hides_single_gates() -> None:
    """What the paper's output LayerNorm does (documented in the layer): an unpicked token gets
    LN(0) = β; for tokens picked by one expert the gate cancels, so the router gets no gradient
    from them. Without the norm, unpicked tokens get exactly 0 and gates get gradients."""
    x = torch.randn(4, T, D)  # one group; E = 2 experts pick c = 2 tokens each
    for output_norm in (True, False):
        ec = _ec(n_experts=4, output_norm=output_norm)  # c = 1: each token picked 0..4 times
        with torch.no_grad():
            ec.experts.w2.mul_(100)  # outputs far above the norm's ε, which alone passes a gate on
            if output_norm:
                ec.norm.bias.uniform_(-1, 1)
        out, aux = ec(x)
        counts = torch.zeros(4, T)
        scores = torch.softmax(x @ ec.experts.router, dim=-1)
        for t in range(T):
            for e in range(4):
                counts[scores[:, t, e].argmax(), t] += 1
        unpicked = counts == 0
        assert unpicked.any()
        expected = ec.norm.bias.detach() if output_norm else torch.zeros(D)
        torch.testing.assert_close(out[unpicked], expected.expand(int(unpicked.sum()), D))

        once = counts == 1
        assert once.any()
        ec.zero_grad()
        loss = out[once].pow(2).sum()
        loss.backward()
        relative_grad = ec.experts.router.grad.abs().max().item() / loss.item()
        if output_norm:
            assert relative_grad < 1e-4  # what is left flows through the norm's ε
        else:
            assert relative_grad > 0.1


def test_counts_in_float32_whatever_the_default_dtype() -> None:
    torch.set_default_dtype(torch.float64)
    try:
        ec = _ec(output_norm=False)
        _, aux = ec(torch.randn(8, T, D))
    finally:
        torch.set_default_dtype(torch.float32)
    assert aux.stats["max_experts_per_token"].dtype == torch.float32


def test_reports_its_statistics() -> None:
    _, aux = _ec()(torch.randn(8, T, D))
    assert set(aux.stats) == {"gate_mean", "gate_std", "unrouted_fraction", "max_experts_per_token"}
    assert aux.losses == {}


def test_padding_is_never_picked_with_a_gate() -> None:
    """Experts pick among the real rows of a group first; a pick that has to fall on padding
    adds nothing, so what padding holds reaches no real token."""
    ec = _ec(n_experts=4, top_k=2, output_norm=False)  # C = 4·2/4 = 2 picks per expert
    x = torch.randn(4, T, D)
    real_BT = torch.ones(4, T, dtype=torch.bool)
    real_BT[:3, 0] = False  # one real row at position 0: each expert's second pick is padding
    out, _ = ec.forward_masked(x, real_BT)
    assert (out[:3, 0] == 0).all()
    x2 = x.clone()
    x2[:3, 0] = torch.randn(3, D) * 10
    torch.testing.assert_close(ec.forward_masked(x2, real_BT)[0], out, rtol=0, atol=0)
