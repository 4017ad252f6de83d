"""How ``motlab fit`` writes a checkpoint file: whole or not at all, beside its destination.

Lightning's ``TorchCheckpointIO`` saves through fsspec's transaction, which writes the whole file
into the *system* temporary directory and then moves it; when ``TMPDIR`` is a small local disk
every save fails, and when it is another filesystem the move is a copy straight into the
destination, so a full disk or a kill mid-copy leaves a truncated ``.ckpt`` under the real name
(an earlier ``last.ckpt`` included). :class:`DurableCheckpointIO` is Lightning's extension point
for this (a ``CheckpointIO`` plugin) doing it with :func:`motlab.atomic.atomic_write` instead:
a temporary file in the checkpoint's own directory, ``fsync``, ``os.replace``, ``fsync`` of the
directory. A write that fails removes its temporary file, leaves every earlier checkpoint as it
was and ends the run with a :class:`CheckpointWriteError` that says what happened (for a full
disk: the directory, its free space, the checkpoint's size, and the newest intact checkpoint,
checked to load). The temporary files a killed process left are removed before the first save
into a directory.

It serves every strategy that saves one file from global rank 0 through the strategy's
``checkpoint_io`` (single device, DDP, FSDP with ``state_dict_type: full``). Sharded
(distributed) checkpoints are directories written by every rank through
``torch.distributed.checkpoint``, not through this plugin. Paths with a remote protocol
(``s3://``...) keep Lightning's own saving: object stores commit whole objects.
"""

from __future__ import annotations

import errno
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import CheckpointIO, TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info

from motlab.atomic import atomic_write, remove_partials
from motlab.checkpoint import newest_intact_checkpoint, trained_steps

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
"""The errors of a write that ran out of room: no space left, or the user's quota spent."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written. Nothing was changed: the temporary file is removed
    and every earlier checkpoint is as it was. ``errno`` is the operating system's (``ENOSPC``
    for a full disk)."""


class DurableCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that writes each file atomically in its own directory (see the
    module docstring). Loading and removing are Lightning's."""

    def __init__(self) -> None:
        super().__init__()
        self._cleared: set[Path] = set()

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or not _is_local_file_protocol(str(path)):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        self.clear_partials(path.parent)
        try:
            with atomic_write(path) as f:
                torch.save(checkpoint, f)
        except (OSError, RuntimeError) as e:
            # torch.save reports a failed write of a file object as a RuntimeError whose
            # context is the OSError; the OSError is what says what happened.
            cause = _os_error_in(e)
            if cause is None:
                raise
            error = CheckpointWriteError(write_failure_message(path, checkpoint, cause))
            error.errno = cause.errno
            raise error from e

    def clear_partials(self, directory: Path) -> list[Path]:
        """Remove what unfinished saves left in ``directory`` (once per directory: the run's
        own saves are never in progress when it is called)."""
        directory = Path(directory).absolute()
        if directory in self._cleared:
            return []
        self._cleared.add(directory)
        removed = remove_partials(directory)
        if removed:
            names = ", ".join(p.name for p in removed)
            rank_zero_info(f"removed what interrupted saves left in {directory}: {names}")
        return removed


def with_durable_io(plugins: Any, strategy: Any) -> list[Any]:
    """A Trainer's ``plugins`` with a :class:`DurableCheckpointIO` added, unless a
    ``CheckpointIO`` is configured already (in ``plugins``, or on a ``strategy`` instance:
    Lightning refuses both)."""
    if plugins is None:
        plugins = []
    plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
    configured = any(isinstance(p, CheckpointIO) for p in plugins)
    if configured or getattr(strategy, "_checkpoint_io", None) is not None:
        return plugins
    return [*plugins, DurableCheckpointIO()]


def write_failure_message(path: Path, checkpoint: dict[str, Any], error: OSError) -> str:
    """What a failed save says: the file and why; for a full disk the directory, its free
    space and the checkpoint's size; and the newest intact checkpoint beside it (loaded to be
    sure) or that there is none. Paths are absolute: the log may be read far from the run."""
    path = path.absolute()
    directory = path.parent
    if error.errno in DISK_FULL:
        free = shutil.disk_usage(directory).free
        lines = [
            f"{error.strerror or 'no space left'}: could not save the checkpoint {path}",
            f"{directory} has {format_bytes(free)} free; this checkpoint needs about "
            f"{format_bytes(checkpoint_nbytes(checkpoint))}",
        ]
    else:
        lines = [f"could not save the checkpoint {path}: {error.strerror or error}"]
    lines.append("nothing was written: every earlier checkpoint is as it was")
    lines.append(_newest_intact_line(directory, error.errno in DISK_FULL))
    return "\n".join(lines)


def _newest_intact_line(directory: Path, full: bool) -> str:
    """Which checkpoint the run can go on from, and what to do."""
    fix = (
        "make room on that disk, or set --checkpoint.dirpath to one with room"
        if full
        else "fix the cause above"
    )
    try:
        found = newest_intact_checkpoint(directory)
    except ValueError as e:
        return f"and no checkpoint in {directory} is intact: {e}"
    if found is None:
        return f"there is no earlier checkpoint in {directory}: {fix}, then start the run again"
    step = trained_steps(found.path)
    return (
        f"the newest intact checkpoint is {found.path} (step {step}, checked to load): {fix}, "
        "then resume with --ckpt_path last"
    )


def checkpoint_nbytes(obj: Any) -> int:
    """The bytes of tensor data in a checkpoint being saved (each storage once, as
    ``torch.save`` writes it); the file is this plus a few kilobytes."""
    seen: dict[tuple[str, int], int] = {}
    for tensor in _tensors(obj):
        storage = tensor.untyped_storage()
        seen[(str(tensor.device), storage.data_ptr())] = storage.nbytes()
    return sum(seen.values())


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _tensors(value)


def format_bytes(n: int) -> str:
    """``1536`` → ``1.5 KiB``."""
    if n < 1024:
        return f"{n} B"
    exponent = min(int(math.log(n, 1024)), len(_UNITS))
    return f"{n / 1024**exponent:.1f} {_UNITS[exponent - 1]}"


_UNITS = ("KiB", "MiB", "GiB", "TiB")


def _os_error_in(error: BaseException) -> OSError | None:
    """``error`` if it is an ``OSError``, else the first one in its cause/context chain."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
