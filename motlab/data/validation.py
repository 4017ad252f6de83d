"""The validation set: a fixed prefix of the validation stream, computed once and cached.

Validation must be comparable across runs, so it must not depend on how many loader workers or
ranks there are. The global validation set is therefore the first
``val_batches * batch_size * world_size`` windows of the validation files read in order (no
shuffling, one stream), and rank ``r`` takes windows ``r, r + world_size, ...``: the union over
ranks is the same prefix whatever the world size, and every rank gets the same number of
batches (ranks that disagree on it would hang at the next collective). The windows are
tokenized in the main process on first use (a few seconds at most for the default size) and
kept in memory, so later validation runs cost nothing and start no worker processes.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from motlab.data.stream import PackedStream


class ValidationBatches:
    """Iterable of this rank's validation batches, ``(batch_size, seq_len + 1)`` each.

    Args:
        stream: a single-stream, unshuffled, finite :class:`PackedStream` over the validation
            files whose ``batch_size`` is ``batch_size * world_size``.
        rank, world_size: this rank and the number of ranks.
        batch_size: windows per batch and rank.
        val_batches: batches per rank.
    """

    def __init__(
        self, stream: PackedStream, rank: int, world_size: int, batch_size: int, val_batches: int
    ) -> None:
        self.stream = stream
        self.rank = rank
        self.world_size = world_size
        self.batch_size = batch_size
        self.val_batches = val_batches
        self._batches: list[torch.Tensor] | None = None
        self.malformed_records = 0
        """Malformed records skipped while reading the validation prefix."""

    def _compute(self) -> list[torch.Tensor]:
        wanted = self.val_batches * self.batch_size * self.world_size
        chunks = []
        got = 0
        for chunk_WU in self.stream:
            chunks.append(chunk_WU)
            got += len(chunk_WU)
            if got >= wanted:
                break
        self.malformed_records = self.stream.malformed_records
        self.stream.close()  # the prefix is read: close its file
        if not chunks:
            raise RuntimeError("the validation files yielded no complete window")
        windows_WU = torch.cat(chunks)[:wanted]
        usable = len(windows_WU) // self.world_size * self.world_size
        if usable < wanted:
            rank_zero_warn(
                f"validation data holds {len(windows_WU)} windows, fewer than the "
                f"{wanted} asked for (val_batches x batch_size x world_size); using {usable}"
            )
        mine_WU = windows_WU[self.rank : usable : self.world_size]
        return list(mine_WU.split(self.batch_size))

    def batches(self) -> list[torch.Tensor]:
        if self._batches is None:
            self._batches = self._compute()
        return self._batches

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())
