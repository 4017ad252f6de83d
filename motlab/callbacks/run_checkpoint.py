"""The checkpoints of a run: every N steps, and ``last.ckpt`` at the step after which it ends."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from motlab.clock import StepClock
from motlab.hub import HubUnreachableError


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` always holds the latest state of a run that ended,
    whether it finished or was stopped.

    Lightning writes ``last.ckpt`` only at the ``every_n_train_steps`` boundaries (and at the end
    only if it never wrote one), so a run whose ``max_steps`` is not a multiple of the interval
    would end with a stale ``last.ckpt``. Here the step after which the run ends writes it when
    no checkpoint was saved there: the final step (``max_steps``), or a step at whose end
    something asked the run to stop (``trainer.should_stop``, e.g.
    :class:`~motlab.callbacks.StopOnSignal` on Ctrl-C or SIGTERM). It is saved at the end of
    that step, where Lightning's own step checkpoints are (a checkpoint from the end of training
    would make a run resumed from it, to a later ``max_steps``, log every step one step late),
    so weights, optimiser, schedule and data position agree and resuming from it is exact.
    Lightning runs checkpoint callbacks after all others, so a stop asked for at the end of a
    step is seen here at the end of the same step. Public API only: every save passes through
    the ``on_save_checkpoint`` hook, which records its step, and motlab's own saves are written
    with ``Trainer.save_checkpoint``.

    A run that fails — in validation, logging, a callback, fetching its next batch — saves the
    last step it finished to ``last.ckpt`` before the error propagates (:meth:`on_exception`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("save_on_exception"):
            raise ValueError(
                "checkpoint.save_on_exception: motlab's checkpoint callback saves the last "
                "finished step to last.ckpt on any error by itself, and never a step in "
                "progress (Lightning's option saves whatever state the error left, mid-step "
                "too); leave it unset"
            )
        super().__init__(*args, **kwargs)
        self._saved_at_step: int | None = None
        self._step_before_batch: int | None = None
        self._saving_interrupted_validation = False

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._saved_at_step = trainer.global_step
        if self._saving_interrupted_validation:
            _mark_validation_unfinished(checkpoint)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        clock = StepClock(trainer)
        if clock.step_finished(batch_idx) and (trainer.should_stop or clock.is_final()):
            self.save_last_now(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.save_last_now(trainer)  # training that ended otherwise (max_epochs, max_time)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._step_before_batch = None

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._step_before_batch = trainer.global_step

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Save the step the run finished last to ``last.ckpt``, if the error came after it.

        Saved only between two steps: after the optimiser and the learning-rate schedule have
        stepped on the last micro-batch of a step, and before the fit loop has taken the next
        batch (the data module counts a batch taken right before the loop does). Then weights,
        optimiser, schedule and data position agree, and Lightning resumes such a checkpoint
        exactly; a validation the error interrupted runs again, from its start, when the run
        resumes (:func:`_mark_validation_unfinished`). An error inside a step (the
        forward pass, mid-accumulation, or once the next batch is taken) saves nothing: the last
        checkpoint saved stays the one to resume. Not saved either: on a second Ctrl-C (abort at
        once), and when several processes train — saving is collective, and the others may be
        waiting in another collective, so it would hang instead of failing. Lightning's
        ``save_on_exception`` saves whatever state the error left.
        """
        self._save_finished_step(trainer, exception)
        super().on_exception(trainer, pl_module, exception)  # Lightning's save_on_exception

    def _save_finished_step(self, trainer: pl.Trainer, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt) or not self._between_steps(trainer):
            return
        step = trainer.global_step
        if trainer.world_size > 1:
            rank_zero_warn(
                f"step {step} is not saved: {trainer.world_size} processes train, and saving "
                "after an error on one of them could wait forever for the others; resume from "
                "the last checkpoint saved"
            )
            return
        self._saving_interrupted_validation = trainer.validating
        try:
            self.save_last_now(trainer)
        except Exception as error:  # noqa: BLE001 - the run's own error is the one to raise
            rank_zero_warn(f"could not save step {step} to last.ckpt: {error}")
            return
        finally:
            self._saving_interrupted_validation = False
        if self._saved_at_step != step or not self.last_model_path:
            return
        if isinstance(exception, HubUnreachableError):
            # The data stream gave up on the hub (past --data.hub_retries) while fetching the
            # next batch: the state saved is that after the last finished step.
            rank_zero_info(
                f"saved step {step} to {self.last_model_path}; once the hub answers again, "
                "resume with --ckpt_path last"
            )
        else:
            rank_zero_info(
                f"{type(exception).__name__} after step {step}: that step is saved in "
                f"{self.last_model_path}; resume from it with --ckpt_path once the cause is fixed"
            )

    def _between_steps(self, trainer: pl.Trainer) -> bool:
        """Whether the last micro-batch the fit loop took has been trained and ended an
        optimiser step (``global_step`` went up while it was trained), and no other is taken.

        (Lightning counts a batch processed right before it steps the learning-rate schedulers:
        a scheduler that raised itself would be saved unstepped. motlab's schedule cannot raise.)
        """
        if self._step_before_batch is None:
            return False  # no batch trained in this fit (a failing sanity check, a resume)
        taken = trainer.fit_loop.epoch_loop.batch_progress.total
        return taken.ready == taken.processed and trainer.global_step > self._step_before_batch

    def save_last_now(self, trainer: pl.Trainer) -> None:
        """Write ``last.ckpt`` now, unless this step is saved already."""
        if not self.save_last or self.dirpath is None or trainer.sanity_checking:
            return
        if self._saved_at_step != trainer.global_step:
            self.last_model_path = self.format_checkpoint_name({}, self.CHECKPOINT_NAME_LAST)
            trainer.save_checkpoint(self.last_model_path, weights_only=self.save_weights_only)


VAL_PROGRESS = ("fit_loop", "epoch_loop.val_loop.batch_progress")
"""Where a Lightning checkpoint keeps the progress of the fit's validation loop."""


def _mark_validation_unfinished(checkpoint: dict[str, Any]) -> None:
    """Make a checkpoint saved while the fit's validation ran say that the validation stopped
    inside its first batch, which is what makes Lightning run it again, from its start, when the
    fit resumes (its restart reads a batch started and not processed as an interrupted
    validation). Without it, an error after a validation batch's step (in a callback, in
    logging) would leave the resumed run without that validation's point. The counters of
    validations before it are kept; ``tests/test_lightning_contract.py`` checks the layout."""
    loop, key = VAL_PROGRESS
    progress = checkpoint["loops"][loop][key]
    earlier = progress["total"]["completed"] - progress["current"]["completed"]
    progress["total"].update(ready=earlier + 1, started=earlier + 1)
    progress["total"].update(processed=earlier, completed=earlier)
    progress["current"].update(ready=1, started=1, processed=0, completed=0)
