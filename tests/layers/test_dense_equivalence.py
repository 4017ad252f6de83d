"""Routed layers in their degenerate configurations equal the dense FFN (outputs and grads)."""

from __future__ import annotations

import torch

from motlab.layers import DenseFFN, MoT, MoTConfig, TokenChoice, TokenChoiceConfig

D, D_FF, B, T = 16, 48, 6, 5


def _dense_and_input() -> tuple[DenseFFN, torch.Tensor]:
    torch.manual_seed(0)
    return DenseFFN(D, D_FF), torch.randn(B, T, D)


def _copy_dense_into_experts(layer: torch.nn.Module, dense: DenseFFN) -> None:
    with torch.no_grad():
        layer.experts.w1.copy_(dense.w1[None])
        layer.experts.w2.copy_(dense.w2[None])


def _check(layer: torch.nn.Module, dense: DenseFFN, x: torch.Tensor) -> None:
    x_a, x_b = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_dense, _ = dense(x_a)
    out_layer, _ = layer(x_b)
    torch.testing.assert_close(out_layer, out_dense)
    grad = torch.randn_like(out_dense)
    out_dense.backward(grad)
    out_layer.backward(grad)
    torch.testing.assert_close(x_b.grad, x_a.grad)
    torch.testing.assert_close(layer.experts.w1.grad[0], dense.w1.grad)
    torch.testing.assert_close(layer.experts.w2.grad[0], dense.w2.grad)


def test_mot_one_expert_group_one_is_dense() -> None:
    dense, x = _dense_and_input()
    mot = MoT(D, D_FF, MoTConfig(group_size=1, n_experts=1))
    assert mot.experts.d_expert == D_FF
    _copy_dense_into_experts(mot, dense)
    _check(mot, dense, x)


def test_token_choice_one_expert_top1_ample_capacity_is_dense() -> None:
    dense, x = _dense_and_input()
    tc = TokenChoice(D, D_FF, TokenChoiceConfig(n_experts=1, top_k=1, capacity_factor=2.0))
    _copy_dense_into_experts(tc, dense)
    _check(tc, dense, x)
    _, aux = tc(x)
    assert aux.stats["dropped_fraction"] == 0
