"""Continuation log-likelihoods of token requests, several requests per forward pass.

A request is ``(context ids, continuation ids, seed)``; its score is the sum of
``log p(continuation | context)`` over the continuation's tokens, and whether greedy decoding
would have produced the continuation. Contexts longer than the model's ``seq_len`` are cut on
the left, as the harness's own backends do; a continuation is always scored whole, and one
longer than ``seq_len`` fails before any forward pass.

Batches: for a model with group size G > 1 (MoT, expert choice) every request takes row 0 of
a group of its own whose rows 1 … G - 1 are the filler rows its seed picks from a
:class:`FillerPool`; Q requests make a batch of Q · G rows. A group's rows only ever see their
own group at their own position and earlier, so a request's score depends on its own tokens and
seed alone, not on which requests share its batch or their order. Dense and token-choice models
(G = 1) score Q rows per pass; token choice runs dropless there (the backend loads the model
with :func:`motlab.load_model`'s default), so its scores do not depend on the other rows
either; with a training capacity (``capacity=training``) they would, a little.

Rows are right-padded, so padding only follows a row's scored positions, which causal attention
keeps it out of. The padded length is the request's own input length rounded up to a multiple of
:data:`LENGTH_BUCKET` (at most ``seq_len``), and only requests of one padded length share a
pass: a request is always computed at the same length, whatever else is in the batch. That
makes the invariance exact in floating point too where the kernels give a row the same bits for
any number of rows (tested on the CPU): attention kernels block the key axis, so without
buckets a position's output would change in its last bits with the padded length.

Shapes (legend in :mod:`motlab.shapes`): B = Q · G rows for Q requests, T, V.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from motlab.eval.filler_pool import FillerPool
from motlab.model import GPT

DEFAULT_BATCH_SIZE = 16
"""Requests per forward pass when none is given (R · G rows for group size G)."""

LENGTH_BUCKET = 16
"""Padded lengths are multiples of this (or ``seq_len``): little padding, few distinct shapes."""


class ContinuationTooLongError(ValueError):
    """A continuation that cannot be scored whole within the model's ``seq_len``."""


@dataclass(frozen=True)
class ScoreRequest:
    context: Sequence[int]
    """Conditioning token ids (at least one; cut on the left to fit ``seq_len``)."""
    continuation: Sequence[int]
    """Token ids whose log-likelihood is computed (at least one, at most ``seq_len``)."""
    seed: int = 0
    """Picks the request's filler rows for group-mixing models (:func:`request_seed`)."""


def fit_window(request: ScoreRequest, seq_len: int) -> list[int]:
    """The model input for ``request``: context + continuation without its last token, cut on
    the left to ``seq_len``. Its last ``len(continuation)`` positions predict the continuation."""
    n = len(request.continuation)
    if n == 0:
        raise ValueError("a request with an empty continuation has nothing to score")
    if not request.context:
        raise ValueError("a request needs at least one context token (e.g. end-of-text)")
    if n > seq_len:
        raise ContinuationTooLongError(
            f"a continuation of {n} tokens cannot be scored whole by a model of "
            f"seq_len={seq_len} (each scored token needs the one before it in the window); "
            "shorten the task's continuations or use a model with a longer seq_len"
        )
    full = [*request.context, *request.continuation][-(seq_len + 1) :]
    return full[:-1]


@contextmanager
def real_rows_only(model: GPT, group_size: int) -> Iterator[None]:
    """Within the block, ``model(tokens_BT)`` returns logits of rows 0, G, 2G, … only.

    The vocabulary projection is the largest matmul of a small model; filler rows need none.
    A forward hook on the final norm (the last module before the head) keeps the real rows.
    """
    if group_size == 1:
        yield
        return
    handle = model.ln_f.register_forward_hook(lambda _m, _i, out: out[::group_size])
    try:
        yield
    finally:
        handle.remove()


def padded_length(n: int, seq_len: int) -> int:
    """The length an input of ``n`` tokens is padded to: a function of ``n`` alone."""
    return min(-(-n // LENGTH_BUCKET) * LENGTH_BUCKET, seq_len)


def _batches(lengths: list[int], batch_size: int) -> Iterator[tuple[int, list[int]]]:
    """``(padded length, request indices)`` of each pass: one padded length per pass, longest
    first, requests in the order given within a length."""
    by_length: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        by_length.setdefault(n, []).append(i)
    for T in sorted(by_length, reverse=True):
        idx = by_length[T]
        for start in range(0, len(idx), batch_size):
            yield T, idx[start : start + batch_size]


@torch.no_grad()
def score_requests(
    model: GPT,
    requests: Sequence[ScoreRequest],
    filler: FillerPool | None = None,
    batch_size: int = 16,
    pad_id: int = 0,
    progress: Callable[[int], None] | None = None,
) -> list[tuple[float, bool]]:
    """``(log-likelihood, is_greedy)`` of each request, in the order given.

    ``batch_size`` requests of one padded length go in one forward pass (Q · G rows for group
    size G). ``progress`` is called with the number of requests done after each pass.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 requests per forward pass, got {batch_size}")
    G = model.cfg.group_size
    if G > 1 and filler is None:
        raise ValueError(
            f"this model mixes groups of {G} sequences: it needs a filler pool to place each "
            "request among G - 1 filler rows"
        )
    model.eval()
    device = next(model.parameters()).device
    seq_len = model.cfg.seq_len
    inputs = [fit_window(r, seq_len) for r in requests]  # every error before compute
    lengths = [padded_length(len(ids), seq_len) for ids in inputs]
    results: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
    for T, chunk in _batches(lengths, batch_size):
        rows = []
        for i in chunk:
            row_T = torch.full((T,), pad_id, dtype=torch.long)
            row_T[: len(inputs[i])] = torch.tensor(inputs[i], dtype=torch.long)
            rows.append(row_T[None])
            if G > 1:
                assert filler is not None
                rows.append(filler.rows(requests[i].seed, G - 1, T))
        tokens_BT = torch.cat(rows).to(device)
        with real_rows_only(model, G):
            logits_QTV = model(tokens_BT)
        lls, greedy = [], []
        for r, i in enumerate(chunk):
            n, end = len(requests[i].continuation), len(inputs[i])
            targets_T = torch.tensor(list(requests[i].continuation), device=device)
            logits_TV = logits_QTV[r, end - n : end].float()
            logprobs_TV = F.log_softmax(logits_TV, dim=-1)
            lls.append(logprobs_TV.gather(-1, targets_T[:, None]).sum())
            greedy.append((logits_TV.argmax(dim=-1) == targets_T).all())
        # One device-to-host copy per pass.
        for i, ll, is_greedy in zip(
            chunk, torch.stack(lls).tolist(), torch.stack(greedy).tolist(), strict=True
        ):
            results[i] = (ll, bool(is_greedy))
        if progress is not None:
            progress(len(chunk))
    return results
