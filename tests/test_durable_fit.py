"""``motlab fit`` against the disk: a full disk ends the run with an ``error:`` block and loses
no checkpoint, an unusable TMPDIR changes nothing, and a disk too small for the run's
checkpoints is warned about before training starts."""

from __future__ import annotations

import re
import tempfile
from contextlib import nullcontext
from pathlib import Path

import pytest
from full_disk import fill_after, small_filesystem

from motlab.atomic import partials
from motlab.callbacks import CheckpointSpace
from motlab.checkpoint import check_intact, trained_steps
from motlab.checkpoint_io import DurableCheckpointIO, format_bytes
from motlab.cli import cli_main, main

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")

REPO = Path(__file__).resolve().parents[1]
CKPT_BYTES = 78_000_000
"""About the size of a checkpoint of the tiny dense model (weights and AdamW state)."""


def _args(c4_dir: Path, tokenizer_path: Path, *extra: str) -> list[str]:
    return [
        "fit",
        *("--config", str(REPO / "conf/dense.yaml"), "--config", str(REPO / "conf/tiny.yaml")),
        *("--data.path", str(c4_dir), "--data.tokenizer", str(tokenizer_path)),
        *("--data.seq_len", "16", "--data.num_workers", "0", "--data.val_batches", "1"),
        *("--trainer.val_check_interval", "2", "--trainer.enable_progress_bar", "false"),
        *("--checkpoint.every_n_train_steps", "2", "--model.optim.warmup_steps", "2"),
        *extra,
    ]


@pytest.mark.parametrize("disk", ["injected", "tmpfs"])
def test_a_full_disk_ends_the_run_with_an_error_and_loses_nothing(
    disk, tmp_path, monkeypatch, capsys, c4_dir, tokenizer_path
) -> None:
    """Room for the two checkpoints of step 2, not for step 4's: the run ends with an error
    block naming the directory, its free space, the checkpoint's size and the newest intact
    checkpoint; the checkpoints of step 2 are whole and nothing else is in the directory."""
    monkeypatch.chdir(tmp_path)
    args = _args(c4_dir, tokenizer_path, "--trainer.max_steps", "4")
    if disk == "injected":  # every write after the first two fails with ENOSPC after 1 MB
        ckpts = tmp_path / "runs/dense/version_0/checkpoints"
        fill_after(monkeypatch, room=1 << 20, files=2)
        disk_context = nullcontext()
    else:  # a real filesystem with room for 2.5 checkpoints (where mounting is allowed)
        ckpts = tmp_path / "disk"
        args += ["--checkpoint.dirpath", str(ckpts)]
        disk_context = small_filesystem(ckpts, CKPT_BYTES * 5 // 2)
    with disk_context:
        # The tmpfs is too small for this run's checkpoints, which is said before training.
        warned = pytest.warns(UserWarning, match=_too_small(ckpts)) if disk == "tmpfs" else None
        with warned or nullcontext(), pytest.raises(SystemExit) as exited:
            main(args)
        assert exited.value.code == 2
        err = capsys.readouterr().err
        step4, last = ckpts / "step=0000004.ckpt", ckpts / "last.ckpt"
        assert err.startswith(
            f"error: No space left on device: could not save the checkpoint {step4}\n"
        ), err
        assert re.search(rf"\n +{re.escape(str(ckpts))} has [\d.]+ [KMG]?i?B free; ", err), err
        size = re.search(r"this checkpoint needs about ([\d.]+) MiB", err)
        assert size and 70 < float(size.group(1)) < 80, err
        assert f"the newest intact checkpoint is {last} (step 2, checked to load)" in err
        assert sorted(p.name for p in ckpts.iterdir()) == ["last.ckpt", "step=0000002.ckpt"]
        for path in ckpts.iterdir():
            check_intact(path)
        assert trained_steps(last) == trained_steps(ckpts / "step=0000002.ckpt") == 2


def _too_small(directory: Path) -> str:
    """The start-of-run warning about a disk too small for the run's checkpoints."""
    return (
        rf"the checkpoint directory {re.escape(str(directory))} has [\d.]+ MiB free, but this "
        r"run needs about [\d.]+ MiB: 3 checkpoints of about [\d.]+ MiB \(weights and "
        r"optimiser state\) — 1 step checkpoints \(checkpoint.save_top_k\), last.ckpt and the "
        "one being written"
    )


@pytest.fixture(scope="module")
def no_tmpdir_run(tmp_path_factory, c4_dir, tokenizer_path):
    """A 2-step run whose TMPDIR cannot be used (it does not exist)."""
    root = tmp_path_factory.mktemp("no_tmpdir")
    mp = pytest.MonkeyPatch()
    try:
        mp.chdir(root)
        mp.setattr(tempfile, "tempdir", str(root / "no-such-tmp"))
        cli = cli_main(_args(c4_dir, tokenizer_path, "--trainer.max_steps", "2"))
    finally:
        mp.undo()
    return cli, root / "runs/dense/version_0/checkpoints"


def test_checkpoints_do_not_go_through_tmpdir(no_tmpdir_run) -> None:
    """Lightning's own saver writes every checkpoint into TMPDIR first (a small local /tmp on a
    cluster node fails every save); motlab writes beside the destination."""
    cli, ckpts = no_tmpdir_run
    assert isinstance(cli.trainer.strategy.checkpoint_io, DurableCheckpointIO)
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.ckpt", "step=0000002.ckpt"]
    assert partials(ckpts) == []
    for path in ckpts.iterdir():
        check_intact(path)
        assert trained_steps(path) == 2


def test_the_checkpoint_size_is_estimated_before_training(no_tmpdir_run) -> None:
    """The start-of-run estimate (parameters and AdamW's two moments) is within 1 % of the
    file, and the room needed is save_top_k + 2 of them."""
    cli, ckpts = no_tmpdir_run
    (space,) = [cb for cb in cli.trainer.callbacks if isinstance(cb, CheckpointSpace)]
    size = (ckpts / "last.ckpt").stat().st_size
    assert space.estimate == pytest.approx(size, rel=0.01), format_bytes(size)
    assert space.needed == 3 * space.estimate
