"""Where the fit loop is, in optimiser steps: one answer for ``LitLM`` and every callback.

Lightning counts finished optimiser steps in ``trainer.global_step``; it goes up after the last
micro-batch of a step (``trainer.accumulate_grad_batches`` of them) has been trained and the
optimiser has stepped. So the step *in progress* — what ``training_step`` and
``on_before_optimizer_step`` see — is ``global_step + 1``, and in ``on_train_batch_end`` a
finished step is ``global_step`` itself. Steps are numbered from 1 here, as Lightning's logging
interval counts them: step ``n`` is a logging step when ``n % log_every_n_steps == 0``, and its
metrics are written at TensorBoard index ``n - 1``.
"""

from __future__ import annotations

import lightning.pytorch as pl


class StepClock:
    """Questions about the optimiser step of a running ``trainer``.

    A view of the trainer, cheap to make (``StepClock(trainer)``), holding no state of its own:
    every answer is read from the trainer when asked.
    """

    def __init__(self, trainer: pl.Trainer) -> None:
        self.trainer = trainer

    def is_log_step(self, step: int) -> bool:
        """Whether Lightning writes the metrics logged at optimiser step ``step`` (1-based)."""
        n = self.trainer.log_every_n_steps
        return n > 0 and step % n == 0

    def logging_now(self) -> bool:
        """During a step's micro-batches (``training_step``, ``on_before_optimizer_step``):
        whether what is logged now will be written, i.e. the step in progress is a logging
        step."""
        return self.is_log_step(self.trainer.global_step + 1)

    def step_finished(self, batch_idx: int) -> bool:
        """In ``on_train_batch_end`` of micro-batch ``batch_idx``: whether an optimiser step has
        just finished, i.e. this was the last micro-batch of its step (the last of its
        accumulation, or the last batch of a finite epoch)."""
        trainer = self.trainer
        last_of_epoch = batch_idx + 1 >= trainer.num_training_batches
        return (batch_idx + 1) % trainer.accumulate_grad_batches == 0 or last_of_epoch

    def logged_step_finished(self, batch_idx: int) -> bool:
        """In ``on_train_batch_end``: a logging step has just finished (its metrics are logged)."""
        return self.step_finished(batch_idx) and self.is_log_step(self.trainer.global_step)

    def is_final(self) -> bool:
        """Whether the steps done reach ``trainer.max_steps`` (the run ends after this step)."""
        return 0 < self.trainer.max_steps <= self.trainer.global_step
