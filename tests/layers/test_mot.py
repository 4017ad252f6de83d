"""Mixture of Tokens invariants (METHOD.md §2)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from motlab.layers import MoT, MoTConfig

D, D_FF, T = 8, 16, 3


def _mot(**kw) -> MoT:
    torch.manual_seed(0)
    return MoT(D, D_FF, MoTConfig(**{"group_size": 4, "n_experts": 4, **kw}))


def test_merge_weights_sum_to_one_over_the_group() -> None:
    mot = _mot()
    w, _ = mot.merge_weights(torch.randn(6, 4, D))  # 6 groups of 4 tokens
    assert w.shape == (6, 4, 4)
    torch.testing.assert_close(w.sum(dim=1), torch.ones(6, 4))


def test_discrete_mode_routes_one_token_per_expert_per_group() -> None:
    mot = _mot(discrete=True)
    x = torch.randn(8, T, D)
    groups = x.transpose(0, 1).reshape(T * 2, 4, D)  # group t·2 + i: examples 4i..4i+3 at t
    w, logits = mot.merge_weights(groups)
    assert set(w.unique().tolist()) == {0.0, 1.0}
    torch.testing.assert_close(w.sum(dim=1), torch.ones(T * 2, 4))
    assert torch.equal(w.argmax(dim=1), logits.argmax(dim=1))
    # Each expert's output goes back to its one chosen token with weight 1.
    out, _ = mot(x)
    chosen = w.argmax(dim=1).view(T, 2, 4)  # (T, n, E)
    expected = torch.zeros_like(out)
    for i in range(2):
        for t in range(T):
            for e in range(4):
                b = 4 * i + chosen[t, i, e]
                y_e = mot.experts(x[b, t].expand(4, 1, D).contiguous())[e, 0]
                expected[b, t] += y_e
    torch.testing.assert_close(out, expected)


def test_temperature_sharpens_and_can_be_learned() -> None:
    x = torch.randn(4, T, D)
    hot = _mot(temperature=10.0)
    cold = _mot(temperature=0.1)
    _, aux_hot = hot(x)
    _, aux_cold = cold(x)
    assert aux_hot.stats["merge_entropy"] > aux_cold.stats["merge_entropy"]
    learn = _mot(learnable_temperature=True)
    out, aux = learn(x)
    out.sum().backward()
    assert learn.log_temperature.grad is not None
    assert aux.stats["temperature"] == pytest.approx(1.0)


def test_flop_matched_expert_size() -> None:
    assert MoTConfig(group_size=32, n_experts=32).expert_size(2048) == 2048
    assert MoTConfig(group_size=32, n_experts=512).expert_size(2048) == 128
    assert MoTConfig(group_size=32, n_experts=512, d_expert=64).expert_size(2048) == 64


def test_experts_must_divide_group_times_dff() -> None:
    with pytest.raises(ValueError, match="n_experts \\(3\\) to divide group_size \\* d_ff"):
        MoT(D, 10, MoTConfig(group_size=2, n_experts=3))


def test_batch_not_a_multiple_of_group_size_names_it() -> None:
    with pytest.raises(ValueError, match="group_size=4"):
        _mot()(torch.randn(6, T, D))


def test_entropy_is_normalised() -> None:
    mot = _mot()
    with torch.no_grad():
        mot.experts.router.zero_()  # uniform merge weights
    _, aux = mot(torch.randn(4, T, D))
    assert aux.stats["merge_entropy"] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(("group_size", "n_experts"), [(4, 4), (4, 8), (2, 6)])
def test_output_matches_the_formula_written_as_loops(
    group_size: int, n_experts: int, assert_same_grads: Callable[..., None]
) -> None:
    """METHOD.md §2 term by term: per group and position, softmax over the group, one mixed
    token per expert, its output sent back with the same weights. E ≠ G catches transposes."""
    mot = _mot(group_size=group_size, n_experts=n_experts, d_expert=6, temperature=0.7)
    G, E, n = group_size, n_experts, 2
    x = torch.randn(n * G, T, D, requires_grad=True)
    out, _ = mot(x)
    logits = x @ mot.experts.router  # (B, T, E)
    expected = torch.zeros_like(x)
    for i in range(n):
        rows = slice(i * G, (i + 1) * G)
        for t in range(T):
            w_GE = torch.softmax(logits[rows, t] / 0.7, dim=0)
            for e in range(E):
                mixed_D = (w_GE[:, e, None] * x[rows, t]).sum(dim=0)
                y_D = torch.relu(mixed_D @ mot.experts.w1[e]) @ mot.experts.w2[e]
                expected[rows, t] += w_GE[:, e, None] * y_D
    torch.testing.assert_close(out, expected)
    assert_same_grads(out, expected, [x, *mot.parameters()])


def test_reports_its_statistics() -> None:
    _, aux = _mot()(torch.randn(4, T, D))
    assert set(aux.stats) == {"merge_entropy", "router_logits_mean", "router_logits_std",
                              "temperature"}  # fmt: skip
    assert aux.losses == {}


@pytest.mark.parametrize("discrete", [False, True])
def test_padding_is_masked_out_of_the_group(discrete: bool) -> None:
    """Padded rows get weight 0; the weights sum to 1 over the real rows; a group of padding
    only mixes nothing (zeros, not NaN); and a real row's output is that of the group of its
    real rows alone."""
    mot = _mot(discrete=discrete)
    real_RG = torch.tensor([[True, False, True, True], [False] * 4, [True] * 4])
    w, _ = mot.merge_weights(torch.randn(3, 4, D), real_RG)
    assert (w[0, 1] == 0).all() and (w[1] == 0).all()
    torch.testing.assert_close(w[0].sum(dim=0), torch.ones(4))
    x = torch.randn(4, T, D)
    real_BT = torch.ones(4, T, dtype=torch.bool)
    real_BT[1, :2] = False  # row 1 is padding at positions 0 and 1
    out, _ = mot.forward_masked(x, real_BT)
    assert torch.isfinite(out).all() and (out[1, :2] == 0).all()
    x2 = x.clone()
    x2[1, :2] = torch.randn(2, D) * 10  # what padding holds does not matter
    torch.testing.assert_close(mot.forward_masked(x2, real_BT)[0], out, rtol=0, atol=0)
