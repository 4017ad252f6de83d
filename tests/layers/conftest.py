"""Shared checks for the layer tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest
import torch


def _assert_same_grads(
    out: torch.Tensor, expected: torch.Tensor, inputs: Iterable[torch.Tensor]
) -> None:
    """Both tensors give the same gradients for one random cotangent (the backward pass too
    must follow the formula, not only the forward)."""
    inputs = list(inputs)
    cotangent = torch.randn_like(out)
    got = torch.autograd.grad(out, inputs, cotangent, retain_graph=True, allow_unused=True)
    want = torch.autograd.grad(expected, inputs, cotangent, allow_unused=True)
    for g, w in zip(got, want, strict=True):
        if w is None:
            assert g is None or not g.any()
        else:
            torch.testing.assert_close(g, w)


@pytest.fixture
def assert_same_grads() -> Callable[..., None]:
    return _assert_same_grads
