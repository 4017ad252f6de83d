"""The progress bar: loss and tokens/s without host-device syncs, and right after a resume."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar

from motlab.callbacks.summary import si
from motlab.clock import StepClock
from motlab.metrics import TOKENS_PER_SEC, TRAIN_LOSS, VAL_LOSS


class Reading:
    """A rate shown with an SI prefix (``1.02k``), still convertible with ``float()``.

    Not a ``float`` on purpose: tqdm formats numbers with ``.3g`` (``1.02e+03``) and Lightning's
    bar pads numbers and strings with zeros (``2.5k`` became ``2.5k0``); any other object is
    shown as its ``str``.
    """

    def __init__(self, value: float) -> None:
        self.value = value

    def __float__(self) -> float:
        return self.value

    def __str__(self) -> str:
        return si(self.value)


class ProgressBar(TQDMProgressBar):
    """TQDM bar showing ``loss``, ``tok/s`` and ``val_loss`` (no ``v_num``).

    The training values are read from the logged metrics once per logging step (not again for
    each accumulated micro-batch after it), and shown until the next one. Lightning would
    otherwise turn every progress-bar tensor into a Python number after every batch, a
    host-device sync per step that stalls the GPU's queue. They are read when the logging step
    is over — when the next batch starts, or training ends — so that every callback has logged
    its part: at the end of the step itself, a callback after the bar in the trainer's list
    (:class:`~motlab.callbacks.SpeedMonitor`, as ``motlab fit`` orders them) would not have
    logged its tokens/s yet, and the bar showed the previous logging step's.

    The bar counts the run's batches out of ``max_steps`` × accumulation, also after a resume:
    Lightning sizes it by the *remaining* steps while counting from the resumed batch, which
    showed ``Training: 30/?``, and its rate counted the batches of the earlier run as if done in
    the first second. Here the resumed batches are the bar's ``initial``.
    """

    SHOWN = {TRAIN_LOSS: "loss", TOKENS_PER_SEC: "tok/s"}
    """Metrics logged without ``prog_bar`` that the bar shows, and their labels."""
    RENAME = {VAL_LOSS: "val_loss"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._shown: dict[str, Any] = {}
        self._read_at_step = -1
        self._started = False

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self._size(trainer)
        self._started = False

    def _size(self, trainer: pl.Trainer) -> None:
        """The run's batches as the bar's total (an endless stream ends at ``max_steps``)."""
        if trainer.max_steps > 0 and trainer.num_training_batches == float("inf"):
            self.train_progress_bar.total = trainer.max_steps * trainer.accumulate_grad_batches

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        bar = self.train_progress_bar
        if not self._started and bar is not None:
            # The batches before this one were trained before this run started (a resume). A
            # run resumed mid-epoch gets no on_train_epoch_start: size and name the bar here.
            self._started = True
            self._size(trainer)
            bar.set_description(f"Epoch {trainer.current_epoch}", refresh=False)
            bar.initial = bar.n = bar.last_print_n = batch_idx
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        self._read_logged(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._read_logged(trainer)
        super().on_train_epoch_end(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._read_logged(trainer)
        super().on_train_end(trainer, pl_module)

    def _read_logged(self, trainer: pl.Trainer) -> None:
        """Take the shown values from the metrics logged at the last optimiser step, if it was
        a logging step not read yet (one read per logging step)."""
        step = trainer.global_step
        if step == self._read_at_step or not StepClock(trainer).is_log_step(step):
            return
        self._read_at_step = step
        logged = trainer.callback_metrics
        for key, label in self.SHOWN.items():
            if key in logged:
                value = float(logged[key])
                self._shown[label] = Reading(value) if label == "tok/s" else value

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        out = dict(self._shown)
        for key, value in metrics.items():
            out[self.RENAME.get(key, key)] = value
        return out
