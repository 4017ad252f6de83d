"""Causal multi-head self-attention on ``scaled_dot_product_attention`` (flash on GPU).

Shapes (legend in :mod:`motlab.shapes`): B, T, D, H, A, X.

Training runs the plain causal kernel. For inference the layer also takes a boolean mask
(left-padded prompts: no token attends to padding) and a :class:`~motlab.kv_cache.LayerKV`
that the new keys and values are written into before attending to every cached slot.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from motlab.kv_cache import LayerKV
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

    def forward(
        self,
        x_BTD: Tensor,
        mask_B1TX: Tensor | None = None,
        kv: LayerKV | None = None,
        slots_T: Tensor | None = None,
    ) -> Tensor:
        """``x_BTD`` → (B, T, D), causal over T; or, with ``mask_B1TX`` (bool, True = may
        attend), over the X keys the mask names: the T new ones, or with a cache ``kv`` every
        cached slot after the new keys and values are written at ``slots_T``."""
        B, T, D = x_BTD.shape
        H = self.n_heads
        q_BTHA, k_BTHA, v_BTHA = self.qkv(x_BTD).view(B, T, 3, H, D // H).unbind(dim=2)
        q_BHTA = q_BTHA.transpose(1, 2)
        k_BHXA, v_BHXA = k_BTHA.transpose(1, 2), v_BTHA.transpose(1, 2)
        if kv is not None:
            assert slots_T is not None and mask_B1TX is not None, "a cache needs slots and a mask"
            k_BHXA, v_BHXA = kv.update(slots_T, k_BHXA, v_BHXA)
        if mask_B1TX is None:
            y_BHTA = F.scaled_dot_product_attention(q_BHTA, k_BHXA, v_BHXA, is_causal=True)
        else:
            y_BHTA = F.scaled_dot_product_attention(q_BHTA, k_BHXA, v_BHXA, attn_mask=mask_B1TX)
        return self.proj(y_BHTA.transpose(1, 2).reshape(B, T, D))
