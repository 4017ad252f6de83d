"""The step clock against what Lightning does: which micro-batch ends an optimiser step, which
steps Lightning writes the logged metrics of, and the final step."""

from __future__ import annotations

import csv

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger

from motlab.clock import StepClock

ACCUMULATE, LOG_EVERY, MAX_STEPS = 2, 2, 5


class _Counting(torch.utils.data.IterableDataset):
    def __iter__(self):
        for i in range(10_000):
            yield torch.full((3,), float(i))


class _Module(pl.LightningModule):
    """Logs its micro-batch index every micro-batch, and asks the clock whether that is written."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.logging_now: list[bool] = []

    def training_step(self, batch, batch_idx):
        self.logging_now.append(StepClock(self.trainer).logging_now())
        self.log("micro_batch", float(batch_idx), on_step=True, on_epoch=False)
        return (self.w * batch).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


class _Ask(pl.Callback):
    """What the clock says in on_train_batch_end, and what global_step did there."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, bool, bool, bool]] = []
        self._step_before = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._step_before = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        clock = StepClock(trainer)
        stepped = trainer.global_step != self._step_before  # what Lightning did
        assert clock.step_finished(batch_idx) == stepped, batch_idx
        answer = (clock.step_finished(batch_idx), clock.logged_step_finished(batch_idx))
        self.answers.append((trainer.global_step, *answer, clock.is_final()))


def test_the_clock_answers_what_lightning_does(tmp_path) -> None:
    module, ask = _Module(), _Ask()
    trainer = pl.Trainer(
        accelerator="cpu", max_steps=MAX_STEPS, accumulate_grad_batches=ACCUMULATE,
        log_every_n_steps=LOG_EVERY, logger=CSVLogger(tmp_path, name="clock", version=0),
        callbacks=[ask], enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(_Counting(), batch_size=2))

    # Micro-batches 0..9 make steps 1..5; steps 2 and 4 are logging steps, 5 is the last.
    assert ask.answers == [
        (0, False, False, False), (1, True, False, False),
        (1, False, False, False), (2, True, True, False),
        (2, False, False, False), (3, True, False, False),
        (3, False, False, False), (4, True, True, False),
        (4, False, False, False), (5, True, False, True),
    ]  # fmt: skip
    # What was logged while logging_now() said so is what Lightning wrote: the micro-batches
    # of steps 2 and 4, the last of each written at TensorBoard index step - 1.
    assert module.logging_now == [False, False, True, True] * 2 + [False, False]
    with open(tmp_path / "clock/version_0/metrics.csv") as f:
        written = {int(row["step"]): float(row["micro_batch"]) for row in csv.DictReader(f)}
    assert written == {1: 3.0, 3: 7.0}
