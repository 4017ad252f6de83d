"""The paper's initialisation: truncated normal whose standard deviation is sqrt(scale / fan_in).

Shared by every layer so that a MoT expert and a dense FFN of the same shape start from the same
distribution (the dense-equivalence tests rely on copying weights, not on init, but comparisons
between variants at equal steps rely on this).

Cutting a normal at ±2σ leaves a distribution whose standard deviation is only 0.88 σ, so a
plain ``trunc_normal_(std=σ, a=-2σ, b=2σ)`` initialises 12 % smaller than the paper's formula
says. Here the underlying normal is widened by 1 / 0.88 so that the *realised* standard
deviation is the nominal sqrt(scale / fan_in), as in the authors' code; the cut stays at two
standard deviations of that underlying normal.

Every layer draws with the paper's scale; :class:`InitConfig` (``model.net.init``) then sets a
scale per part of the model by multiplying the drawn tensors (:func:`rescale_`). A truncated
normal multiplied by c is the truncated normal of c times the standard deviation, cut at the same
±2σ, so the result is what drawing with the other scale would give — from the same random
numbers: two models that differ only in ``model.net.init`` differ only in those scales, and the
paper's defaults leave every tensor bit for bit as drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

INIT_SCALE = 0.1
"""The paper's ``init_scale``: std = sqrt(0.1 / fan_in)."""

_CUT = 2.0
"""Truncation point, in standard deviations of the underlying normal."""


def _truncated_std(cut: float) -> float:
    """Standard deviation of N(0, 1) truncated to [-cut, cut]."""
    pdf = math.exp(-0.5 * cut * cut) / math.sqrt(2 * math.pi)
    mass = math.erf(cut / math.sqrt(2))
    return math.sqrt(1 - 2 * cut * pdf / mass)


TRUNCATED_STD = _truncated_std(_CUT)
"""0.8796: the standard deviation a ±2σ cut leaves of a unit normal."""


@torch.no_grad()
def trunc_normal_fan_in_(weight: Tensor, fan_in: int, scale: float = INIT_SCALE) -> Tensor:
    """Fill ``weight`` in place with a ±2σ-truncated normal of standard deviation
    sqrt(scale / fan_in) (realised, after truncation)."""
    std = math.sqrt(scale / fan_in) / TRUNCATED_STD  # of the normal before the cut
    return torch.nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-_CUT * std, b=_CUT * std)


@dataclass
class InitConfig:
    """Initialisation scale of each part of the model (``model.net.init``).

    A weight with fan-in n starts with standard deviation sqrt(scale / n). The defaults are the
    paper's 0.1 everywhere; 1.0 is LeCun's sqrt(1 / fan_in). The token and position embeddings
    are N(0, 0.02) whatever these say (the fan-in rule has no meaning for lookups)."""

    router: float = INIT_SCALE
    """The router (D, E) of every routed layer (MoT, token and expert choice). Small logits
    start MoT's merge weights near uniform, 1/G: every expert then sees the group's average
    token. 0 = all logits zero at the start (uniform routing)."""
    experts: float = INIT_SCALE
    """The experts' ``w1`` and ``w2`` in the routed layers."""
    dense: float = INIT_SCALE
    """The dense feed-forward layers: every block of a dense model, the unrouted blocks of the
    others."""
    attention: float = INIT_SCALE
    """The attention projections (``qkv`` and ``proj``) of every block."""
    head: float = INIT_SCALE
    """The output layer (D → V)."""

    def __post_init__(self) -> None:
        for name in ("router", "experts", "dense", "attention", "head"):
            value = getattr(self, name)
            low_ok = value >= 0 if name == "router" else value > 0
            if not (isinstance(value, (int, float)) and low_ok and math.isfinite(value)):
                bound = ">= 0" if name == "router" else "> 0"
                raise ValueError(
                    f"model.net.init.{name} must be a finite number {bound} (the paper's: "
                    f"{INIT_SCALE}), got {value!r}"
                )


@torch.no_grad()
def rescale_(weight: Tensor, scale: float, drawn_with: float = INIT_SCALE) -> Tensor:
    """Turn ``weight``, drawn by :func:`trunc_normal_fan_in_` with ``drawn_with``, into the
    draw for ``scale`` (in place); nothing is touched when the two are equal."""
    if scale != drawn_with:
        weight.mul_(math.sqrt(scale / drawn_with))
    return weight
