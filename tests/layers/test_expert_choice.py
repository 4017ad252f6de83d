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
