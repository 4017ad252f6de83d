"""Before a run spends compute: is there room for the checkpoints it will keep?"""

from __future__ import annotations

import shutil
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from motlab.atomic import remove_partials
from motlab.checkpoint_io import DurableCheckpointIO, format_bytes
from motlab.rundir import checkpoint_files, experiment_checkpoint_dirs

OPTIMIZER_SLOTS = {
    torch.optim.SGD: 1,  # momentum buffer (none without momentum)
    torch.optim.Adagrad: 1,
    torch.optim.RMSprop: 1,
}
"""Tensors of a parameter's size that an optimiser keeps per parameter, where it is not 2 (Adam,
AdamW and most others: two moments; AMSGrad adds a third)."""


class CheckpointSpace(pl.Callback):
    """At the start of ``fit``, on global rank 0: clear what interrupted saves left in the
    checkpoint directories (:meth:`_clear_partials`), then warn when the disk cannot hold the
    checkpoints this run keeps.

    A run keeps ``save_top_k`` step checkpoints and ``last.ckpt``, and writes each new one beside
    them before the one it replaces is removed (:mod:`motlab.atomic`): at its fullest the
    directory holds ``save_top_k + 2`` checkpoints. A checkpoint's size is estimated from the
    parameters (counted before any sharding) and the optimiser's state per parameter; the space
    available is the disk's free space plus the checkpoints already in the directory, which the
    run replaces. A warning, not an error: space may be freed while the run trains, and a save
    that does meet a full disk ends the run with an error that says so (nothing lost).
    """

    def __init__(self) -> None:
        super().__init__()
        self._parameter_bytes = 0
        self.estimate: int | None = None
        """The estimated size of one checkpoint of this run, in bytes (set at fit start)."""
        self.needed: int | None = None
        """Bytes the checkpoint directory needs at its fullest (set at fit start)."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Here, before the strategy shards the model: every parameter at its full size.
        self._parameter_bytes = sum(p.numel() * p.element_size() for p in pl_module.parameters())

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        saver = trainer.checkpoint_callback
        if not trainer.is_global_zero or not isinstance(saver, ModelCheckpoint):
            return
        if saver.dirpath is None or not _is_local_file_protocol(str(saver.dirpath)):
            return
        if trainer.fast_dev_run:
            return
        directory = Path(saver.dirpath)
        self._clear_partials(trainer, directory)
        self.estimate = self._parameter_bytes * (1 + _optimizer_slots(trainer.optimizers))
        files = kept_checkpoints(saver, trainer.max_steps) + 1
        self.needed = files * self.estimate
        existing = sum(p.stat().st_size for p in checkpoint_files(directory) if p.is_file())
        free = shutil.disk_usage(_existing_parent(directory)).free
        if free + existing < self.needed:
            replaced = f" (and {format_bytes(existing)} in checkpoints it replaces)"
            kinds = f"{files - 1 - bool(saver.save_last)} step checkpoints (checkpoint.save_top_k)"
            kinds += ", last.ckpt" if saver.save_last else ""
            rank_zero_warn(
                f"the checkpoint directory {directory} has {format_bytes(free)} free"
                f"{replaced if existing else ''}, but this run needs about "
                f"{format_bytes(self.needed)}: {files} checkpoints of about "
                f"{format_bytes(self.estimate)} (weights and optimiser state) — {kinds} and "
                "the one being written. A save that finds the disk full ends the run with an "
                "error (earlier checkpoints stay intact); make room, lower "
                "--checkpoint.save_top_k, or set --checkpoint.dirpath to a disk with room"
            )

    @staticmethod
    def _clear_partials(trainer: pl.Trainer, directory: Path) -> None:
        """Remove what interrupted saves left: in this run's checkpoint directory, all of it
        (only this run writes there); in the other versions of its experiment, what killed
        processes of this host left (a run that was killed before its first checkpoint, and
        restarted in a new version, left its partial file there)."""
        io = trainer.strategy.checkpoint_io
        if isinstance(io, DurableCheckpointIO):
            io.clear_partials(directory)  # and it will not clear them again at its first save
        else:
            remove_partials(directory)
        for other in experiment_checkpoint_dirs(directory)[1:]:
            removed = remove_partials(other, abandoned_only=True)
            if removed:
                names = ", ".join(p.name for p in removed)
                rank_zero_info(f"removed what interrupted saves left in {other}: {names}")


def kept_checkpoints(saver: ModelCheckpoint, max_steps: int) -> int:
    """Checkpoints a run keeps at once: ``save_top_k`` step checkpoints (all of them for -1:
    as many as ``max_steps`` makes), and ``last.ckpt``."""
    top_k = saver.save_top_k
    if top_k < 0:
        every = getattr(saver, "_every_n_train_steps", 0) or 0  # Lightning's only name for it
        top_k = max(max_steps // every, 1) if every > 0 and max_steps > 0 else 1
    return top_k + (1 if saver.save_last else 0)


def _optimizer_slots(optimizers: list[torch.optim.Optimizer]) -> int:
    """Tensors of a parameter's size the optimisers keep per parameter (the most of any)."""
    slots = 0
    for optimizer in optimizers:
        n = OPTIMIZER_SLOTS.get(type(optimizer), 2)
        if any(group.get("amsgrad") for group in optimizer.param_groups):
            n += 1
        if isinstance(optimizer, torch.optim.SGD) and not any(
            group.get("momentum") for group in optimizer.param_groups
        ):
            n = 0
        slots = max(slots, n)
    return slots


def _existing_parent(path: Path) -> Path:
    """``path``, or its nearest ancestor that exists (the directory may not be made yet)."""
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path
