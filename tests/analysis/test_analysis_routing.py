"""Routing inspection: MoT merge weights/entropy and token-choice load, via hooks."""

from __future__ import annotations

import math

import pytest
import torch

from motlab import GPT, GPTConfig
from motlab.analysis import entropy_matrix, inspect_routing, load_matrix


def tiny(ffn: dict, **kw) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(
        size=None, d_model=16, d_ff=32, n_layers=4, n_heads=2, vocab_size=64, seq_len=12, ffn=ffn
    )
    for k, v in kw.items():
        setattr(cfg, k, v)
    return GPT(cfg)


def test_mot_merge_weights_and_entropy():
    model = tiny({"variant": "mot", "group_size": 4, "n_experts": 8})
    tokens = torch.randint(64, (8, 12))
    layers = inspect_routing(model, tokens)
    assert [r.block for r in layers] == [2, 3] and {r.variant for r in layers} == {"mot"}
    _, aux = model.forward_with_aux(tokens)
    for r in layers:
        assert set(r.report) == {
            "merge_weights", "entropy", "entropy_per_expert", "entropy_per_position"
        }  # fmt: skip
        assert r.merge_weights.shape == (2, 4, 12, 8) and r.merge_weights.dtype == torch.float32
        torch.testing.assert_close(r.merge_weights.sum(dim=1), torch.ones(2, 12, 8))
        assert r.entropy.shape == (2, 12, 8)
        w = r.merge_weights.double()
        torch.testing.assert_close(
            r.entropy.double(), -(w * w.log()).sum(dim=1) / math.log(4), rtol=1e-5, atol=1e-6
        )
        assert 0.0 <= r.entropy.min() and r.entropy.max() <= 1.0 + 1e-6
        # The layer's own logged statistic is the mean of what we report.
        expected = aux.stats[f"block{r.block}/merge_entropy"]
        torch.testing.assert_close(r.entropy.mean(), expected.float())
        torch.testing.assert_close(r.entropy_per_expert, r.entropy.mean(dim=(0, 1)))
        torch.testing.assert_close(r.entropy_per_position, r.entropy.mean(dim=(0, 2)))
    matrix, blocks = entropy_matrix(layers)
    assert matrix.shape == (2, 8) and blocks == [2, 3]
    # Hooks are removed afterwards.
    assert all(not b.ffn._forward_hooks for b in model.blocks)
    with pytest.raises(ValueError, match="token-choice"):
        load_matrix(layers)


def test_discrete_mot_has_zero_entropy():
    model = tiny({"variant": "mot", "group_size": 4, "n_experts": 4, "discrete": True})
    layers = inspect_routing(model, torch.randint(64, (4, 12)))
    assert all(float(r.entropy.abs().max()) < 1e-6 for r in layers)


def test_token_choice_load_and_drops():
    model = tiny({"variant": "token_choice", "n_experts": 4, "capacity_factor": 0.5})
    tokens = torch.randint(64, (3, 12))
    layers = inspect_routing(model, tokens)
    N = 3 * 12
    for r in layers:
        assert r.variant == "token_choice" and "merge_weights" not in r
        assert set(r.report) == {
            "requested_per_expert", "load_fraction", "tokens_per_expert", "dropped_fraction"
        }  # fmt: skip
        with pytest.raises(AttributeError, match="reported no 'merge_weights'"):
            r.merge_weights  # noqa: B018
        assert int(r.requested_per_expert.sum()) == N
        kept = float(r.tokens_per_expert.sum())
        assert kept == pytest.approx(N * (1 - r.dropped_fraction))
        # Capacity 0.5 · N / E per expert: at most that many kept, half of all dropped or more.
        assert float(r.tokens_per_expert.max()) <= int(0.5 * N / 4)
        assert r.dropped_fraction >= 0.5
        assert (r.tokens_per_expert <= r.requested_per_expert).all()
        torch.testing.assert_close(
            r.load_fraction, r.requested_per_expert.double() / N, check_dtype=False
        )
    before, blocks = load_matrix(layers, after_capacity=False)
    assert before.shape == (2, 4) and blocks == [2, 3]


def test_dense_model_has_no_routed_layers():
    model = tiny({"variant": "dense"})
    assert inspect_routing(model, torch.randint(64, (2, 12))) == []


def test_mot_merge_weights_are_laid_out_group_example_position_expert():
    """merge_weights[i, g, t, e] is the weight of example i·G + g at position t for expert e."""
    model = tiny({"variant": "mot", "group_size": 4, "n_experts": 8})
    tokens = torch.randint(64, (8, 12))
    inputs = {}
    model.blocks[2].ffn.register_forward_hook(lambda m, args, out: inputs.update(x=args[0]))
    layer = inspect_routing(model, tokens)[0]
    x_BTD = inputs["x"]
    i, t = 1, 5
    logits_GE = x_BTD[4 * i : 4 * i + 4, t] @ model.blocks[2].ffn.experts.router
    torch.testing.assert_close(layer.merge_weights[i, :, t], torch.softmax(logits_GE, dim=0))
