"""Choosing the next token: greedy, temperature, top-k, top-p, seeded draws."""

from __future__ import annotations

import math

import pytest
import torch

from motlab.sampling import Sampling, filter_logits, sample


def logits_of(*probs: float) -> torch.Tensor:
    return torch.tensor([[math.log(p) for p in probs]])


def test_top_k_keeps_the_k_likeliest() -> None:
    kept = filter_logits(logits_of(0.1, 0.4, 0.2, 0.3), top_k=2, top_p=None)
    assert torch.isfinite(kept).tolist() == [[False, True, False, True]]


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    probs = (0.05, 0.5, 0.15, 0.3)  # sorted: 0.5, 0.3, 0.15, 0.05
    assert torch.isfinite(filter_logits(logits_of(*probs), None, 0.8)).tolist() == [
        [False, True, False, True]  # 0.5 + 0.3 reaches 0.8
    ]
    assert torch.isfinite(filter_logits(logits_of(*probs), None, 0.81)).tolist() == [
        [False, True, True, True]
    ]
    # The likeliest token always stays.
    assert torch.isfinite(filter_logits(logits_of(*probs), None, 0.01)).tolist() == [
        [False, True, False, False]
    ]


def test_samples_follow_the_filtered_distribution_and_the_seed() -> None:
    logits = logits_of(0.05, 0.5, 0.15, 0.3).expand(4000, 4)
    sampling = Sampling(temperature=1.0, top_p=0.8)
    draws = sample(logits, sampling, torch.Generator().manual_seed(0))
    counts = torch.bincount(draws, minlength=4) / 4000
    assert counts[0] == 0 and counts[2] == 0
    assert abs(counts[1] - 0.5 / 0.8) < 0.03 and abs(counts[3] - 0.3 / 0.8) < 0.03
    again = sample(logits, sampling, torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)
    assert not torch.equal(draws, sample(logits, sampling, torch.Generator().manual_seed(1)))


def test_greedy_temperature_zero_and_top_k_one_agree() -> None:
    logits = torch.randn(8, 50, generator=torch.Generator().manual_seed(0))
    greedy = sample(logits, Sampling(temperature=0), None)
    assert torch.equal(greedy, logits.argmax(dim=-1))
    top1 = sample(logits, Sampling(temperature=1.0, top_k=1), torch.Generator().manual_seed(3))
    assert torch.equal(top1, greedy)


def test_low_temperature_sharpens() -> None:
    logits = logits_of(0.4, 0.6).expand(2000, 2)
    cold = sample(logits, Sampling(temperature=0.1), torch.Generator().manual_seed(0))
    assert cold.float().mean() > 0.95


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -1.0}, "temperature must be >= 0"),
        ({"top_k": 0}, "top_k must be a number of tokens >= 1"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
    ],
)
def test_bad_settings_are_named(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        Sampling(**kwargs)
