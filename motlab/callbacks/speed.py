"""Throughput and MFU of the training steps: :class:`SpeedMonitor`.

Logged at every logging step (``trainer.log_every_n_steps``):

* ``perf/tokens_per_sec`` — input tokens per second over all devices, measured over the steps
  since the previous logging step (validation time excluded);
* ``perf/tokens_per_sec_per_device``;
* ``perf/mfu`` — model FLOPs utilisation: ``tokens/s/device × training FLOPs per token`` (from
  :func:`motlab.stats.model_stats`) over the device's peak FLOP/s; omitted when the peak is unknown;
* ``perf/tokens_seen`` — ``global_step × tokens per optimiser step`` (survives resumption).
"""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info

from motlab import metrics
from motlab.clock import StepClock
from motlab.stats import model_stats

PEAK_FLOPS_BF16: dict[str, float] = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
}
"""Dense bf16 peak FLOP/s by a substring of ``torch.cuda.get_device_name()`` (first match).

Lightning's own table does not know the H200. Other devices: pass ``speed.peak_flops``.
"""


def peak_flops_per_device(device: torch.device, precision: str) -> float | None:
    """Peak FLOP/s of ``device`` at bf16/fp16 precision from :data:`PEAK_FLOPS_BF16`, or None."""
    if device.type != "cuda" or not any(p in str(precision) for p in ("bf16", "16")):
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_FLOPS_BF16.items() if key in name), None)


class SpeedMonitor(pl.Callback):
    """Log throughput (tokens/s) and MFU of the training steps.

    Args:
        peak_flops: Peak FLOP/s of one device for MFU. ``None`` = look the device up in
            :data:`PEAK_FLOPS_BF16` (CUDA, bf16/16-bit precision only); MFU is not logged when
            neither gives a value.
    """

    def __init__(self, peak_flops: float | None = None) -> None:
        super().__init__()
        self.peak_flops = peak_flops
        self._flops_per_token = 0.0
        self._window_start: float | None = None
        self._window_tokens = 0
        self._tokens_per_step = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flops_per_token = model_stats(pl_module.net.cfg).flops_per_token
        if self.peak_flops is None:
            self.peak_flops = peak_flops_per_device(
                trainer.strategy.root_device, str(trainer.precision)
            )
            if self.peak_flops is not None:
                rank_zero_info(f"MFU against a peak of {self.peak_flops:.3g} FLOP/s per device")
        self._restart_window()

    def _restart_window(self) -> None:
        self._window_start = time.perf_counter()
        self._window_tokens = 0

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        tokens = batch[:, :-1].numel() if isinstance(batch, torch.Tensor) else 0
        self._window_tokens += tokens
        self._tokens_per_step = tokens * trainer.world_size * trainer.accumulate_grad_batches
        if not StepClock(trainer).logged_step_finished(batch_idx) or self._window_start is None:
            return
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()  # CPU time ≠ GPU time while kernels are still queued
        elapsed = time.perf_counter() - self._window_start
        per_device = self._window_tokens / max(elapsed, 1e-9)
        log = dict(on_step=True, on_epoch=False, rank_zero_only=True)
        tokens_seen = float(trainer.global_step * self._tokens_per_step)
        pl_module.log(metrics.TOKENS_PER_SEC, per_device * trainer.world_size, **log)
        pl_module.log(metrics.TOKENS_PER_SEC_PER_DEVICE, per_device, **log)
        pl_module.log(metrics.TOKENS_SEEN, tokens_seen, **log)
        if self.peak_flops:
            mfu = per_device * self._flops_per_token / self.peak_flops
            pl_module.log(metrics.MFU, mfu, **log)
        self._restart_window()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self._restart_window()  # do not count validation time as training time
