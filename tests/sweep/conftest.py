"""Helpers for the sweep tests: the tiniest CPU flags and ``motlab sweep`` as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiniest(c4_dir: Path, tokenizer_path: Path) -> list[str]:
    """``motlab fit`` flags for a few-second CPU run on top of ``conf/tiny.yaml``: 4 steps of
    16 tokens, validation (one batch) after every step, checkpoints every 2 steps."""
    return [
        *("--data.path", str(c4_dir), "--data.tokenizer", str(tokenizer_path)),
        *("--data.seq_len", "16", "--data.num_workers", "0", "--data.val_batches", "1"),
        *("--trainer.max_steps", "4", "--trainer.val_check_interval", "1"),
        *("--checkpoint.every_n_train_steps", "2", "--trainer.enable_progress_bar", "false"),
    ]


def sweep_env() -> dict[str, str]:
    # One thread per run: submitit's local executor runs the jobs of an array side by side.
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONWARNINGS": "ignore",
    }


def _motlab_sweep(
    cwd: Path, *args: str, timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``python -m motlab sweep ARGS`` in ``cwd``; stdout and stderr together in ``.stdout``."""
    result = subprocess.run(
        [sys.executable, "-m", "motlab", "sweep", *args],
        cwd=cwd,
        env=sweep_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"motlab sweep {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout[-6000:]}")  # fmt: skip
    return result


@pytest.fixture(scope="session")
def motlab_sweep():
    """``motlab_sweep(cwd, *args, timeout=600, check=True)``: the command as a subprocess."""
    return _motlab_sweep


@pytest.fixture(scope="session")
def motlab_env() -> dict[str, str]:
    """The environment the sweep subprocesses run in."""
    return sweep_env()


@pytest.fixture
def twins_sweep(tmp_path: Path) -> Path:
    """A sweep file of two runs that train identically (the axis only changes how many step
    checkpoints are kept): one interrupted, one not, so that they can be compared bit for bit."""
    import yaml

    sweep = tmp_path / "twins.yaml"
    conf = Path(__file__).resolve().parents[2] / "conf"
    sweep.write_text(
        yaml.safe_dump(
            {
                "config": [str(conf / "mot.yaml")],
                "axes": {"twin": {"checkpoint.save_top_k": [2]}},
                "baselines": {"ref": {}},
            }
        )
    )
    return sweep
