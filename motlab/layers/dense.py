"""The dense ReLU feed-forward layer: the reference every routed layer is tested against."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from motlab.layers.aux import Aux
from motlab.layers.init import trunc_normal_fan_in_


@dataclass
class DenseConfig:
    """Dense feed-forward: ``W2 · ReLU(W1 · x)``, no biases (as the routed experts)."""

    variant: Literal["dense"] = "dense"
    """Registry name of this variant."""
    d_ff: int | None = None
    """Hidden size; ``None`` takes the model's ``d_ff``."""


class DenseFFN(nn.Module):
    """x (B, T, D) → (B, T, D). Weights stored as (D, F) and (F, D) like one expert."""

    def __init__(self, d_model: int, d_ff: int, cfg: DenseConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or DenseConfig()
        self.d_model, self.d_ff = d_model, cfg.d_ff or d_ff
        self.w1 = nn.Parameter(torch.empty(self.d_model, self.d_ff))  # (D, F)
        self.w2 = nn.Parameter(torch.empty(self.d_ff, self.d_model))  # (F, D)
        trunc_normal_fan_in_(self.w1, fan_in=self.d_model)
        trunc_normal_fan_in_(self.w2, fan_in=self.d_ff)

    def forward(self, x_BTD: Tensor) -> tuple[Tensor, Aux]:
        return F.relu(x_BTD @ self.w1) @ self.w2, Aux()
