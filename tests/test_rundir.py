"""The run directory's owner: where an experiment is, which last.ckpt a resume continues, and
which version a resumed run logs into."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from jsonargparse import Namespace

from motlab.rundir import (
    Version,
    experiment_root,
    find_resume_checkpoint,
    logger_root,
    newest_run,
    resume_checkpoint,
    resumed_version,
)


def _config(logger=None, dirpath=None, default_root_dir=None) -> Namespace:
    trainer = Namespace(logger=logger, default_root_dir=default_root_dir)
    return Namespace(trainer=trainer, checkpoint=Namespace(dirpath=dirpath))


def _tensorboard(save_dir: str, name: str) -> Namespace:
    return Namespace(
        class_path="lightning.pytorch.loggers.TensorBoardLogger",
        init_args=Namespace(save_dir=save_dir, name=name, version=None),
    )


def _touch(path: Path, mtime: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    os.utime(path, (mtime, mtime))
    return path


def test_the_experiment_of_a_config() -> None:
    assert experiment_root(_config(_tensorboard("runs", "mot"))) == Path("runs/mot")
    assert experiment_root(_config(_tensorboard("runs", "mot"), dirpath="ck")) == Path("ck")
    assert logger_root(_config(True, default_root_dir="out")) == Path("out/lightning_logs")
    assert logger_root(_config(None)) == Path("lightning_logs")
    assert logger_root(_config(False)) is None
    assert experiment_root(_config(False)) is None
    assert logger_root(_config([_tensorboard("a", "b")])) == Path("a/b")


def test_a_resume_continues_the_newest_last_checkpoint_by_time(tmp_path: Path) -> None:
    assert resume_checkpoint(tmp_path) is None  # nothing to resume: start
    with pytest.raises(FileNotFoundError, match=r"no last\.ckpt in .*version_\*/checkpoints/"):
        find_resume_checkpoint(tmp_path)
    _touch(tmp_path / "version_10/checkpoints/last.ckpt", 1_000)
    newest = _touch(tmp_path / "version_9/checkpoints/last.ckpt", 2_000)
    _touch(tmp_path / "version_9/checkpoints/0000005.ckpt", 3_000)  # not a last.ckpt
    assert resume_checkpoint(tmp_path) == find_resume_checkpoint(tmp_path) == newest
    # A version or a checkpoint directory is an experiment of its own.
    assert (
        resume_checkpoint(tmp_path / "version_10") == tmp_path / "version_10/checkpoints/last.ckpt"
    )
    assert resume_checkpoint(newest.parent) == newest


def test_a_resume_logs_into_the_version_of_its_checkpoint(tmp_path: Path) -> None:
    root = tmp_path / "runs/mot"
    ckpt = root / "version_3/checkpoints/last.ckpt"
    assert resumed_version(ckpt, root) == "version_3"
    assert resumed_version(ckpt, tmp_path / "runs/other") is None  # another experiment's
    assert resumed_version(root / "version_3/last.ckpt", root) is None  # not in checkpoints/
    assert resumed_version(tmp_path / "ck/checkpoints/last.ckpt", tmp_path) is None
    assert resumed_version(ckpt, None) is None


def test_which_versions_are_one_run(tmp_path: Path) -> None:
    def version(name: str, first: int, last: int, start: float) -> Version:
        (tmp_path / name).mkdir(exist_ok=True)
        return Version(tmp_path / name, first, last, start)

    v0 = version("version_0", 0, 450, 1.0)
    v1 = version("version_1", 460, 600, 2.0)  # continues v0
    v2 = version("version_2", 0, 0, 3.0)  # motlab validate: an evaluation
    chain, left_out = newest_run([v2, v1, v0])
    assert chain == [v0, v1] and left_out == [v2]
    v3 = version("version_3", 0, 100, 4.0)  # trained again from step 0: a separate run
    chain, left_out = newest_run([v0, v1, v2, v3])
    assert chain == [v3] and left_out == [v0, v1, v2]
    # Steps that go on are not enough when the saved config says it did not resume.
    (tmp_path / "version_1/config.yaml").write_text("ckpt_path: null\n")
    assert newest_run([v0, v1]) == ([v1], [v0])
