"""The local launcher, for real: a shipped sweep at the tiniest size through to its report, a
relaunch that skips finished runs, and a killed sweep that resumes exactly where it stopped."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from sweep_helpers import last_ckpt, wait_for_file

from motlab import load_model
from motlab.analysis import read_run
from motlab.checkpoint import trained_steps

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
SWEEPS = CONF / "sweeps"


def assert_one_finished_version(run_dir: Path, steps: int) -> None:
    """One version directory (resumes log into it) whose last.ckpt holds every step."""
    assert [p.name for p in run_dir.glob("version_*")] == ["version_0"], run_dir
    assert trained_steps(last_ckpt(run_dir)) == steps, run_dir


def assert_report(save_dir: Path, names: list[str], axis: str, values: list[int]) -> None:
    with open(save_dir / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == names
    assert [r[axis] for r in rows] == ["", *map(str, values)]
    assert all(math.isfinite(float(r["final_loss"])) for r in rows)
    assert float(rows[0]["speedup_steps"]) == 1.0  # the baseline against itself
    assert (save_dir / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def launch_and_interrupt(
    cwd: Path, args: list[str], run_dir: Path, signum: int, env: dict[str, str]
) -> tuple[int, str]:
    """Start ``motlab sweep ARGS``; shortly after ``run_dir`` has its first checkpoint, send
    ``signum`` to the sweep and its ``motlab fit`` (as Ctrl-C in a terminal does); return the
    exit code and the log."""
    log_path = cwd / "interrupted.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "motlab", "sweep", *args], cwd=cwd, env=env,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            wait_for_file(last_ckpt(run_dir), proc, log_path)
            time.sleep(0.25)
            os.killpg(proc.pid, signum)
        finally:
            code = proc.wait(timeout=120)
    return code, log_path.read_text()


@pytest.fixture(scope="module")
def experts(tmp_path_factory, tiniest, motlab_env, motlab_sweep):
    """conf/sweeps/experts.yaml at the tiniest size (the batch a multiple of G = 128), from a
    directory with nothing in it, through the local launcher: interrupted with Ctrl-C once run
    E=32 has its first checkpoint (step 2 of 4), then launched again. motlab fit stops at the end
    of the step in progress and saves it."""
    cwd = tmp_path_factory.mktemp("experts")
    args = [str(SWEEPS / "experts.yaml"), "--overlay", str(CONF / "tiny.yaml"),
            "--", *tiniest, "--data.batch_size", "128"]  # fmt: skip
    run_dir = cwd / "runs" / "sweeps" / "experts" / "E=32"
    code, first = launch_and_interrupt(cwd, args, run_dir, signal.SIGINT, motlab_env)
    stopped_at = trained_steps(last_ckpt(run_dir))
    out = motlab_sweep(cwd, *args).stdout
    return cwd, args, (code, first, stopped_at), out


def test_experts_sweep_end_to_end_through_an_interruption(experts):
    cwd, _, (code, first, stopped_at), out = experts
    assert code == 130, first[-3000:]
    assert "sweep interrupted during run E=32: run the same command again to resume" in first
    assert "[4/4] E=128" not in first
    assert 2 <= stopped_at < 4, first[-3000:]  # the step Ctrl-C found, saved by motlab fit
    assert f"SIGINT: stopped after step {stopped_at}" in first
    for line in (
        "[1/4] dense: skip, finished (4 steps)",
        "[2/4] E=8: skip, finished (4 steps)",
        f"[3/4] E=32: resume from step {stopped_at} of 4",
        "--trainer.logger.init_args.name E=32 --ckpt_path last",
        "[4/4] E=128: start",
        "all 4 runs finished",
    ):
        assert line in out, out[-3000:]

    save_dir = cwd / "runs" / "sweeps" / "experts"
    names = ["dense", "E=8", "E=32", "E=128"]
    for name in names:
        assert_one_finished_version(save_dir / name, steps=4)  # E=32 resumed into version_0
    # Logged before Ctrl-C (the stopped run ended as a finished one does) or after the resume.
    logged = list(read_run(save_dir / "E=32")["train/loss"].steps)
    assert logged == [0, 1, 2, 3], logged
    for e in (8, 32, 128):  # each run trained its own combination
        saved = yaml.safe_load((save_dir / f"E={e}" / "version_0" / "config.yaml").read_text())
        ffn = saved["model"]["net"]["ffn"]
        assert (ffn["n_experts"], ffn["group_size"], saved["data"]["batch_size"]) == (e, e, 128)
    manifest = json.loads((save_dir / "sweep.json").read_text())
    assert [r["name"] for r in manifest["runs"]] == names
    assert all(r["command"] in first for r in manifest["runs"][:3])  # the commands that ran
    assert_report(save_dir, names, "E", [8, 32, 128])
    assert "speed-up (steps)" in out and "wrote runs/sweeps/experts/report.png" in out


def test_relaunching_a_finished_sweep_skips_every_run(experts, motlab_sweep):
    cwd, args, _, _ = experts
    save_dir = cwd / "runs" / "sweeps" / "experts"
    before = {p: p.stat().st_mtime_ns for p in save_dir.rglob("last.ckpt")}
    out = motlab_sweep(cwd, *args).stdout
    for i, name in enumerate(["dense", "E=8", "E=32", "E=128"], 1):
        assert f"[{i}/4] {name}: skip, finished (4 steps)" in out
    assert {p: p.stat().st_mtime_ns for p in save_dir.rglob("last.ckpt")} == before
    assert not list(save_dir.rglob("version_1"))


@pytest.mark.slow
def test_granularity_sweep_end_to_end(tmp_path, tiniest, motlab_sweep):
    """conf/sweeps/granularity.yaml: conf/tiny.yaml's batch of 32 fits G = 32 as it is."""
    out = motlab_sweep(
        tmp_path, str(SWEEPS / "granularity.yaml"), "--overlay", str(CONF / "tiny.yaml"),
        "--", *tiniest,
    ).stdout  # fmt: skip
    save_dir = tmp_path / "runs" / "sweeps" / "granularity"
    names = ["dense", "k=1", "k=4", "k=16", "k=32"]
    for name in names:
        assert_one_finished_version(save_dir / name, steps=4)
    assert "all 5 runs finished" in out
    assert_report(save_dir, names, "k", [1, 4, 16, 32])


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_an_interrupted_run_resumes_exactly(
    signum, tmp_path, tiniest, motlab_env, motlab_sweep, twins_sweep
):
    """Two runs that train identically (the axis only changes how many step checkpoints are
    kept). The whole sweep is interrupted — Ctrl-C, or SIGKILL with no chance to clean up — once
    the second run has its first checkpoint; the relaunch skips the finished first run and
    resumes the second from that checkpoint into the same version directory. Both end with the
    same step count, the same weights bit for bit, and the same logged losses."""
    sweep = twins_sweep
    steps = 9
    args = [str(sweep), "--overlay", str(CONF / "tiny.yaml"), "--", *tiniest,
            "--trainer.max_steps", str(steps), "--checkpoint.every_n_train_steps", "3",
            "--trainer.val_check_interval", "3"]  # fmt: skip
    save_dir = tmp_path / "runs" / "sweeps" / "twins"
    code, first = launch_and_interrupt(tmp_path, args, save_dir / "twin=2", signum, motlab_env)
    if signum == signal.SIGINT:
        assert code == 130, first[-3000:]
    stopped_at = trained_steps(last_ckpt(save_dir / "twin=2"))
    if signum == signal.SIGINT:
        assert 3 <= stopped_at < steps  # motlab fit saved the step Ctrl-C found
    else:
        assert stopped_at == 3  # killed: its first checkpoint, the next (step 6) well after

    out = motlab_sweep(tmp_path, *args).stdout
    assert f"[1/2] ref: skip, finished ({steps} steps)" in out
    assert f"[2/2] twin=2: resume from step {stopped_at} of {steps}" in out
    for name in ("ref", "twin=2"):
        assert_one_finished_version(save_dir / name, steps)
    ref, twin = (load_model(last_ckpt(save_dir / n)).state_dict() for n in ("ref", "twin=2"))
    for key in ref:
        torch.testing.assert_close(twin[key], ref[key], rtol=0, atol=0, msg=key)
    for tag in ("train/loss", "val/loss"):
        ref_s, twin_s = (read_run(save_dir / n)[tag] for n in ("ref", "twin=2"))
        missing = set(ref_s.steps) - set(twin_s.steps)
        if signum == signal.SIGINT:
            # Logged before the stop (a stopped run ends as a finished one does), or after it.
            assert not missing, tag
        else:
            # SIGKILL loses what TensorBoard had not written out yet (it flushes every 2 min);
            # the resumed run logs every step after the checkpoint again.
            assert all(s < stopped_at for s in missing), tag
        # A stopped run validates once more, at the step it stopped (Lightning validates when
        # a run is asked to stop); every other point is the uninterrupted run's.
        extra = {stopped_at - 1} if signum == signal.SIGINT and tag == "val/loss" else set()
        assert set(twin_s.steps) <= set(ref_s.steps) | extra, tag
        for step, value in zip(twin_s.steps, twin_s.values, strict=True):
            if step in set(ref_s.steps):
                assert value == ref_s.values[list(ref_s.steps).index(step)], (tag, step)
