"""What motlab relies on in Lightning, checked directly, so that an upgrade that moves it fails
here by name instead of quietly skipping a batch on resume or keeping a stale last.ckpt."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.cli import LightningCLI

from motlab.callbacks import RunCheckpoint
from motlab.data.loader import ResumableLoader


class _Counting(torch.utils.data.IterableDataset):
    def __iter__(self):
        for i in range(10_000):
            yield torch.full((2, 3), i)


class _Module(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def training_step(self, batch, batch_idx):
        return (self.w * batch.float()).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


class _Data(pl.LightningDataModule):
    """Counts, like C4DataModule, the batches the fit loop takes in on_before_batch_transfer."""

    def __init__(self) -> None:
        super().__init__()
        self.loader = ResumableLoader(_Counting(), track_consumer=True)
        self.taken: list[int] = []
        self.yielded_when_taken: list[int] = []

    def train_dataloader(self):
        return self.loader

    def on_before_batch_transfer(self, batch, dataloader_idx):
        if self.trainer.training:
            self.loader.mark_consumed()
            self.taken.append(int(batch[0, 0]))
            self.yielded_when_taken.append(self.loader._yielded)
        return batch


def _trainer(tmp_path, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path, **kwargs,
    )  # fmt: skip


def test_the_fit_loop_reports_each_batch_it_trains_on_once_after_prefetching(tmp_path) -> None:
    data = _Data()
    _trainer(tmp_path, max_steps=5, enable_checkpointing=False).fit(_Module(), datamodule=data)
    assert data.taken == [0, 1, 2, 3, 4]  # every batch, in order, once
    # Lightning fetches one batch ahead: the loader had yielded batch i + 1 when batch i came.
    assert data.yielded_when_taken == [2, 3, 4, 5, 6]


def test_run_checkpoint_saves_the_final_step_off_the_interval(tmp_path) -> None:
    ckpt = RunCheckpoint(dirpath=tmp_path, every_n_train_steps=3, save_last=True, save_top_k=-1)
    trainer = _trainer(tmp_path, max_steps=5, callbacks=[ckpt])
    trainer.fit(_Module(), datamodule=_Data())
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 5
    assert ckpt.last_model_path == str(tmp_path / "last.ckpt")


class _Stop(Exception):
    """Raised where LightningCLI would start building classes: parsing is all these tests need."""


class _Sized(pl.LightningModule):
    def __init__(self, width: int = 1) -> None:
        super().__init__()
        self.save_hyperparameters()


def _parsed_by(cli_class: type[LightningCLI], args: list[str]) -> LightningCLI:
    """``cli_class`` run on ``args`` up to the point where classes would be built."""
    seen: list[LightningCLI] = []

    class Stopping(cli_class):  # type: ignore[misc, valid-type]
        def before_instantiate_classes(self) -> None:
            seen.append(self)
            raise _Stop

    with pytest.raises(_Stop):
        Stopping(_Sized, args=args, seed_everything_default=False)
    return seen[0]


def test_lightning_cli_resolves_ckpt_path_in_the_method_motlab_overrides(tmp_path) -> None:
    """``MotCLI._parse_ckpt_path`` replaces LightningCLI's: LightningCLI still calls the method
    of that name, once, after parsing (the subcommand's ``ckpt_path`` is in the config) and
    before it builds any class."""
    calls = []

    class Recording(LightningCLI):
        def _parse_ckpt_path(self) -> None:
            calls.append(self.config[self.config.subcommand].get("ckpt_path"))

    _parsed_by(Recording, ["fit", "--ckpt_path", str(tmp_path / "x.ckpt")])
    assert calls == [str(tmp_path / "x.ckpt")]


def test_lightning_cli_would_take_the_model_from_the_checkpoint(tmp_path) -> None:
    """Why motlab overrides it: LightningCLI's own method replaces the configured model's
    arguments with the checkpoint's hyper-parameters, so a resumed run would silently train
    the checkpoint's model instead of the configured one."""
    torch.save({"hyper_parameters": {"width": 7}}, tmp_path / "w7.ckpt")
    args = ["fit", "--model.width", "3", "--ckpt_path", str(tmp_path / "w7.ckpt")]
    cli = _parsed_by(LightningCLI, args)
    assert cli.config.fit.model.width == 7
