"""Choosing the next token from logits: greedy, temperature, top-k and top-p (nucleus).

Shapes (legend in :mod:`motlab.shapes`): B, V.

Draws come from one ``torch.Generator`` on the CPU, so a seed gives the same samples on any
device (the probabilities are copied to the CPU once per step; decoding reads the tokens there
anyway to check for end-of-text and stop strings).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen."""

    temperature: float = 1.0
    """Divides the logits; 0 = greedy (argmax)."""
    top_k: int | None = None
    """Keep only the k most likely tokens (None = all)."""
    top_p: float | None = None
    """Keep the smallest set of most likely tokens whose probability reaches p (None = all)."""

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k is not None and (isinstance(self.top_k, bool) or self.top_k < 1):
            raise ValueError(f"top_k must be a number of tokens >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def filter_logits(logits_BV: Tensor, top_k: int | None, top_p: float | None) -> Tensor:
    """``logits_BV`` with the tokens outside the top-k and the top-p nucleus set to -inf.

    The nucleus keeps every token whose more likely predecessors hold less than p of the
    probability (so the most likely token always stays, and ties at the edge stay together).
    """
    if top_k is not None and top_k < logits_BV.shape[-1]:
        kth_B1 = logits_BV.topk(top_k, dim=-1).values[:, -1:]
        logits_BV = logits_BV.masked_fill(logits_BV < kth_B1, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_BV, order_BV = logits_BV.sort(dim=-1, descending=True)
        probs_BV = torch.softmax(sorted_BV, dim=-1)
        before_BV = probs_BV.cumsum(dim=-1) - probs_BV  # mass of the more likely tokens
        drop_BV = torch.empty_like(before_BV, dtype=torch.bool)
        drop_BV.scatter_(-1, order_BV, before_BV >= top_p)
        logits_BV = logits_BV.masked_fill(drop_BV, float("-inf"))
    return logits_BV


def sample(logits_BV: Tensor, sampling: Sampling, generator: torch.Generator | None) -> Tensor:
    """One token per row, (B,), on the CPU."""
    if sampling.greedy:
        return logits_BV.argmax(dim=-1).cpu()
    logits_BV = filter_logits(logits_BV.float() / sampling.temperature, sampling.top_k,
                              sampling.top_p)  # fmt: skip
    probs_BV = torch.softmax(logits_BV, dim=-1).cpu()
    return torch.multinomial(probs_BV, 1, generator=generator)[:, 0]
