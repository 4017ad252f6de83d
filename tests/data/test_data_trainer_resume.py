"""A real Lightning run: resuming from a mid-run checkpoint sees exactly the uninterrupted batches.

Run A trains 2N steps. Run B trains N steps and checkpoints; a fresh Trainer resumes from that
checkpoint to 2N. The batches seen after the resume must equal A's batches N..2N-1.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from motlab.data import C4DataModule

N = 3


class TinyLM(pl.LightningModule):
    """Embedding + linear next-token model that records every training batch it sees."""

    def __init__(self, vocab_size: int, use_stepping_batches: bool = False) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab_size, 8)
        self.head = nn.Linear(8, vocab_size)
        self.use_stepping_batches = use_stepping_batches
        self.seen: list[torch.Tensor] = []
        self.val_seen: list[torch.Tensor] = []

    def training_step(self, batch_BU: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self.seen.append(batch_BU.clone())
        inputs_BT, targets_BT = batch_BU[:, :-1], batch_BU[:, 1:]
        logits_BTV = self.head(self.emb(inputs_BT))
        return nn.functional.cross_entropy(logits_BTV.flatten(0, 1), targets_BT.flatten())

    def validation_step(self, batch_BU: torch.Tensor, batch_idx: int) -> None:
        self.val_seen.append(batch_BU.clone())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.use_stepping_batches:
            # Common for LR schedules; makes Lightning build the train loader before restoring
            # the checkpoint (Lightning issue #20550), which the data module must survive.
            assert self.trainer.estimated_stepping_batches > 0
        return torch.optim.SGD(self.parameters(), lr=0.1)


class SaveAtTrainEnd(pl.Callback):
    """Checkpoint when training ends (as ``motlab.callbacks.RunCheckpoint`` does for last.ckpt):
    the fit loop still holds a prefetched batch that the model never saw."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.save_checkpoint(self.path / "end.ckpt")


def make_dm(c4_dir: Path, tokenizer_path: Path, num_workers: int) -> C4DataModule:
    return C4DataModule(
        train_files=[str(p) for p in sorted((c4_dir / "en").glob("c4-train.*.json.gz"))[:2]],
        val_files=str(c4_dir / "en" / "c4-validation.*.json.gz"),
        tokenizer=str(tokenizer_path),
        seq_len=32,
        batch_size=2,
        num_workers=num_workers,
        shuffle_buffer=50,
        val_batches=2,
    )


def make_trainer(
    steps: int, max_epochs: int | None, root: Path, callbacks: list | None = None
) -> pl.Trainer:
    callbacks = callbacks or []
    return pl.Trainer(
        default_root_dir=root,
        max_steps=steps,
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=any(isinstance(cb, ModelCheckpoint) for cb in callbacks),
        callbacks=callbacks,
        val_check_interval=N,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
    )


@pytest.mark.parametrize(
    ("num_workers", "max_epochs", "stepping_batches", "save_at_end"),
    [(2, None, False, False), (0, None, False, False), (2, 1, True, False), (2, None, False, True)],
    ids=["workers2", "workers0", "workers2-estimated_stepping_batches", "workers2-save_at_end"],
)
def test_trainer_resume_sees_the_uninterrupted_batches(
    c4_dir: Path,
    tokenizer_path: Path,
    tmp_path: Path,
    num_workers: int,
    max_epochs: int | None,
    stepping_batches: bool,
    save_at_end: bool,
) -> None:
    dm = make_dm(c4_dir, tokenizer_path, num_workers)
    run_a = TinyLM(dm.vocab_size, stepping_batches)
    make_trainer(2 * N, max_epochs, tmp_path / "a").fit(run_a, dm)
    assert len(run_a.seen) == 2 * N

    dm = make_dm(c4_dir, tokenizer_path, num_workers)
    run_b = TinyLM(dm.vocab_size, stepping_batches)
    if save_at_end:
        saver: pl.Callback = SaveAtTrainEnd(tmp_path)
    else:
        saver = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=N, save_top_k=-1)
    # Only run B writes checkpoints, and only the one under test: ``tmp_path/*.ckpt``.
    make_trainer(N, max_epochs, tmp_path / "b", [saver]).fit(run_b, dm)
    (path,) = tmp_path.glob("*.ckpt")
    saved = torch.load(path, weights_only=False)
    assert "C4DataModule" in saved and saved["loops"]["fit_loop"]["state_dict"]["combined_loader"]

    dm = make_dm(c4_dir, tokenizer_path, num_workers)
    run_c = TinyLM(dm.vocab_size, stepping_batches)
    make_trainer(2 * N, max_epochs, tmp_path / "c").fit(run_c, dm, ckpt_path=path)

    assert all(torch.equal(a, b) for a, b in zip(run_a.seen[:N], run_b.seen, strict=True))
    assert len(run_c.seen) == N
    for step, (a, c) in enumerate(zip(run_a.seen[N:], run_c.seen, strict=True), start=N):
        assert torch.equal(a, c), f"batch {step} differs after resume"
    # Validation (after steps N and 2N) sees the same batches every time.
    assert len(run_a.val_seen) == 4
    assert all(
        torch.equal(x, y) for x, y in zip(run_a.val_seen[:2], run_a.val_seen[2:], strict=True)
    )
    assert all(torch.equal(x, y) for x, y in zip(run_a.val_seen[2:], run_c.val_seen, strict=True))
