"""The validation set: a fixed prefix of the validation stream, computed once and cached.

Validation must be comparable across runs, so it must not depend on how many loader workers or
ranks there are. The global validation set is therefore the first
``val_batches * batch_size * world_size`` windows of the validation files read in order (no
shuffling, one stream), and rank ``r`` takes windows ``r, r + world_size, ...``: the union over
ranks is the same prefix whatever the world size, and every rank gets the same number of
batches (ranks that disagree on it would hang at the next collective). The windows are
tokenized in the main process on first use (a few seconds at most for the default size) and
kept in memory, so later validation runs cost nothing and start no worker processes.

A set shorter than that (validation files holding fewer windows) is cut to whole groups: a MoT
or expert-choice model mixes or picks among the rows of a batch in groups of ``group_size``
(G), so every batch it sees must be a multiple of G. The windows used are the first multiple of
``G × world_size`` of those there are, and the last batch of every rank is then whole groups
too; what is left out (fewer than ``G × world_size`` windows) is said in a warning. Filling the
last batch up with filler rows instead would make the loss of the real rows depend on the filler
they were mixed with; cutting keeps every row a validation window.
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
        group_size: every batch is a multiple of this many windows (the model's group size G;
            ``batch_size`` is one already).
    """

    def __init__(
        self,
        stream: PackedStream,
        rank: int,
        world_size: int,
        batch_size: int,
        val_batches: int,
        group_size: int = 1,
    ) -> None:
        if batch_size % group_size:
            raise ValueError(f"batch_size={batch_size} is not a multiple of {group_size=}")
        self.stream = stream
        self.rank = rank
        self.world_size = world_size
        self.batch_size = batch_size
        self.val_batches = val_batches
        self.group_size = group_size
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
        got = len(windows_WU)
        if got < wanted:
            windows_WU = windows_WU[: self._usable(got)]
        mine_WU = windows_WU[self.rank :: self.world_size]
        return list(mine_WU.split(self.batch_size))

    def _usable(self, got: int) -> int:
        """The windows used of ``got`` < the number asked for: whole groups on every rank."""
        G, world = self.group_size, self.world_size
        usable = got // (G * world) * (G * world)
        asked = (
            f"the {self.val_batches * self.batch_size * world} asked for (data.val_batches "
            f"{self.val_batches} x data.batch_size {self.batch_size} x {world} device(s))"
        )
        if usable == 0:
            raise ValueError(
                f"the validation data holds {got} windows of data.seq_len + 1 tokens, fewer than "
                f"{asked} and fewer than one group of {G} windows per device: add validation "
                "data (data.val_files), shorten data.seq_len, or set data.val_batches 0 to train "
                "without validation"
            )
        if usable == got:
            used = f"validating on all {got}, {got // world} per device"
        else:
            whole = f"whole groups of {G} (model.net.ffn.group_size)" if G > 1 else "as many"
            used = (
                f"validating on the first {usable}, {usable // world} per device ({whole} on "
                f"every device); the last {got - usable} are left out"
            )
        rank_zero_warn(
            f"the validation data holds {got} windows, fewer than {asked}: {used}. Lower "
            "data.val_batches or add validation data to validate on what is asked for."
        )
        return usable

    def batches(self) -> list[torch.Tensor]:
        if self._batches is None:
            self._batches = self._compute()
        return self._batches

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())
