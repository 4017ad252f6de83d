"""The paper's initialisation realises the nominal standard deviation sqrt(0.1 / fan_in)."""

from __future__ import annotations

import math

import pytest
import torch

from motlab.layers.init import TRUNCATED_STD, trunc_normal_fan_in_


def test_truncated_std_of_a_unit_normal_cut_at_two() -> None:
    assert TRUNCATED_STD == pytest.approx(0.87963, abs=1e-5)


@pytest.mark.parametrize("fan_in", [64, 512, 2048])
def test_realised_std_is_the_nominal_one(fan_in: int) -> None:
    torch.manual_seed(0)
    w = trunc_normal_fan_in_(torch.empty(1_000_000), fan_in=fan_in)
    nominal = math.sqrt(0.1 / fan_in)
    # 10^6 samples: the sample std is within ~0.1 % of the true one (5 standard errors < 0.4 %).
    assert w.std().item() == pytest.approx(nominal, rel=4e-3)
    assert w.mean().item() == pytest.approx(0.0, abs=5 * nominal / 1000)
    cut = 2 * nominal / TRUNCATED_STD  # two standard deviations of the normal before the cut
    assert w.abs().max().item() <= cut
    assert w.abs().max().item() > 0.99 * cut  # the cut is where it is said to be
