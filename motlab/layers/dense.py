"""The dense ReLU feed-forward layer: the reference every routed layer is tested against.

Shapes (legend in :mod:`motlab.shapes`): B, T, D, F.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from motlab.layers.aux import Aux
from motlab.layers.init import trunc_normal_fan_in_
from motlab.layers.registry import FFNConfig, FFNLayer, LayerCost, register_variant


@dataclass
class DenseConfig(FFNConfig):
    """Dense feed-forward: ``W2 · ReLU(W1 · x)``, no biases (as the routed experts)."""

    variant: Literal["dense"] = "dense"
    """Registry name of this variant."""
    d_ff: int | None = None
    """Hidden size; ``None`` takes the model's ``d_ff``."""


class DenseFFN(FFNLayer):
    """x (B, T, D) → (B, T, D). Weights stored as (D, F) and (F, D) like one expert."""

    def __init__(self, d_model: int, d_ff: int, cfg: DenseConfig | None = None) -> None:
        cfg = cfg or DenseConfig()
        super().__init__(d_model, d_ff, cfg)
        self.d_hidden = cfg.d_ff or d_ff
        self.w1 = nn.Parameter(torch.empty(d_model, self.d_hidden))  # (D, F)
        self.w2 = nn.Parameter(torch.empty(self.d_hidden, d_model))  # (F, D)
        trunc_normal_fan_in_(self.w1, fan_in=d_model)
        trunc_normal_fan_in_(self.w2, fan_in=self.d_hidden)

    def forward(self, x_BTD: Tensor) -> tuple[Tensor, Aux]:
        return F.relu(x_BTD @ self.w1) @ self.w2, Aux()

    def cost(self) -> LayerCost:
        params = 2 * self.d_model * self.d_hidden
        return LayerCost(active_params=params, forward_macs=params)


register_variant("dense", DenseConfig, DenseFFN)
