"""The slurm launcher through submitit: its sbatch options, and real jobs on this machine with
submitit's local executor — a preempted job requeued and resumed, and both shipped sweeps."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sweep_helpers import last_ckpt, wait_for_file

from motlab import load_model
from motlab.checkpoint import trained_steps
from motlab.sweep.check import check_runs
from motlab.sweep.slurm import check_resources, make_executor, parse_minutes
from motlab.sweep.spec import SlurmSettings, SweepError, load_sweep

pytest.importorskip("submitit")

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
SWEEPS = CONF / "sweeps"


def test_time_limits_in_minutes():
    assert [parse_minutes(t) for t in (90, "90", "01:30:00", "2-00:00:00", "1-2:30", "0:0:30")] == [
        90, 90, 90, 2880, 1590, 1
    ]  # fmt: skip
    with pytest.raises(SweepError, match="HH:MM:SS"):
        parse_minutes("two hours")


def test_sbatch_options_come_from_the_settings(tmp_path, monkeypatch):
    """The job script submitit would hand to sbatch (an ``srun`` on PATH stands for a cluster)."""
    (tmp_path / "bin").mkdir()
    srun = tmp_path / "bin" / "srun"
    srun.write_text("#!/bin/sh\nexit 1\n")
    srun.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    settings = SlurmSettings(
        gpus=4, time="2-00:00:00", partition="gpu", account="lab", qos="high", cpus_per_task=8,
        mem_gb=64, signal_delay_s=180, additional={"constraint": "h100"},
    )  # fmt: skip
    executor = make_executor(tmp_path / "jobs", settings, "experts", "slurm")
    script = executor._executor._make_submission_file_text("python -m x", "uid")
    for option in (
        "--partition=gpu",
        "--account=lab",
        "--qos=high",
        "--time=2880",
        "--gpus-per-node=4",
        "--ntasks-per-node=4",
        "--cpus-per-task=8",
        "--mem=64GB",
        "--signal=USR2@180",
        "--constraint=h100",
        "--job-name=experts",
    ):
        assert f"#SBATCH {option}\n" in script, option  # fmt: skip


def test_without_slurm_the_error_points_to_the_local_executor(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun
    with pytest.raises(SweepError, match="--cluster local"):
        make_executor(tmp_path, SlurmSettings(), "s", "slurm")


def test_runs_must_use_the_gpus_of_their_job(monkeypatch):
    monkeypatch.chdir(REPO)
    checked = check_runs(load_sweep(SWEEPS / "experts.yaml").runs())  # trainer.devices: 1
    check_resources(checked, SlurmSettings(gpus=1))
    with pytest.raises(SweepError, match=r"run E=8: trainer\.devices=1.*--trainer\.devices 4"):
        check_resources(checked, SlurmSettings(gpus=4))
    with pytest.raises(SweepError, match=r"trainer\.num_nodes=1.*2 node"):
        check_resources(checked, SlurmSettings(gpus=1, nodes=2))


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_a_preempted_job_requeues_and_resumes(tmp_path, tiniest, motlab_env, twins_sweep):
    """Two jobs that train identically, as a job array on submitit's local executor. Once the
    second has its first checkpoint it gets the preemption signal SLURM would send (USR2):
    submitit calls SweepJob.checkpoint, which stops motlab fit, and requeues the job; the
    requeued job resumes from the checkpoint into the same version directory and ends with the
    same step count and the same weights as the uninterrupted one."""
    sweep = twins_sweep
    steps = 9
    args = [str(sweep), "--launcher", "slurm", "--cluster", "local", "--wait",
            "--overlay", str(CONF / "tiny.yaml"), "--", *tiniest,
            "--trainer.max_steps", str(steps), "--checkpoint.every_n_train_steps", "3",
            "--trainer.val_check_interval", "3"]  # fmt: skip
    save_dir = tmp_path / "runs" / "sweeps" / "twins"
    log_path = tmp_path / "sweep.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "motlab", "sweep", *args], cwd=tmp_path, env=motlab_env,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            wait_for_file(last_ckpt(save_dir / "twin=2"), proc, log_path)
            job = next(
                line.split("job ")[1].split()[0]
                for line in log_path.read_text().splitlines()
                if line.startswith("twin=2: job ")
            )
            (task,) = _children(int(job))  # the controller's one task: submitit's job process
            os.kill(task, signal.SIGUSR2)
            assert proc.wait(timeout=300) == 0, log_path.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    out = log_path.read_text()
    assert "all 2 runs finished" in out and "wrote runs/sweeps/twins/report.csv" in out
    job_log = (save_dir / ".submitit" / f"{job}_0_log.out").read_text()
    assert "this job is preempted" in job_log
    assert "twin=2: stopping motlab fit (SIGTERM) to requeue" in job_log
    assert "Requeued job" in job_log
    # motlab fit saved the step SIGTERM found (3 or later) and the requeued job resumed there.
    resumed = re.search(r"twin=2: resume from step (\d+) of 9", job_log)
    assert resumed and 3 <= int(resumed.group(1)) < steps, job_log[-3000:]
    for name in ("ref", "twin=2"):
        assert [p.name for p in (save_dir / name).glob("version_*")] == ["version_0"]
        assert trained_steps(last_ckpt(save_dir / name)) == steps
    ref, twin = (load_model(last_ckpt(save_dir / n)).state_dict() for n in ("ref", "twin=2"))
    for key in ref:
        torch.testing.assert_close(twin[key], ref[key], rtol=0, atol=0, msg=key)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "flags", "runs", "axis", "values"),
    [
        ("experts.yaml", ["--data.batch_size", "128"], ["dense", "E=8", "E=32", "E=128"], "E",
         [8, 32, 128]),
        ("granularity.yaml", [], ["dense", "k=1", "k=4", "k=16", "k=32"], "k", [1, 4, 16, 32]),
    ],
)  # fmt: skip
def test_shipped_sweep_through_submitit(
    name, flags, runs, axis, values, tmp_path, tiniest, motlab_sweep
):
    """A shipped sweep as a job array on submitit's local executor, to the report."""
    out = motlab_sweep(
        tmp_path, str(SWEEPS / name), "--launcher", "slurm", "--cluster", "local", "--wait",
        "--overlay", str(CONF / "tiny.yaml"), "--", *tiniest, *flags,
    ).stdout  # fmt: skip
    save_dir = tmp_path / "runs" / "sweeps" / name.removesuffix(".yaml")
    assert f"all {len(runs)} runs finished" in out
    for run in runs:
        assert f"{run}: job " in out
        assert trained_steps(last_ckpt(save_dir / run)) == 4
    with open(save_dir / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == runs and [r[axis] for r in rows[1:]] == list(
        map(str, values)
    )
    assert (save_dir / "report.png").is_file()
