"""Filler rows for scoring MoT models one request at a time (the paper's rebuttal protocol).

MoT mixes the G rows of a group, so a request is never scored alone: it takes the first row of
a group of its own, and the other G - 1 rows are filler. Which filler rows a request gets is
decided by a seed computed from the request's own tokens (:func:`request_seed`), never from
its place in a batch or from the other requests, so its log-likelihood is the same for any
batch size, request order or task mix.

The filler comes from a :class:`FillerPool`: a fixed token stream read once per evaluation —
by default the first ``windows`` training windows of C4 through the training data pipeline
(:class:`motlab.data.C4DataModule`, seeded file order and shuffle buffer), or uniform random
tokens. A filler row is the stream from the start of one of its windows on, so up to
``seq_len`` tokens it is exactly a training window; longer rows (generation) run on into the
following windows, wrapping at the end of the stream.

Shapes (legend in :mod:`motlab.shapes`): W filler rows, T tokens per row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

DEFAULT_WINDOWS = 512
"""Windows in the default pool: enough that the G - 1 = 31 rows of two requests rarely overlap."""

FILLERS = ("c4", "random")
"""Where filler rows come from: C4 training windows, or uniform random tokens."""


def request_seed(kind: str, *token_lists: Sequence[int], salt: int = 0) -> int:
    """A 63-bit seed from a request's content: a SHA-256 of its token ids, ``kind`` and ``salt``.

    ``hashlib`` rather than ``hash()``: Python salts the built-in hash per process.
    """
    digest = hashlib.sha256(f"{kind}:{salt}".encode())
    for ids in token_lists:
        digest.update(b"|")
        digest.update(np.asarray(ids, dtype=np.int64).tobytes())
    return int.from_bytes(digest.digest()[:8], "little") >> 1


@dataclass(frozen=True)
class FillerPool:
    """A token stream of whole windows that filler rows are cut from."""

    stream: Tensor
    """1-D ``LongTensor`` of ``n_windows * window`` tokens."""
    window: int
    """Window length: filler rows start at multiples of it (where training windows start)."""
    source: str
    """What the stream is, for logs and results."""

    def __post_init__(self) -> None:
        if self.stream.dim() != 1 or self.window < 1 or len(self.stream) < self.window:
            raise ValueError(
                f"a filler pool needs at least one window of {self.window} tokens, "
                f"got a stream of shape {tuple(self.stream.shape)}"
            )

    @property
    def n_windows(self) -> int:
        return len(self.stream) // self.window

    def rows(self, seed: int, n: int, length: int) -> Tensor:
        """``n`` filler rows (n, length) starting at ``n`` distinct windows drawn with ``seed``.

        Row ``j`` of length T is a prefix of row ``j`` of any length T' > T: a row's tokens never
        depend on the length asked for, so neither does a causal model's output on them.
        """
        if n > self.n_windows:
            raise ValueError(
                f"the filler pool has {self.n_windows} windows but a group needs {n} filler "
                f"rows; use a pool of at least {n} windows (filler_pool={n} or more)"
            )
        generator = torch.Generator().manual_seed(seed)
        picks_n = torch.randperm(self.n_windows, generator=generator)[:n]
        index_WT = picks_n[:, None] * self.window + torch.arange(length)[None, :]
        return self.stream[index_WT % len(self.stream)]


def random_filler_pool(
    vocab_size: int, window: int, windows: int = DEFAULT_WINDOWS, seed: int = 0
) -> FillerPool:
    """Uniform random tokens below ``vocab_size``: ``windows`` windows of ``window`` tokens."""
    generator = torch.Generator().manual_seed(seed)
    stream = torch.randint(vocab_size, (windows * window,), generator=generator)
    return FillerPool(stream, window, f"random tokens ({windows} x {window}, seed {seed})")


def c4_datamodule(data: str | None, tokenizer: str, window: int, seed: int = 0) -> Any:
    """The training data pipeline filler windows are read from, set up: a missing local copy
    or an unreachable hub fails here, in seconds, before anything is read.

    ``data`` is a local copy in C4's layout (``DIR/en/c4-train.*.json.gz``); None streams C4
    from the hub. One loader stream, file order and a shuffle buffer of 256 documents seeded by
    ``seed``: the same windows on every machine.
    """
    from motlab.data import C4DataModule

    dm = C4DataModule(
        path=data,
        tokenizer=tokenizer,
        seq_len=window,
        batch_size=64,
        num_workers=0,
        shuffle_buffer=256,
        seed=seed,
        val_batches=0,
    )
    dm.setup("fit")
    return dm


def pool_from_datamodule(dm: Any, windows: int = DEFAULT_WINDOWS) -> FillerPool:
    """The first ``windows`` training windows of ``dm``'s (a :func:`c4_datamodule`) stream."""
    window = dm.seq_len
    got: list[Tensor] = []
    n = 0
    for batch_Bt in dm.train_dataloader():
        # Training windows hold window + 1 tokens (inputs and targets); a filler row is inputs.
        got.append(batch_Bt[:, :window])
        n += batch_Bt.shape[0]
        if n >= windows:
            break
    stream = torch.cat(got)[:windows].reshape(-1)
    where = dm.path or f"the Hugging Face hub ({dm.hub_dataset})"
    return FillerPool(stream, window, f"C4 training windows ({windows} x {window}) from {where}")


def c4_filler_pool(
    data: str | None,
    tokenizer: str,
    window: int,
    windows: int = DEFAULT_WINDOWS,
    seed: int = 0,
) -> FillerPool:
    """The first ``windows`` training windows (of ``window`` tokens) of C4's training stream,
    read as in training (tokenized, joined with end-of-text, packed): :func:`c4_datamodule`."""
    return pool_from_datamodule(c4_datamodule(data, tokenizer, window, seed), windows)
