"""The checkpoints of a run: every N steps, and ``last.ckpt`` at the step after which it ends."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint

from motlab.clock import StepClock


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
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._saved_at_step: int | None = None

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._saved_at_step = trainer.global_step

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

    def save_last_now(self, trainer: pl.Trainer) -> None:
        """Write ``last.ckpt`` now, unless this step is saved already."""
        if not self.save_last or self.dirpath is None or trainer.sanity_checking:
            return
        if self._saved_at_step != trainer.global_step:
            self.last_model_path = self.format_checkpoint_name({}, self.CHECKPOINT_NAME_LAST)
            trainer.save_checkpoint(self.last_model_path, weights_only=self.save_weights_only)
