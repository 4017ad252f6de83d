"""``StatefulDataLoader`` whose state is exact at the batch the *model* last consumed.

Two gaps between ``torchdata``'s loader state and what a Lightning checkpoint needs:

1. Lightning's fit loop prefetches one batch ahead when the loader has no length (always, for
   a stream): when ``ModelCheckpoint`` saves after step ``N``, the loader has already yielded
   batch ``N + 1`` and its state says so, so a resumed run would skip a batch. This loader keeps
   the states after each of its last few batches and returns the one after the last batch the
   consumer took: the consumer reports each batch it takes with :meth:`mark_consumed` (the data
   module does, from Lightning's public ``on_after_batch_transfer`` hook, which the fit loop
   calls once per batch it trains on, after its prefetch), so no Lightning internals are read.
2. Under DDP only rank 0 writes the checkpoint, so each rank's loader state would be lost. The
   state is gathered from all ranks (``all_gather_object``; ``state_dict`` is called on every
   rank when Lightning dumps a checkpoint) and each rank picks its own entry back on load.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
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
        track_consumer: bool = False,
        **kwargs: Any,
    ) -> None:
        # snapshot_every_n_steps=1: worker states travel with every batch, so the state is exact
        # at every step (the stream's state is small enough for that).
        super().__init__(dataset, batch_size=None, snapshot_every_n_steps=1, **kwargs)
        self.rank = rank
        self.world_size = world_size
        self.track_consumer = track_consumer
        """Whether the consumer reports the batches it takes (:meth:`mark_consumed`); without
        it the state is the one after the last batch yielded."""
        self._history: deque[dict[str, Any]] = deque(maxlen=HISTORY + 1)
        self._restored: dict[str, Any] | None = None
        self._yielded = self._consumed = 0

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        iterator = super().__iter__()
        self._restored = None
        self._yielded = self._consumed = 0
        self._history.clear()
        self._history.append(StatefulDataLoader.state_dict(self))
        return self._track(iterator)

    def _track(self, iterator: Iterator[Any]) -> Iterator[Any]:
        for batch in iterator:
            self._history.append(StatefulDataLoader.state_dict(self))
            self._yielded += 1
            yield batch

    def mark_consumed(self) -> None:
        """The consumer has taken one more of the yielded batches."""
        self._consumed += 1

    def latest_state(self) -> dict[str, Any] | None:
        """This rank's state after the last batch yielded (or as restored), without starting
        an iteration; None before either."""
        return self._history[-1] if self._history else self._restored

    def local_state_dict(self) -> dict[str, Any]:
        """This rank's state as of the last batch the consumer has taken."""
        if not self._history:
            # Restored and not iterated yet: the restored state, without starting workers.
            return self._restored if self._restored is not None else super().state_dict()
        lag = self._yielded - self._consumed if self.track_consumer else 0
        if not 0 <= lag < len(self._history):
            raise RuntimeError(
                f"the consumer took {self._consumed} of {self._yielded} batches yielded; only "
                f"the last {len(self._history) - 1} are tracked"
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
        self._restored = None
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
        self._restored = state_dict["ranks"][self.rank]
        super().load_state_dict(self._restored)


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
