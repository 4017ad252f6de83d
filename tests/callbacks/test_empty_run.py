"""A run that fails on its input, before its first step, leaves no empty ``version_N``."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from motlab.callbacks import RemoveEmptyRun
from motlab.cli import main

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")

CONF = Path(__file__).resolve().parents[2] / "conf"


def _fail(capsys, c4_dir, tokenizer_path, *extra: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(CONF / "mot.yaml"), "--config", str(CONF / "tiny.yaml"),
              "--data.path", str(c4_dir), "--data.tokenizer", str(tokenizer_path),
              "--data.num_workers", "0", *extra])  # fmt: skip
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_input_errors_leave_no_version_directory(
    tmp_path, monkeypatch, capsys, c4_dir, tokenizer_path
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    err = _fail(capsys, c4_dir, tokenizer_path, "--model.init_from", "broken.pt")
    assert "model.init_from broken.pt is not a motlab checkpoint" in err
    assert list(tmp_path.iterdir()) == [tmp_path / "broken.pt"]  # no runs/mot/version_0
    # An experiment that has runs keeps them; the failed run's version_1 is gone.
    kept = tmp_path / "runs/mot/version_0"
    kept.mkdir(parents=True)
    (kept / "events.out.tfevents.1").write_bytes(b"")
    err = _fail(capsys, c4_dir, tokenizer_path, "--data.val_files", str(tmp_path / "none.json"))
    assert "--data.val_files: no files match" in err
    assert sorted((tmp_path / "runs/mot").iterdir()) == [kept]


class _Module(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def setup(self, stage):
        raise ValueError("an input error at setup")

    def training_step(self, batch, batch_idx):  # pragma: no cover - never reached
        return self.w.sum()

    def configure_optimizers(self):  # pragma: no cover - never reached
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_directory_holding_anything_else_is_kept(tmp_path):
    made = tmp_path / "logs" / "version_0"

    class Writes(pl.Callback):
        def setup(self, trainer, pl_module, stage):
            made.mkdir(parents=True)
            (made / "notes.txt").write_text("not written by a run")

    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, max_steps=1,
        callbacks=[RemoveEmptyRun([(made, tmp_path / "logs")]), Writes()],
    )  # fmt: skip
    with pytest.raises(ValueError, match="an input error"):
        trainer.fit(_Module(), torch.utils.data.DataLoader(torch.ones(4, 1)))
    assert (made / "notes.txt").is_file()
