"""Filler rows: run a MoT model on fewer sequences than its group size.

MoT mixes the G sequences of a group at every position, so it cannot run on one sequence alone.
As in the paper's evaluation, the real rows are placed in a batch whose other rows are filler
(random training windows, or anything else); causality across the batch axis holds row by row,
so the real rows' outputs depend on the filler only through the mixing — exactly the setting
MoT was trained in. Dense and token-choice models need no filler (group size 1).

Shapes (legend in :mod:`motlab.shapes`): B, T, W.
"""

from __future__ import annotations

import torch
from torch import Tensor


def filler_rows(
    n_rows: int,
    length: int,
    filler_WT: Tensor | None = None,
    generator: torch.Generator | None = None,
    vocab_size: int | None = None,
) -> Tensor:
    """``n_rows`` filler rows of ``length`` tokens, (n_rows, length).

    Taken in order (cycled, cut to ``length``) from ``filler_WT``, on its device; without it,
    uniform random tokens below ``vocab_size``, on the CPU.
    """
    if filler_WT is not None:
        if filler_WT.shape[1] < length:
            raise ValueError(
                f"filler rows have {filler_WT.shape[1]} tokens, need at least {length}"
            )
        idx = torch.arange(n_rows) % filler_WT.shape[0]
        return filler_WT[idx, :length]
    if vocab_size is None:
        raise ValueError("filler rows need filler_WT or a vocab_size for random ones")
    return torch.randint(vocab_size, (n_rows, length), generator=generator)
