"""A run killed at any moment (SIGKILL: no handler runs, as on an OOM kill or a node failure) and
restarted with ``--ckpt_path auto`` always resumes, and ends with exactly the weights of a run
that was never interrupted.

Each attempt is a ``motlab fit`` process in a session of its own, killed with its loader
workers (``killpg``): while a checkpoint is being written, mid-step with the workers in flight,
before its first checkpoint. The default tests kill ``motlab fit`` at those chosen moments, and a
process that does nothing but save checkpoints at random moments; the slow one kills
``motlab fit`` at random moments, many times. After every kill, every checkpoint on disk loads.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from motlab import load_model
from motlab.atomic import PARTIAL_SUFFIX, partials
from motlab.checkpoint import check_intact, newest_intact_checkpoint, trained_steps
from motlab.rundir import checkpoint_files

REPO = Path(__file__).resolve().parents[1]
STEPS = 6
LAUNCH_TIMEOUT_S = 600


def _command(c4_dir: Path, tokenizer_path: Path) -> list[str]:
    return [
        sys.executable, "-m", "motlab", "fit",
        *("--config", str(REPO / "conf/dense.yaml"), "--config", str(REPO / "conf/tiny.yaml")),
        *("--data.path", str(c4_dir), "--data.tokenizer", str(tokenizer_path)),
        *("--data.seq_len", "16", "--data.num_workers", "1", "--data.val_batches", "1"),
        *("--trainer.max_steps", str(STEPS), "--trainer.val_check_interval", "3"),
        *("--checkpoint.every_n_train_steps", "2", "--model.optim.warmup_steps", "2"),
        *("--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"),
        *("--ckpt_path", "auto"),
    ]  # fmt: skip


def _launch(command: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: the kill takes the loader workers too
    )


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def _partials(root: Path) -> list[Path]:
    return list(root.glob(f"runs/dense/version_*/checkpoints/.*{PARTIAL_SUFFIX}"))


def _checkpoints(root: Path) -> set[Path]:
    return set(root.glob("runs/dense/version_*/checkpoints/*.ckpt"))


def _assert_every_checkpoint_whole(root: Path) -> None:
    """What a kill leaves: every checkpoint file loads (a half-written one is only ever a
    partial file, which no reader takes for a checkpoint)."""
    for path in checkpoint_files(root / "runs/dense"):
        check_intact(path)


def _kill_when(
    proc: subprocess.Popen[bytes], root: Path, moment: Callable[[], bool], delay_s: float = 0.0
) -> bool:
    """Kill ``proc`` (running in ``root``) once ``moment()`` holds (then ``delay_s`` later),
    and check what it left; False if it ended first."""
    deadline = time.monotonic() + LAUNCH_TIMEOUT_S
    while proc.poll() is None and time.monotonic() < deadline:
        if moment():
            time.sleep(delay_s)
            _kill(proc)
            _assert_every_checkpoint_whole(root)
            return True
        time.sleep(0.005)
    if proc.poll() is None:
        _kill(proc)
        pytest.fail("a launch did not reach its kill point in time")
    return False


def _finish(proc: subprocess.Popen[bytes]) -> None:
    _, err = proc.communicate(timeout=LAUNCH_TIMEOUT_S)
    assert proc.returncode == 0, err.decode()[-3000:]


def _assert_same_weights(straight: Path, killed: Path) -> None:
    a = newest_intact_checkpoint(straight / "runs/dense")
    b = newest_intact_checkpoint(killed / "runs/dense")
    assert a is not None and b is not None and not b.damaged
    assert trained_steps(a.path) == trained_steps(b.path) == STEPS
    wa, wb = load_model(a.path).state_dict(), load_model(b.path).state_dict()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=0, msg=key)


def _assert_tidy(root: Path) -> None:
    """No partial file left after the finished run, no ``-v1`` checkpoint beside another."""
    assert _partials(root) == []
    names = [p.name for p in root.glob("runs/dense/version_*/checkpoints/*")]
    assert not [n for n in names if "-v" in n], names


def test_killed_at_chosen_moments_a_run_resumes_exactly(tmp_path, c4_dir, tokenizer_path):
    """Killed while writing its first checkpoint (so there is nothing to resume: auto starts
    afresh), mid-step after a checkpoint, and while writing a later checkpoint; each time
    restarted with --ckpt_path auto; the run ends with the uninterrupted run's weights."""
    command = _command(c4_dir, tokenizer_path)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight.mkdir(), killed.mkdir()
    reference = _launch(command, straight)  # meanwhile, the uninterrupted run
    try:
        left_partial = []
        # 1. While the first checkpoint is being written: nothing intact to resume yet.
        proc = _launch(command, killed)
        assert _kill_when(proc, killed, lambda: bool(_partials(killed) or _checkpoints(killed)))
        left_partial.append(bool(_partials(killed)))
        # 2. Mid-step, its loader worker in flight, once step 2 is saved (auto resumes it).
        proc = _launch(command, killed)
        saved = lambda: any(p.name == "last.ckpt" for p in _checkpoints(killed))  # noqa: E731
        assert _kill_when(proc, killed, saved, delay_s=0.05)
        # 3. While a later checkpoint is being written.
        before = _checkpoints(killed)
        proc = _launch(command, killed)
        assert _kill_when(
            proc, killed, lambda: bool(_partials(killed) or _checkpoints(killed) - before)
        )
        left_partial.append(bool(_partials(killed)))
        # 4. To the end.
        _finish(_launch(command, killed))
        _finish(reference)
    finally:
        for p in (reference, proc):
            if p.poll() is None:
                _kill(p)
    assert any(left_partial), "no kill landed mid-save: the test did not test that"
    _assert_same_weights(straight, killed)
    _assert_tidy(killed)


@pytest.mark.slow
def test_killed_at_random_moments_a_run_resumes_exactly(tmp_path, c4_dir, tokenizer_path):
    """Twelve kills at random moments of a launch's life (start-up, steps, saves, validation),
    each followed by a restart with --ckpt_path auto; then a launch to the end."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    command = _command(c4_dir, tokenizer_path)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight.mkdir(), killed.mkdir()
    start = time.monotonic()
    _finish(_launch(command, straight))
    whole_s = time.monotonic() - start
    kills = 0
    for _ in range(12):
        proc = _launch(command, killed)
        kill_at = time.monotonic() + rng.uniform(0.3, 1.0) * whole_s
        if _kill_when(proc, killed, lambda kill_at=kill_at: time.monotonic() >= kill_at):
            kills += 1
        else:
            assert proc.returncode == 0, proc.stderr.read().decode()[-3000:] + f" (seed {seed})"
            break
    _finish(_launch(command, killed))
    assert kills >= 3, f"only {kills} launches were killed before finishing (seed {seed})"
    _assert_same_weights(straight, killed)
    _assert_tidy(killed)


SAVE_LOOP = REPO / "tests/scripts/save_loop.py"
KILLS = 6


def test_killed_at_random_moments_while_saving_a_whole_checkpoint_remains(tmp_path):
    """A process that saves 16 MB checkpoints through motlab's writer back to back (step
    checkpoints and last.ckpt, as a run does) is killed at random moments, restarted from its
    newest intact checkpoint, and killed again. After every kill every checkpoint loads, and
    last.ckpt holds at least the last step the process reported saved; what the kill
    interrupted is only ever a partial file. (Written in place, as a copy from TMPDIR on another
    filesystem is, a kill mid-write leaves a truncated last.ckpt.)"""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    directory = tmp_path / "checkpoints"
    directory.mkdir()
    reported, mid_write = 0, 0
    for _ in range(KILLS):
        proc = subprocess.Popen(
            [sys.executable, str(SAVE_LOOP), str(directory)],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + LAUNCH_TIMEOUT_S
            assert proc.stdout is not None
            ready = proc.stdout.readline()  # after its imports and its resume
            assert ready == b"ready\n", proc.communicate(timeout=60)[1].decode()[-3000:]
            time.sleep(rng.uniform(0.05, 1.5))
            assert proc.poll() is None, proc.communicate(timeout=60)[1].decode()[-3000:]
            assert time.monotonic() < deadline
        finally:
            _kill(proc)
        out = proc.stdout.read().split()
        reported = int(out[-1]) if out else reported
        mid_write += bool(partials(directory))
        for path in checkpoint_files(directory):
            check_intact(path)
        found = newest_intact_checkpoint(directory)
        if reported:
            assert found is not None and not found.damaged, f"seed {seed}"
            assert found.path == directory / "last.ckpt", f"seed {seed}"
            assert trained_steps(found.path) >= reported, f"seed {seed}"
            weights = torch.load(found.path, weights_only=True, mmap=True)["state_dict"]["w"]
            assert weights[-1].item() == trained_steps(found.path), f"seed {seed}"
    assert reported > 0, "no launch saved a checkpoint before it was killed"
    assert mid_write > 0, f"no kill landed mid-write (seed {seed}): the test did not test that"
