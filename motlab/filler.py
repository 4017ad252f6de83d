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


def filler_rows(
    n_rows: int,
    length: int,
    filler_FT: Tensor | None = None,
    generator: torch.Generator | None = None,
    vocab_size: int | None = None,
) -> Tensor:
    """``n_rows`` filler rows of ``length`` tokens, (n_rows, length).

    Taken in order (cycled, cut to ``length``) from ``filler_FT``, on its device; without it,
    uniform random tokens below ``vocab_size``, on the CPU.
    """
    if filler_FT is not None:
        if filler_FT.shape[1] < length:
            raise ValueError(
                f"filler rows have {filler_FT.shape[1]} tokens, need at least {length}"
            )
        idx = torch.arange(n_rows) % filler_FT.shape[0]
        return filler_FT[idx, :length]
    if vocab_size is None:
        raise ValueError("filler rows need filler_FT or a vocab_size for random ones")
    return torch.randint(vocab_size, (n_rows, length), generator=generator)


def pad_with_filler(
    tokens_RT: Tensor,
    group_size: int,
    filler_FT: Tensor | None = None,
    generator: torch.Generator | None = None,
    vocab_size: int | None = None,
) -> tuple[Tensor, int]:
    """Return a batch (B, T) whose first R rows are ``tokens_RT``, B the next multiple of G.

    The extra rows come from :func:`filler_rows`. Returns the batch and R.
    """
    R, T = tokens_RT.shape
    B = -(-R // group_size) * group_size
    if B == R:
        return tokens_RT, R
    fill_NT = filler_rows(B - R, T, filler_FT, generator, vocab_size)
    return torch.cat([tokens_RT, fill_NT.to(tokens_RT.device, tokens_RT.dtype)]), R
