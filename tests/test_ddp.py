"""Two-process DDP on the CPU: every rank reads its own data, and the ranks stay in lockstep.

The run is a standalone script in a subprocess with a timeout (Lightning's DDP launcher re-runs
the current command for the other rank, which must not be pytest itself).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

SCRIPT = Path(__file__).resolve().parent / "scripts" / "ddp_run.py"
TIMEOUT_S = 300


def _run(tmp_path: Path, c4_dir: Path, tokenizer_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("LOCAL_RANK", None)
    cmd = [sys.executable, str(SCRIPT), str(tmp_path / "out"), str(c4_dir), str(tokenizer_path)]
    # A session of its own, so that a hung run is ended with exactly the processes it started.
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True, text=True,
    )  # fmt: skip
    try:
        output, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"DDP run exceeded {TIMEOUT_S}s:\n{output[-4000:]}")
    assert proc.returncode == 0, output[-4000:]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, c4_dir, tokenizer_path) -> Path:
    tmp_path = tmp_path_factory.mktemp("ddp")
    _run(tmp_path, c4_dir, tokenizer_path)
    return tmp_path


def _records(run: Path) -> list[dict]:
    return [torch.load(run / f"out/rank{r}.pt", weights_only=False) for r in (0, 1)]


def test_ranks_read_disjoint_data(ddp_run):
    r0, r1 = _records(ddp_run)
    assert r0["world_size"] == r1["world_size"] == 2
    assert len(r0["batches"]) == len(r1["batches"]) == 2
    rows0 = {tuple(row.tolist()) for b in r0["batches"] for row in b}
    rows1 = {tuple(row.tolist()) for b in r1["batches"] for row in b}
    assert r0["batches"][0].shape == (32, 17)  # per-device batch 32, seq_len 16 + 1
    assert len(rows0) == len(rows1) == 64
    assert not rows0 & rows1


def test_ranks_hold_identical_weights(ddp_run):
    r0, r1 = _records(ddp_run)
    assert r0["state"].keys() == r1["state"].keys()
    for key in r0["state"]:
        torch.testing.assert_close(r0["state"][key], r1["state"][key], rtol=0, atol=0, msg=key)


def test_rank_zero_saves_the_checkpoint_whole(ddp_run):
    """Every rank has motlab's checkpoint writer (Lightning saves from global rank 0 only): the
    run's last.ckpt is whole, holds the weights both ranks ended with, and nothing is left
    beside it."""
    from motlab import load_model
    from motlab.atomic import partials
    from motlab.checkpoint import check_intact, trained_steps

    r0, r1 = _records(ddp_run)
    assert r0["checkpoint_io"] == r1["checkpoint_io"] == "DurableCheckpointIO"
    ckpts = ddp_run / "runs/mot/version_0/checkpoints"
    assert [p.name for p in ckpts.iterdir()] == ["last.ckpt"]
    assert partials(ckpts) == []
    check_intact(ckpts / "last.ckpt")
    assert trained_steps(ckpts / "last.ckpt") == 2
    saved = load_model(ckpts / "last.ckpt").state_dict()
    for key, value in r0["state"].items():
        torch.testing.assert_close(saved[key], value, rtol=0, atol=0, msg=key)


def test_logged_loss_is_the_mean_over_ranks(ddp_run):
    r0, r1 = _records(ddp_run)
    acc = EventAccumulator(str(ddp_run / "runs/mot/version_0"), size_guidance={"scalars": 0})
    acc.Reload()
    logged = [e.value for e in acc.Scalars("train/loss")]
    expected = [(a + b) / 2 for a, b in zip(r0["losses"], r1["losses"], strict=True)]
    assert r0["losses"] != r1["losses"]  # different data, different local losses
    assert logged == pytest.approx(expected, rel=1e-6)
    assert len(acc.Scalars("val/loss")) == 1
