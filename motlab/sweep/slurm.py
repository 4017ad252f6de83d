"""The ``slurm`` launcher: a sweep as a SLURM job array through submitit (``motlab[slurm]``).

Each unfinished run is one job of the array, and each job runs one ``motlab fit`` process (one
per task: one task per GPU, so that Lightning's SLURM environment sets up DDP). Before its time
limit, or when it is preempted, SLURM signals the job; submitit calls
:meth:`SweepJob.checkpoint`, which stops ``motlab fit`` with SIGTERM (motlab finishes the
optimiser step in progress, saves it to ``last.ckpt`` and writes out its logs) and hands
submitit a fresh :class:`SweepJob` to requeue. The requeued job finds the run's ``last.ckpt`` and
resumes from it with ``--ckpt_path last`` into the same version directory, so the result is that
of an uninterrupted run. A job killed without a signal resumes from its last
``checkpoint.every_n_train_steps`` boundary instead, and trains the steps since then again.

``cluster="local"`` runs the same jobs with submitit's local executor (processes on this
machine), which is how the tests exercise this path without a cluster.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from motlab.sweep.check import CheckedRun
from motlab.sweep.local import say
from motlab.sweep.spec import SlurmSettings, SweepError
from motlab.sweep.state import run_state

try:
    import submitit
    from submitit.helpers import Checkpointable, DelayedSubmission
except ImportError:  # pragma: no cover - depends on the environment
    submitit = None
    Checkpointable = object  # type: ignore[assignment,misc]

MAX_TIMEOUTS = 100
"""Requeues after reaching the time limit before submitit gives a job up (preemptions are free):
150K medium steps take several 24-hour jobs."""

LOCAL_SIGNAL_DELAY_S = 30
"""submitit's local executor signals a job this long before its time limit."""

INSTALL_HINT = 'the slurm launcher needs submitit: pip install "motlab[slurm]"'


def _require_submitit() -> None:
    if submitit is None:
        raise SweepError(INSTALL_HINT)


def parse_minutes(value: str | int) -> int:
    """A SLURM time limit (``MM``, ``HH:MM:SS``, ``D-HH:MM[:SS]``) in whole minutes."""
    if isinstance(value, int):
        return value
    text = str(value).strip()
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not match:
        raise SweepError(f"time {value!r}: expected minutes, HH:MM:SS or D-HH:MM:SS")
    days, a, b, c = match.groups()
    if days is None and b is None:
        return int(a)  # minutes
    hours, minutes, seconds = int(a), int(b or 0), int(c or 0)
    return int(days or 0) * 24 * 60 + hours * 60 + minutes + (seconds + 59) // 60


def _preempt_signal() -> signal.Signals:
    """The signal submitit asks SLURM for (``SUBMITIT_PREEMPT_SIGNAL``, USR2 by default)."""
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))


def _ignore_preempt_signal() -> None:
    # SLURM signals every process of the job step; the default action of USR2 would kill
    # motlab fit mid-step. The job's submitit handler stops it properly instead.
    signal.signal(_preempt_signal(), signal.SIG_IGN)


class SweepJob(Checkpointable):
    """One run as a submitit job: ``motlab fit``, resumed from ``last.ckpt`` when there is one."""

    def __init__(self, checked: CheckedRun, cwd: str, python: str, grace_s: float) -> None:
        self.checked = checked
        self.cwd = cwd
        self.python = python
        self.grace_s = grace_s
        self._proc: subprocess.Popen[bytes] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_proc": None}

    def __call__(self) -> dict[str, Any]:
        run, max_steps = self.checked.run, self.checked.max_steps
        state = run_state(self.checked)
        if state.status == "finished":
            print(f"{run.name}: {state.describe(max_steps)}", flush=True)
            return {"run": run.name, "step": state.step}
        resume = state.status == "resume"
        print(f"{run.name}: {state.describe(max_steps)}\n  {run.command(resume)}", flush=True)
        self._proc = subprocess.Popen(
            [self.python, "-m", "motlab", *run.fit_args(resume)],
            cwd=self.cwd,
            preexec_fn=_ignore_preempt_signal,
        )
        # Poll rather than block in wait(): the preemption handler (checkpoint) runs in this
        # thread and must be able to reap the process itself.
        while (code := self._proc.poll()) is None:
            time.sleep(0.5)
        if submitit.JobEnvironment().global_rank != 0:
            return {"run": run.name}
        after = run_state(self.checked)
        if code != 0:
            raise RuntimeError(f"run {run.name}: motlab fit exited with {code}: {run.command()}")
        if after.status != "finished":
            raise RuntimeError(
                f"run {run.name} stopped at step {after.step} of {max_steps} (signalled?); "
                "relaunch the sweep to resume it"
            )
        return {"run": run.name, "step": after.step}

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        """Preempted or at the time limit: stop ``motlab fit`` at a saved step, then requeue."""
        self._stop()
        fresh = SweepJob(self.checked, self.cwd, self.python, self.grace_s)
        return DelayedSubmission(fresh)

    def _stop(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        name = self.checked.run.name
        print(f"{name}: stopping motlab fit (SIGTERM) to requeue", flush=True)
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        while time.monotonic() < deadline:
            # os.waitpid, not proc.wait(): this may interrupt a poll() that holds its lock.
            pid, _ = os.waitpid(proc.pid, os.WNOHANG)
            if pid:
                return
            time.sleep(0.2)
        print(f"{name}: motlab fit did not stop within {self.grace_s:.0f} s: killed", flush=True)
        proc.kill()
        os.waitpid(proc.pid, 0)


def make_executor(folder: Path, settings: SlurmSettings, name: str, cluster: str | None) -> Any:
    """A submitit executor for ``settings`` on ``cluster``: "slurm" (also for None) or "local"
    (submitit's local executor: the same jobs as processes on this machine)."""
    _require_submitit()
    cluster = cluster or "slurm"
    try:
        executor = submitit.AutoExecutor(
            folder=folder, cluster=cluster, **{f"{cluster}_max_num_timeout": MAX_TIMEOUTS}
        )
    except RuntimeError as err:  # submitit: 'Could not detect "srun"'
        raise SweepError(
            f"{err}: submit from a machine of the SLURM cluster, or run the same jobs on this "
            "machine with --cluster local"
        ) from err
    tasks = max(settings.gpus, 1)
    params: dict[str, Any] = {
        "name": name,
        "timeout_min": parse_minutes(settings.time),
        "nodes": settings.nodes,
        "tasks_per_node": tasks,
        "gpus_per_node": settings.gpus,
        "cpus_per_task": settings.cpus_per_task,
        "mem_gb": settings.mem_gb,
        "slurm_partition": settings.partition,
        "slurm_account": settings.account,
        "slurm_qos": settings.qos,
        "slurm_array_parallelism": settings.array_parallelism,
        "slurm_signal_delay_s": settings.signal_delay_s,
        "slurm_additional_parameters": settings.additional or None,
    }
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return executor


def check_resources(checked: Sequence[CheckedRun], settings: SlurmSettings) -> None:
    """Each run's ``trainer.devices``/``num_nodes`` must match the job's GPUs and nodes."""
    problems = []
    for c in checked:
        devices = len(c.devices) if isinstance(c.devices, (list, tuple)) else c.devices
        devices_ok = settings.gpus == 0 or devices in ("auto", -1, settings.gpus)
        if not devices_ok or c.num_nodes != settings.nodes:
            problems.append(
                f"run {c.run.name}: trainer.devices={c.devices!r}, trainer.num_nodes="
                f"{c.num_nodes}, but each job gets {settings.gpus} GPUs on {settings.nodes} "
                f"node(s): pass -- --trainer.devices {settings.gpus} --trainer.num_nodes "
                f"{settings.nodes} (and a per-device --data.batch_size), or change --gpus/--nodes"
            )
    if problems:
        raise SweepError("\n".join(problems))


def launch_slurm(
    checked: Sequence[CheckedRun],
    settings: SlurmSettings,
    folder: Path,
    name: str,
    cluster: str | None = None,
    wait: bool = False,
    log: Callable[[str], None] = say,
) -> int:
    """Submit every unfinished run as one job array; with ``wait``, wait for all of them."""
    check_resources(checked, settings)
    todo = []
    for c in checked:
        state = run_state(c)
        if state.status == "finished":
            log(f"{c.run.name}: skip, {state.describe(c.max_steps)}")
        else:
            todo.append(c)
    if not todo:
        log("all runs finished")
        return 0
    executor = make_executor(folder, settings, name, cluster)
    # Time for motlab fit to finish its step and save before the job is killed: SLURM signals
    # signal_delay_s before the limit; submitit's local executor 30 s before.
    delay = LOCAL_SIGNAL_DELAY_S if cluster == "local" else settings.signal_delay_s
    grace = max(delay - 10, 5)
    cwd = os.getcwd()
    with executor.batch():
        jobs = [executor.submit(SweepJob(c, cwd, sys.executable, grace)) for c in todo]
    for c, job in zip(todo, jobs, strict=True):
        log(f"{c.run.name}: job {job.job_id}  (logs: {job.paths.stdout.parent})")
    if not wait:
        log(f"submitted {len(jobs)} jobs; relaunch the same command later to resubmit any "
            "that failed (finished runs are skipped)")  # fmt: skip
        return 0
    failed = 0
    for c, job in zip(todo, jobs, strict=True):
        try:
            job.result()
        except Exception as err:  # noqa: BLE001 - every job is reported
            failed += 1
            log(f"{c.run.name}: job {job.job_id} failed: {str(err).strip().splitlines()[-1]}")
    if failed:
        log(f"{failed} of {len(jobs)} jobs failed; relaunch the same command to resume them")
        return 1
    log(f"all {len(checked)} runs finished")
    return 0
