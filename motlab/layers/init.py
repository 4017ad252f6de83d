"""The paper's initialisation: truncated normal with std = sqrt(scale / fan_in).

Shared by every layer so that a MoT expert and a dense FFN of the same shape start from the same
distribution (the dense-equivalence tests rely on copying weights, not on init, but comparisons
between variants at equal steps rely on this).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

INIT_SCALE = 0.1
"""The paper's ``init_scale``: std = sqrt(0.1 / fan_in)."""


@torch.no_grad()
def trunc_normal_fan_in_(weight: Tensor, fan_in: int, scale: float = INIT_SCALE) -> Tensor:
    """Fill ``weight`` in place from N(0, scale / fan_in) truncated at two standard deviations."""
    std = math.sqrt(scale / fan_in)
    return torch.nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-2 * std, b=2 * std)
