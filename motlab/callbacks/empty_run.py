"""Leaving no trace of a run that failed before its first step: the log directory it made.

Lightning creates each logger's version directory, with its event file, before any setup hook
runs, so a run that fails on its input — a data path, ``model.init_from``, a validation set too
short, a resume refused — left an empty ``version_N`` behind: the next run then logged into
``version_N+1``, and whatever reads the experiment found a run with nothing in it.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl

from motlab.rundir import CHECKPOINT_DIR, HPARAMS, RUN_CONFIG

EVENTS_PREFIX = "events.out.tfevents."
"""TensorBoard's event files."""


class RemoveEmptyRun(pl.Callback):
    """Remove the log directories a run created when it fails before training a step.

    Args:
        created: The directories the run's loggers would create, each with the outermost of its
            parents that did not exist either (``(runs/mot/version_0, runs)`` for a first run
            in an empty directory): found before the trainer starts
            (:func:`new_log_directories`). Only a directory holding nothing but what a run
            writes before its first step (event files, ``config.yaml``, ``hparams.yaml``, an
            empty ``checkpoints/``) is removed, then its parents up to that outermost one while
            they are empty.
    """

    def __init__(self, created: Sequence[tuple[Path, Path]]) -> None:
        self.created = [(Path(d), Path(top)) for d, top in created]

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if trainer.global_step > 0 or not trainer.is_global_zero:
            return
        for logger in trainer.loggers:  # close the event files before their directory goes
            logger.finalize("failed")
        for directory, top in self.created:
            if directory.is_dir() and _holds_nothing_trained(directory):
                shutil.rmtree(directory)
                parent = directory.parent
                while parent != top.parent and parent.is_dir() and not any(parent.iterdir()):
                    parent.rmdir()
                    parent = parent.parent


def new_log_directories(trainer: pl.Trainer) -> list[tuple[Path, Path]]:
    """The log directories ``trainer``'s loggers will create, with the outermost parent of each
    that does not exist yet (see :class:`RemoveEmptyRun`)."""
    created = []
    for logger in trainer.loggers:
        log_dir = getattr(logger, "log_dir", None)
        if not log_dir or Path(log_dir).exists():
            continue
        top = Path(log_dir)
        while not top.parent.exists():
            top = top.parent
        created.append((Path(log_dir), top))
    return created


def _holds_nothing_trained(directory: Path) -> bool:
    for path in directory.rglob("*"):
        if path.is_dir():
            if path.name != CHECKPOINT_DIR or any(path.iterdir()):
                return False
        elif not (path.name.startswith(EVENTS_PREFIX) or path.name in (RUN_CONFIG, HPARAMS)):
            return False
    return True
