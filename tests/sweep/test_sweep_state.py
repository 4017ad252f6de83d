"""Where a sweep run stands when its checkpoints are damaged, and the command a requeued job
runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from motlab.sweep.check import CheckedRun
from motlab.sweep.spec import SweepError, SweepRun
from motlab.sweep.state import run_state


def _checked(tmp_path: Path) -> CheckedRun:
    run = SweepRun(name="E=8", save_dir=str(tmp_path), configs=["mot.yaml"], flags=[])
    return CheckedRun(run, max_steps=4, devices=1, num_nodes=1, experiment=run.run_dir)


def test_a_damaged_last_checkpoint_is_passed_over(tmp_path: Path) -> None:
    checked = _checked(tmp_path)
    assert run_state(checked).status == "start"
    ckpts = checked.experiment / "version_0/checkpoints"
    ckpts.mkdir(parents=True)
    torch.save({"global_step": 2}, ckpts / "step=0000002.ckpt")
    (ckpts / "last.ckpt").write_bytes(b"cut short")
    state = run_state(checked)
    assert (state.status, state.step) == ("resume", 2)
    assert state.checkpoint == ckpts / "step=0000002.ckpt"
    (ckpts / "step=0000002.ckpt").write_bytes(b"cut short too")
    with pytest.raises(SweepError, match="run E=8: no checkpoint in .* loads") as raised:
        run_state(checked)
    assert str(ckpts / "last.ckpt") in str(raised.value)
    assert str(ckpts / "step=0000002.ckpt") in str(raised.value)


def test_a_requeued_job_resumes_or_starts(tmp_path: Path) -> None:
    """A SLURM job may start again after any failure: --ckpt_path auto resumes the newest
    intact checkpoint when there is one, else starts."""
    run = _checked(tmp_path).run
    assert run.requeue_args() == [*run.fit_args(), "--ckpt_path", "auto"]
    assert "--ckpt_path" not in run.fit_args()
