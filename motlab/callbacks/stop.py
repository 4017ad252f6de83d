"""Stopping a run on Ctrl-C or SIGTERM at the end of the optimiser step in progress.

Lightning's own handling would save mid-step (Ctrl-C raises wherever the program is, so the
weights, optimiser, schedule and data position of the checkpoint disagree) or not at all
(SIGTERM). :class:`StopOnSignal` asks the run to stop at a step boundary instead
(``trainer.should_stop``: Lightning then ends the run as if it had finished), and
:class:`~motlab.callbacks.RunCheckpoint` saves that step to ``last.ckpt``, as it saves every
step after which a run ends. What happened is :attr:`StopOnSignal.result`: the signal, the step,
the checkpoint, the command that resumes it and the exit status ``motlab fit`` ends with.
"""

from __future__ import annotations

import shlex
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info

from motlab.clock import StepClock

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""Ctrl-C, and what SLURM (and most schedulers) send before they kill or requeue a job."""


@dataclass(frozen=True)
class StopResult:
    """How a run that a signal stopped ended."""

    signal: signal.Signals
    """Ctrl-C (``SIGINT``) or ``SIGTERM``."""
    step: int
    """Optimiser steps trained when it stopped."""
    checkpoint: str | None
    """The ``last.ckpt`` that holds that step; None when no checkpoint callback saves one."""
    resume_command: str | None
    """The command that resumes the run from ``checkpoint`` (None: nothing to resume from)."""

    @property
    def exit_status(self) -> int:
        """The shell's code for "ended by this signal": 128 + its number (130 for Ctrl-C, 143
        for SIGTERM), what ``motlab fit`` exits with."""
        return 128 + int(self.signal)

    def message(self) -> str:
        """What a stopped run prints: where its state is and how to resume it."""
        if self.checkpoint is None:
            return f"{self.signal.name}: stopped after step {self.step}; nothing saved"
        return (
            f"{self.signal.name}: stopped after step {self.step}, saved {self.checkpoint}\n"
            f"resume with: {self.resume_command}"
        )


class StopOnSignal(pl.Callback):
    """Stop ``fit`` at the end of the optimiser step in progress on the first Ctrl-C or SIGTERM.

    A second Ctrl-C aborts at once, saving nothing. Under DDP the ranks agree on the step to stop
    at with one boolean reduction per optimiser step. The handlers are installed when training
    starts (in the main thread only) and the previous ones restored when it ends.

    Args:
        command: The command line of this run without ``--ckpt_path`` (``["motlab", "fit",
            ...]``), for the resume command; None: the resume is described as
            ``trainer.fit(..., ckpt_path=...)``.
    """

    def __init__(self, command: Sequence[str] | None = None) -> None:
        super().__init__()
        self.command = list(command) if command is not None else None
        self.result: StopResult | None = None
        """How the run ended when a signal stopped it; None otherwise."""
        self._requested: signal.Signals | None = None
        self._stopped_by: signal.Signals | None = None
        self._previous_handlers: dict[int, Any] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.result = self._requested = self._stopped_by = None
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous_handlers[signum] = signal.signal(signum, self._request_stop)

    def _request_stop(self, signum: int, frame: FrameType | None) -> None:
        if self._requested is not None and signum == signal.SIGINT:
            self._restore_handlers()
            raise KeyboardInterrupt
        self._requested = signal.Signals(signum)
        rank_zero_info(
            f"\n{self._requested.name}: stopping at the end of this optimiser step and "
            "saving it to last.ckpt (Ctrl-C again to abort without saving)"
        )

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if not StepClock(trainer).step_finished(batch_idx):
            return  # mid-step: its gradients are not applied yet
        requested = self._requested is not None
        if trainer.world_size > 1:  # every rank stops after the same step
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
        if requested:
            self._stopped_by = self._requested or signal.SIGTERM
            trainer.should_stop = True  # RunCheckpoint saves this step (checkpoints run last)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._restore_handlers()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_handlers()
        if self._stopped_by is None:
            return
        saver = trainer.checkpoint_callback
        path = getattr(saver, "last_model_path", "") or None
        how = None
        if path is not None:
            if self.command is not None:
                how = shlex.join([*self.command, "--ckpt_path", path])
            else:
                how = f"trainer.fit(..., ckpt_path={path!r})"
        self.result = StopResult(self._stopped_by, trainer.global_step, path, how)
        rank_zero_info(self.result.message())
