"""Split files among loader streams (one stream = one DataLoader worker of one DDP rank).

Rule, for ``n`` files and ``S = world_size * num_workers`` streams, stream
``s = rank * num_workers + worker_id``:

* files are put in order (a seeded permutation per epoch for training, file order otherwise);
* the first ``(n // S) * S`` files are dealt round-robin, whole: stream ``s`` reads files
  ``s, s + S, ...`` of that order;
* each of the ``n % S`` left-over files is split record-wise: stream ``s`` keeps the records
  whose index ``i`` has ``i % S == s``.

Every record belongs to exactly one stream, no stream is starved when ``S > n`` (every stream
gets a slice of every file), and when ``S`` divides ``n`` (e.g. C4's 1024 train files) nothing
is read twice. The price of the remainder rule is that each left-over file is parsed (not
tokenized) by all ``S`` streams; :func:`split_note` says so in the log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class FileTask:
    """Read file ``file`` keeping records with ``index % stride == offset``."""

    file: int
    stride: int = 1
    offset: int = 0


def file_order(n_files: int, epoch: int, seed: int, shuffle: bool) -> np.ndarray:
    """File order for an epoch; identical in every stream so the assignment is a partition."""
    if not shuffle:
        return np.arange(n_files)
    return np.random.default_rng([seed, epoch, 0x5EED]).permutation(n_files)


def assign_files(
    n_files: int, stream: int, n_streams: int, epoch: int, seed: int, shuffle: bool
) -> list[FileTask]:
    """The files (or file slices) stream ``stream`` of ``n_streams`` reads in ``epoch``."""
    if not 0 <= stream < n_streams:
        raise ValueError(f"stream {stream} out of range for {n_streams} streams")
    order = file_order(n_files, epoch, seed, shuffle)
    whole = (n_files // n_streams) * n_streams
    tasks = [FileTask(int(order[j])) for j in range(stream, whole, n_streams)]
    tasks += [FileTask(int(order[j]), n_streams, stream) for j in range(whole, n_files)]
    return tasks


def split_note(n_files: int, n_streams: int, what: str) -> str | None:
    """A warning text when ``n_files`` does not divide evenly among ``n_streams``, else None."""
    if n_streams <= 1 or n_files % n_streams == 0:
        return None
    whole = n_files // n_streams
    rest = n_files % n_streams
    return (
        f"{n_files} {what} files do not divide among {n_streams} streams (ranks x workers): "
        f"each stream reads {whole} whole file(s), and the remaining {rest} file(s) are split "
        f"record-wise (every stream parses them and keeps 1 record in {n_streams}). No record is "
        "duplicated or dropped; use a number of streams that divides the file count to avoid "
        "the extra parsing."
    )


def world_info(
    trainer: Any | None, rank: int | None = None, world_size: int | None = None
) -> tuple[int, int]:
    """``(global_rank, world_size)``: explicit values, else the trainer, else torch.distributed.

    Falls back to ``(0, 1)`` (a single process).
    """
    if rank is not None or world_size is not None:
        r, w = rank or 0, world_size or 1
    elif trainer is not None:
        r, w = int(trainer.global_rank), int(trainer.world_size)
    else:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            r, w = dist.get_rank(), dist.get_world_size()
        else:
            r, w = 0, 1
    if not 0 <= r < w:
        raise ValueError(f"rank {r} out of range for world size {w}")
    return r, w
