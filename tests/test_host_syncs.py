"""Training steps between logging steps never wait for the device.

A host-device sync (``.item()``, ``bool(tensor)``, a NaN check, a progress-bar number) makes the
CPU wait until the GPU has drained its queue, so the next step's kernels start late; one per step
costs several percent of a GPU step. Every such read goes through ``aten._local_scalar_dense``,
which a dispatch mode can count on the CPU. The whole ``motlab fit`` step is checked, as the CLI
builds it: LightningModule, optimiser (fused, as on CUDA), schedule, clipping, callbacks,
progress bar and the real data module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from torch.utils._python_dispatch import TorchDispatchMode

from motlab.analysis import read_run
from motlab.callbacks import ProgressBar
from motlab.cli import cli_main

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")

CONF = Path(__file__).resolve().parents[1] / "conf"
LOG_EVERY = 3


class CountSyncs(TorchDispatchMode):
    """Counts tensor-to-Python-number reads (each one a device sync on a GPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


class SyncsPerStep(Callback):
    """Syncs per optimiser step, from one batch start to the next (logging included), summed
    over the step's micro-batches when gradients accumulate."""

    def __init__(self, from_step: int) -> None:
        self.from_step = from_step
        self.per_step: dict[int, int] = {}
        self._mode: CountSyncs | None = None
        self._step = -1

    def _close(self) -> None:
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            self.per_step[self._step] = self.per_step.get(self._step, 0) + self._mode.count
            self._mode = None

    def on_train_batch_start(self, trainer: Trainer, *args: Any) -> None:
        self._close()
        if trainer.global_step >= self.from_step:
            self._step = trainer.global_step + 1  # the step this iteration completes
            self._mode = CountSyncs()
            self._mode.__enter__()

    def on_train_end(self, trainer: Trainer, *args: Any) -> None:
        self._close()


@pytest.mark.parametrize(
    ("config", "accumulate"),
    [("dense", 1), ("mot", 1), ("token_choice", 1), ("expert_choice", 1), ("mot", 2)],
)
def test_no_sync_between_logging_steps(config, accumulate, c4_dir, tokenizer_path, tmp_path):
    cli = cli_main(
        [
            *("--config", str(CONF / f"{config}.yaml"), "--config", str(CONF / "tiny.yaml")),
            *("--data.path", str(c4_dir), "--data.tokenizer", str(tokenizer_path)),
            *("--data.num_workers", "0", "--trainer.max_steps", "8"),
            *("--trainer.log_every_n_steps", str(LOG_EVERY), "--trainer.limit_val_batches", "0"),
            *("--trainer.logger.init_args.save_dir", str(tmp_path)),
            *("--checkpoint.dirpath", str(tmp_path), "--checkpoint.every_n_train_steps", "100"),
            *("--model.optim.fused", "true"),  # as on CUDA; the CPU loop reads its step count
            *("--trainer.accumulate_grad_batches", str(accumulate)),
        ],
        run=False,
    )
    probe = SyncsPerStep(from_step=2)
    cli.trainer.callbacks.append(probe)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)

    assert sorted(probe.per_step) == [3, 4, 5, 6, 7, 8]
    quiet = {step: n for step, n in probe.per_step.items() if step % LOG_EVERY}
    assert quiet == {step: 0 for step in quiet}, f"syncs per non-logging step: {quiet}"
    assert all(probe.per_step[step] > 0 for step in (3, 6)), "logging steps were not counted"

    # The bar shows what was logged at the last logging step (step 6, TensorBoard index 5),
    # read there, not a value of steps 7 or 8.
    bar = next(cb for cb in cli.trainer.callbacks if isinstance(cb, ProgressBar))
    shown = bar.get_metrics(cli.trainer, cli.model)
    run = read_run(tmp_path)
    assert list(run["train/loss"].steps) == [2, 5]
    assert isinstance(shown["loss"], float)
    assert shown["loss"] == pytest.approx(run["train/loss"].final, rel=1e-6)
    assert float(shown["tok/s"]) == pytest.approx(run["perf/tokens_per_sec"].final, rel=1e-6)
