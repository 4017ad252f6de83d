"""Stopping on a signal is its own callback: it ends the run at a step boundary and says how,
and the checkpoint callback saves that step; ``motlab fit`` exits with the signal's status."""

from __future__ import annotations

import signal
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from signals import SignalAt

from motlab.callbacks import RunCheckpoint, StopOnSignal
from motlab.cli import main

REPO = Path(__file__).resolve().parents[2]


class _Counting(torch.utils.data.IterableDataset):
    def __iter__(self):
        for i in range(10_000):
            yield torch.full((3,), float(i))


class _Module(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def training_step(self, batch, batch_idx):
        return (self.w * batch).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp_path: Path, *callbacks: pl.Callback, **kwargs) -> pl.Trainer:
    trainer = pl.Trainer(
        accelerator="cpu", max_steps=10, logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, callbacks=list(callbacks),
        **kwargs,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(_Counting(), batch_size=2)
    trainer.fit(_Module(), train_dataloaders=loader)
    return trainer


def test_a_signal_stops_at_the_end_of_the_step_and_the_checkpoint_saves_it(tmp_path) -> None:
    """SIGTERM after micro-batch 2 of 2-batch steps: the run stops after step 2, not mid-step;
    last.ckpt holds step 2 (off the every-4-steps interval)."""
    stop = StopOnSignal()
    ckpt = RunCheckpoint(dirpath=tmp_path, every_n_train_steps=4, save_last=True)
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    trainer = _fit(tmp_path, SignalAt(2, "SIGTERM"), stop, ckpt, accumulate_grad_batches=2)
    assert trainer.global_step == 2
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 2
    result = stop.result
    assert (result.signal, result.step, result.exit_status) == (signal.SIGTERM, 2, 143)
    assert result.checkpoint == str(tmp_path / "last.ckpt")
    assert result.resume_command == f"trainer.fit(..., ckpt_path={result.checkpoint!r})"
    # The handlers are the ones before training again.
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_without_a_checkpoint_callback_the_result_says_nothing_was_saved(tmp_path) -> None:
    stop = StopOnSignal(["motlab", "fit"])
    trainer = _fit(tmp_path, SignalAt(0, "SIGINT"), stop, enable_checkpointing=False)
    assert trainer.global_step == 1
    assert stop.result.checkpoint is None and stop.result.resume_command is None
    assert stop.result.message() == "SIGINT: stopped after step 1; nothing saved"
    assert stop.result.exit_status == 130


def test_a_run_no_signal_stops_has_no_result(tmp_path) -> None:
    stop = StopOnSignal()
    _fit(tmp_path, stop, enable_checkpointing=False)
    assert stop.result is None


@pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")
def test_motlab_fit_exits_with_the_signal_status(tmp_path, monkeypatch, c4_dir, tokenizer_path):
    monkeypatch.chdir(tmp_path)
    args = [
        "fit",
        *("--config", str(REPO / "conf/dense.yaml"), "--config", str(REPO / "conf/tiny.yaml")),
        *("--data.path", str(c4_dir), "--data.tokenizer", str(tokenizer_path)),
        *("--data.seq_len", "16", "--data.num_workers", "0", "--data.val_batches", "1"),
        *("--trainer.enable_progress_bar", "false", "--trainer.max_steps", "4"),
        *("--trainer.callbacks+=signals.SignalAt", "--trainer.callbacks.batch", "1"),
        *("--trainer.callbacks.sig", "SIGTERM"),
    ]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 143
    last = tmp_path / "runs/dense/version_0/checkpoints/last.ckpt"
    assert torch.load(last, weights_only=True, map_location="cpu")["global_step"] == 2
