"""Where a sweep run stands: not started, resumable from its ``last.ckpt``, or finished.

A run is finished when the checkpoint that ``--ckpt_path last`` would pick (the run
experiment's newest ``last.ckpt``, or the newest checkpoint that loads when that one is damaged)
holds ``trainer.max_steps`` optimiser steps — :class:`~motlab.callbacks.RunCheckpoint` writes it
at the end of training, and when the run is stopped. The checkpoint, not the exit status of
``motlab fit``, is what says how far it got.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from motlab.checkpoint import trained_steps
from motlab.rundir import resume_candidates
from motlab.sweep.check import CheckedRun
from motlab.sweep.spec import SweepError


@dataclass(frozen=True)
class RunState:
    status: Literal["start", "resume", "finished"]
    step: int = 0
    """Optimiser steps in the newest ``last.ckpt`` (0 without one)."""
    checkpoint: Path | None = None

    def describe(self, max_steps: int) -> str:
        if self.status == "start":
            return "start"
        if self.status == "resume":
            return f"resume from step {self.step} of {max_steps} ({self.checkpoint})"
        return f"finished ({self.step} steps)"


def run_state(checked: CheckedRun) -> RunState:
    """Where the run stands, by the checkpoint ``--ckpt_path last`` would resume: the first of
    :func:`motlab.rundir.resume_candidates` that loads (a damaged one is passed over, as
    ``motlab fit`` does; it checks the resumed file's CRCs too)."""
    candidates = resume_candidates(checked.experiment)
    damaged = []
    for path in candidates:
        try:
            step = trained_steps(path)
        except ValueError as e:
            damaged.append(str(e))
            continue
        status = "finished" if step >= checked.max_steps else "resume"
        return RunState(status, step, path)
    if damaged:
        lines = "\n  ".join(damaged)
        raise SweepError(
            f"run {checked.run.name}: no checkpoint in {checked.experiment} loads:\n  {lines}\n"
            "move the damaged files away to start the run afresh"
        )
    return RunState("start")
