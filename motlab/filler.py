"""Filler rows: run a MoT model on fewer sequences than its group size.

MoT mixes the G sequences of a group at every position, so it cannot run on one sequence alone.
As in the paper's evaluation, the real rows are placed in a batch whose other rows are filler
(random training windows, or anything else); causality across the batch axis holds row by row,
so the real rows' outputs depend on the filler only through the mixing — exactly the setting
MoT was trained in. Dense and token-choice models need no filler (group size 1).
"""

from __future__ import annotations

import torch
from torch import Tensor


def pad_with_filler(
    tokens_RT: Tensor,
    group_size: int,
    filler_FT: Tensor | None = None,
    generator: torch.Generator | None = None,
    vocab_size: int | None = None,
) -> tuple[Tensor, int]:
    """Return a batch (B, T) whose first R rows are ``tokens_RT``, B the next multiple of G.

    ``filler_FT`` supplies the extra rows (cycled, cut to length T, taken in order); without it,
    uniform random tokens below ``vocab_size`` are used. Returns the batch and R.
    """
    R, T = tokens_RT.shape
    B = -(-R // group_size) * group_size
    if B == R:
        return tokens_RT, R
    n_fill = B - R
    if filler_FT is not None:
        if filler_FT.shape[1] < T:
            raise ValueError(f"filler rows have {filler_FT.shape[1]} tokens, need at least {T}")
        idx = torch.arange(n_fill) % filler_FT.shape[0]
        fill_NT = filler_FT[idx, :T].to(tokens_RT.device)
    else:
        if vocab_size is None:
            raise ValueError("pad_with_filler needs filler rows or a vocab_size for random ones")
        fill_NT = torch.randint(vocab_size, (n_fill, T), generator=generator).to(tokens_RT.device)
    return torch.cat([tokens_RT, fill_NT.to(tokens_RT.dtype)]), R
