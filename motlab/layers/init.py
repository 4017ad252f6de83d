"""The paper's initialisation: truncated normal whose standard deviation is sqrt(scale / fan_in).

Shared by every layer so that a MoT expert and a dense FFN of the same shape start from the same
distribution (the dense-equivalence tests rely on copying weights, not on init, but comparisons
between variants at equal steps rely on this).

Cutting a normal at ±2σ leaves a distribution whose standard deviation is only 0.88 σ, so a
plain ``trunc_normal_(std=σ, a=-2σ, b=2σ)`` initialises 12 % smaller than the paper's formula
says. Here the underlying normal is widened by 1 / 0.88 so that the *realised* standard
deviation is the nominal sqrt(scale / fan_in), as in the authors' code; the cut stays at two
standard deviations of that underlying normal.
"""

from __future__ import annotations

import math

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
