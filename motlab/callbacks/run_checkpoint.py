"""The checkpoints of a run: every N steps, the final state, and an interrupted run's state."""

from __future__ import annotations

import shlex
import signal
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info

from motlab.hub import HubUnreachableError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""Ctrl-C, and what SLURM (and most schedulers) send before they kill or requeue a job."""


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` always holds the latest state of a run that ended,
    whether it finished or was stopped.

    **Finished runs.** Lightning writes ``last.ckpt`` only at the ``every_n_train_steps``
    boundaries (and at the end only if it never wrote one), so a run whose ``max_steps`` is not a
    multiple of the interval would end with a stale ``last.ckpt``. Here the final step writes it
    when no checkpoint was saved there, at the end of that step, as Lightning's own step
    checkpoints are (a checkpoint from the end of training would make a run resumed from it, to
    a later ``max_steps``, log every step one step late). Public API only: every save passes
    through the ``on_save_checkpoint`` hook, which records its step, and motlab's own saves are
    written with ``Trainer.save_checkpoint``.

    **Stopped runs.** The first Ctrl-C (SIGINT) or SIGTERM during ``fit`` asks the run to stop
    at the end of the optimiser step in progress (``trainer.should_stop``: Lightning then ends
    the run as if it had finished), so ``last.ckpt`` holds that step with weights, optimiser,
    schedule and data position in agreement and resuming from it is exact; the command that
    resumes it is printed. A second Ctrl-C aborts at once, saving nothing. Lightning's own
    handling would save mid-step (Ctrl-C raises wherever the program is) or not at all
    (SIGTERM). Under DDP the ranks agree on the step to stop at with one boolean reduction per
    optimiser step.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._saved_at_step: int | None = None
        self.stopped_by: signal.Signals | None = None
        """The signal that stopped the run, if one did."""
        self.resume_argv: Sequence[str] | None = None
        """The command line of this run (without ``--ckpt_path``), set by the CLI so that the
        exact resume command can be printed."""
        self._previous_handlers: dict[int, Any] = {}
        self._stop_requested: signal.Signals | None = None

    # -- what was saved ----------------------------------------------------------------------

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._saved_at_step = trainer.global_step

    # -- stopping on a signal ----------------------------------------------------------------

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self.stopped_by = self._stop_requested = None
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous_handlers[signum] = signal.signal(signum, self._request_stop)

    def _request_stop(self, signum: int, frame: FrameType | None) -> None:
        if self._stop_requested is not None and signum == signal.SIGINT:
            self._restore_handlers()
            raise KeyboardInterrupt
        self._stop_requested = signal.Signals(signum)
        rank_zero_info(
            f"\n{self._stop_requested.name}: stopping at the end of this optimiser step and "
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
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if (batch_idx + 1) % trainer.accumulate_grad_batches:
            return  # mid-step: its gradients are not applied yet
        requested = self._stop_requested is not None
        if trainer.world_size > 1:  # every rank stops after the same step
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
        if requested:
            self.stopped_by = self._stop_requested or signal.SIGTERM
            trainer.should_stop = True
        final = 0 < trainer.max_steps <= trainer.global_step
        if requested or final:
            # Saved here, where Lightning's own step checkpoints are saved: a checkpoint written
            # later (at the end of training) makes a resumed run log every step one step late.
            self._save_last(trainer)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._restore_handlers()
        if isinstance(exception, HubUnreachableError) and trainer.world_size == 1:
            # The data stream gave up on the hub (past --data.hub_retries) while fetching the
            # next batch: the model, optimiser and data position are those after the last
            # finished step, so last.ckpt saved now resumes exactly once the hub is back. (With
            # several ranks the others are inside a step and a save would wait on them.)
            self._save_last(trainer)
            if self.last_model_path:
                rank_zero_info(
                    f"saved step {trainer.global_step} to {self.last_model_path}; once the hub "
                    "answers again, resume with --ckpt_path last"
                )
        super().on_exception(trainer, pl_module, exception)

    # -- the final state ---------------------------------------------------------------------

    def _save_last(self, trainer: pl.Trainer) -> None:
        """Write ``last.ckpt`` now, unless this step is saved already."""
        if not self.save_last or self.dirpath is None or trainer.sanity_checking:
            return
        if self._saved_at_step != trainer.global_step:
            self.last_model_path = self.format_checkpoint_name({}, self.CHECKPOINT_NAME_LAST)
            trainer.save_checkpoint(self.last_model_path, weights_only=self.save_weights_only)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_handlers()
        self._save_last(trainer)  # training that ended otherwise (max_epochs, max_time)
        if self.stopped_by is not None:
            rank_zero_info(self.stop_message(trainer.global_step))

    def stop_message(self, step: int) -> str:
        """What a stopped run prints: where its state is and how to resume it."""
        path = self.last_model_path
        if self.resume_argv is not None:
            how = shlex.join([*self.resume_argv, "--ckpt_path", path])
        else:
            how = f"trainer.fit(..., ckpt_path={path!r})"
        name = self.stopped_by.name if self.stopped_by is not None else "stop"
        return f"{name}: stopped after step {step}, saved {path}\nresume with: {how}"
