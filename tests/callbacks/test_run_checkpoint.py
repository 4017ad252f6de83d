"""What a failing run saves: the last step it finished, when the error comes after that step,
and nothing when it comes inside a step; the saved step resumes exactly."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from failures import FailAt, InjectedFailure
from lightning.pytorch.loggers import Logger

from motlab.callbacks import RunCheckpoint
from motlab.data.loader import ResumableLoader

STEPS = 6
N = 3  # the step after which the run fails


class _Numbers(torch.utils.data.IterableDataset):
    """Batches of 2 rows of 4 numbers, each batch different: ``length`` of them, or endless."""

    def __init__(self, length: int | None = None) -> None:
        self.length = length

    def __iter__(self):
        i = 0
        while self.length is None or i < self.length:
            g = torch.Generator().manual_seed(i)
            yield torch.randn(2, 4, generator=g)
            i += 1


class _Data(pl.LightningDataModule):
    """A resumable train stream reporting the batches the fit loop takes, as C4DataModule."""

    def __init__(self, length: int | None = None) -> None:
        super().__init__()
        self.length = length
        self.loader: ResumableLoader | None = None

    def train_dataloader(self):
        self.loader = ResumableLoader(_Numbers(self.length), track_consumer=True)
        return self.loader

    def val_dataloader(self):
        rows = torch.stack([torch.ones(4), torch.zeros(4)])
        return torch.utils.data.DataLoader(rows, batch_size=1)

    def on_after_batch_transfer(self, batch, dataloader_idx):
        if self.trainer.training:
            self.loader.mark_consumed()
        return batch

    def state_dict(self):
        return {"loader": self.loader.state_dict()} if self.loader is not None else {}

    def load_state_dict(self, state):
        self.pending = state["loader"]

    def setup(self, stage):
        self.pending = None


class _Model(pl.LightningModule):
    """AdamW with a per-step schedule; records every batch it trains on."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(4, 1)
        self.seen: list[torch.Tensor] = []
        self.validated: list[int] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch.clone())
        loss = self.layer(batch).pow(2).mean()
        self.log("loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.validated.append(self.global_step)
        self.log("val", self.layer(batch).pow(2).mean())

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=0.1)
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1 / (k + 1))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class _FailingLogger(Logger):
    """A logger whose writing fails at Lightning's step index ``index``."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    @property
    def name(self) -> str:
        return "failing"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        if step == self.index and "loss" in metrics:
            raise InjectedFailure(f"the logger failed writing step index {step}")


def _checkpoint(root: Path) -> RunCheckpoint:
    """last.ckpt, and a step checkpoint every 100 steps: none in these runs."""
    return RunCheckpoint(dirpath=root, every_n_train_steps=100, save_last=True)


def _fit(root: Path, *callbacks, ckpt_path=None, logger=False, length=None, acc=1, **kwargs):
    model, data = _Model(), _Data(length)
    if ckpt_path is not None:
        # ResumableLoader restores from the data module's state before its first iteration.
        class Restoring(pl.Callback):
            def on_train_start(self, trainer, pl_module):
                if data.pending is not None:
                    data.loader.load_state_dict(data.pending)

        callbacks = (*callbacks, Restoring())
    trainer = pl.Trainer(
        accelerator="cpu", max_steps=STEPS, logger=logger, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=root, log_every_n_steps=1,
        val_check_interval=N * acc, check_val_every_n_epoch=None, num_sanity_val_steps=0,
        accumulate_grad_batches=acc,
        callbacks=[*callbacks, _checkpoint(root)],
        **kwargs,
    )  # fmt: skip
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    return model


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> _Model:
    return _fit(tmp_path_factory.mktemp("straight"))


def _saved_step(root: Path) -> int | None:
    last = root / "last.ckpt"
    return torch.load(last, weights_only=True)["global_step"] if last.exists() else None


@pytest.mark.parametrize("where", ["validation", "train_batch_end", "logger"])
def test_an_error_after_a_step_saves_it_and_it_resumes_exactly(where, straight, tmp_path):
    """Validation, a callback or the logger fails after step N (off the checkpoint interval of
    100): last.ckpt holds step N, and resuming from it trains the same batches to the same
    weights as the run that never failed."""
    if where == "logger":
        callbacks, logger = (), _FailingLogger(index=N - 1)  # step N is logged at index N - 1
    else:
        callbacks, logger = (FailAt(where, N),), False
    with pytest.raises(InjectedFailure):
        _fit(tmp_path, *callbacks, logger=logger)
    assert _saved_step(tmp_path) == N
    resumed = _fit(tmp_path, ckpt_path=tmp_path / "last.ckpt")
    assert len(resumed.seen) == STEPS - N
    for a, b in zip(straight.seen[N:], resumed.seen, strict=True):
        assert torch.equal(a, b)  # the data stream continues where step N left it
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # A validation the error interrupted runs again, whole, when the run resumes.
    redone = [N, N] if where == "validation" else []
    assert resumed.validated == redone + [2 * N, 2 * N] == redone + straight.validated[2:]


def test_an_error_fetching_the_next_batch_saves_the_step(tmp_path):
    """The train data ends (here: raises) while the loop fetches ahead, after step N."""

    class Broken(_Numbers):
        def __iter__(self):
            for i, batch in enumerate(super().__iter__()):
                if i == N + 1:  # fetched ahead while step N is trained, raised after it
                    raise InjectedFailure("a damaged data file")
                yield batch

    class BrokenData(_Data):
        def train_dataloader(self):
            self.loader = ResumableLoader(Broken(), track_consumer=True)
            return self.loader

    trainer = pl.Trainer(
        accelerator="cpu", max_steps=STEPS, logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, limit_val_batches=0,
        callbacks=[_checkpoint(tmp_path)],
    )  # fmt: skip
    with pytest.raises(InjectedFailure):
        trainer.fit(_Model(), datamodule=BrokenData())
    assert _saved_step(tmp_path) == trainer.global_step > 0


def test_an_error_at_the_end_of_an_epoch_saves_its_last_step(tmp_path):
    with pytest.raises(InjectedFailure):
        _fit(tmp_path, FailAt("epoch_end", 4), length=4, limit_val_batches=0)
    assert _saved_step(tmp_path) == 4


@pytest.mark.parametrize("where", ["train_batch_start", "backward"])
@pytest.mark.parametrize("acc", [1, 2])
def test_an_error_inside_a_step_saves_nothing(where, acc, tmp_path):
    """Once the next batch is taken (a callback before it is trained, its backward pass), or
    between the micro-batches of one step, weights and data position disagree: nothing is
    saved, and the last checkpoint saved stays the one to resume."""
    with pytest.raises(InjectedFailure):
        _fit(tmp_path, FailAt(where, N), acc=acc, limit_val_batches=0)
    assert _saved_step(tmp_path) is None


def test_mid_accumulation_saves_nothing_but_the_step_end_does(tmp_path):
    """With 2 micro-batches a step, a callback failing after the first micro-batch of step
    N + 1 saves nothing; failing after the second (step N + 1 done) saves it."""

    class AfterMicroBatch(pl.Callback):
        def __init__(self, micro_batch: int) -> None:
            self.micro_batch = micro_batch

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == self.micro_batch:
                raise InjectedFailure(f"after micro-batch {batch_idx}")

    with pytest.raises(InjectedFailure):
        _fit(tmp_path / "mid", AfterMicroBatch(2 * N), acc=2, limit_val_batches=0)
    assert _saved_step(tmp_path / "mid") is None
    with pytest.raises(InjectedFailure):
        _fit(tmp_path / "end", AfterMicroBatch(2 * N + 1), acc=2, limit_val_batches=0)
    assert _saved_step(tmp_path / "end") == N + 1


def test_a_second_ctrl_c_saves_nothing(tmp_path):
    class Interrupt(pl.Callback):
        def on_validation_batch_end(self, trainer, *args, **kwargs):
            raise KeyboardInterrupt

    with pytest.raises(SystemExit):  # Lightning's answer to a KeyboardInterrupt
        _fit(tmp_path, Interrupt())
    assert _saved_step(tmp_path) is None


def test_save_on_exception_is_refused(tmp_path):
    with pytest.raises(ValueError, match="save_on_exception.*saves the last finished step"):
        RunCheckpoint(dirpath=tmp_path, save_on_exception=True)
