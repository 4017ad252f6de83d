"""``StatefulDataLoader`` whose state is exact at the batch the *model* last consumed.

Two gaps between ``torchdata``'s loader state and what a Lightning checkpoint needs:

1. Lightning's fit loop prefetches one batch ahead when the loader has no length (always, for
   a stream): when ``ModelCheckpoint`` saves after step ``N``, the loader has already yielded
   batch ``N + 1`` and its state says so, so a resumed run would skip a batch. This loader keeps
   the states after each of its last few batches and returns the one that matches the consumer;
   the number of yielded-but-unconsumed batches comes from ``unconsumed`` (the data module wires
   it to the trainer's fetcher).
2. Under DDP only rank 0 writes the checkpoint, so each rank's loader state would be lost. The
   state is gathered from all ranks (``all_gather_object``; ``state_dict`` is called on every
   rank when Lightning dumps a checkpoint) and each rank picks its own entry back on load.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from torchdata.stateful_dataloader import StatefulDataLoader

LOADER_FORMAT = "motlab.data.loader/1"
HISTORY = 8  # batches of look-back; Lightning prefetches 1


class ResumableLoader(StatefulDataLoader):
    """Loader for :class:`~motlab.data.stream.PackedStream` (which yields whole batches)."""

    restore_enabled: bool = True
    """False ignores saved states (the data module's ``restore_state``)."""

    def __init__(
        self,
        dataset: Any,
        *,
        rank: int = 0,
        world_size: int = 1,
        unconsumed: Callable[[], int] | None = None,
        **kwargs: Any,
    ) -> None:
        # snapshot_every_n_steps=1: worker states travel with every batch, so the state is exact
        # at every step (the stream's state is small enough for that).
        super().__init__(dataset, batch_size=None, snapshot_every_n_steps=1, **kwargs)
        self.rank = rank
        self.world_size = world_size
        self.unconsumed = unconsumed
        self._history: deque[dict[str, Any]] = deque(maxlen=HISTORY + 1)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        iterator = super().__iter__()
        self._history.clear()
        self._history.append(StatefulDataLoader.state_dict(self))
        return self._track(iterator)

    def _track(self, iterator: Iterator[Any]) -> Iterator[Any]:
        for batch in iterator:
            self._history.append(StatefulDataLoader.state_dict(self))
            yield batch

    def local_state_dict(self) -> dict[str, Any]:
        """This rank's state as of the last batch the consumer has taken."""
        lag = self.unconsumed() if self.unconsumed is not None else 0
        if self._iterator is None and self.next_iter_state is not None:
            return self.next_iter_state  # restored, not yet iterated: no need to start workers
        if self._iterator is None or not self._history:
            return super().state_dict()
        if lag >= len(self._history):
            raise RuntimeError(
                f"{lag} batches fetched but not consumed; only {len(self._history) - 1} "
                "are tracked (lower the trainer's prefetching)"
            )
        return self._history[-1 - lag]

    def state_dict(self) -> dict[str, Any]:
        """States of all ranks (gathered under DDP), each as of the last consumed batch."""
        local = self.local_state_dict()
        states = [local]
        if self.world_size > 1:
            import torch.distributed as dist

            if not (dist.is_available() and dist.is_initialized()):
                raise RuntimeError(
                    "saving the data state of a multi-rank run needs torch.distributed"
                )
            states = [None] * self.world_size
            dist.all_gather_object(states, local)
        return {
            "format": LOADER_FORMAT,
            "world_size": self.world_size,
            "num_workers": self.num_workers,
            "ranks": states,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume this rank from its entry of a :meth:`state_dict`."""
        self._history.clear()
        if not state_dict or not self.restore_enabled:
            return
        if state_dict.get("format") != LOADER_FORMAT:
            raise ValueError(f"not a {LOADER_FORMAT} state: keys {sorted(state_dict)}")
        saved = (state_dict["world_size"], state_dict["num_workers"])
        if saved != (self.world_size, self.num_workers):
            raise ValueError(
                f"the checkpoint's data position was saved with world_size={saved[0]}, "
                f"num_workers={saved[1]}; this run has world_size={self.world_size}, "
                f"num_workers={self.num_workers}. Resume with the same values, or set "
                "`--data.restore_state false` to restart the data stream (it will repeat data)."
            )
        super().load_state_dict(state_dict["ranks"][self.rank])


def find_stream_states(state: Any) -> Iterator[dict[str, Any]]:
    """Every :class:`PackedStream` state nested anywhere in a loader state (for counters)."""
    if isinstance(state, dict):
        if str(state.get("format", "")).startswith("motlab.data.stream/"):
            yield state
            return
        for value in state.values():
            yield from find_stream_states(value)
    elif isinstance(state, list | tuple):
        for value in state:
            yield from find_stream_states(value)
