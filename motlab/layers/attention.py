"""Causal multi-head self-attention on ``scaled_dot_product_attention`` (flash on GPU).

Shapes (legend in :mod:`motlab.shapes`): B, T, D, H, A.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from motlab.layers.init import trunc_normal_fan_in_


class CausalSelfAttention(nn.Module):
    """Pre-norm is applied by the block; no projection biases (METHOD.md §1)."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"n_heads ({n_heads}) must divide d_model ({d_model})")
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)
        trunc_normal_fan_in_(self.qkv.weight, fan_in=d_model)
        trunc_normal_fan_in_(self.proj.weight, fan_in=d_model)

    def forward(self, x_BTD: Tensor) -> Tensor:
        B, T, D = x_BTD.shape
        H = self.n_heads
        q_BTHA, k_BTHA, v_BTHA = self.qkv(x_BTD).view(B, T, 3, H, D // H).unbind(dim=2)
        y_BHTA = F.scaled_dot_product_attention(
            q_BTHA.transpose(1, 2), k_BTHA.transpose(1, 2), v_BTHA.transpose(1, 2), is_causal=True
        )
        return self.proj(y_BHTA.transpose(1, 2).reshape(B, T, D))
