"""Where a sweep run stands: not started, resumable from its ``last.ckpt``, or finished.

A run is finished when the ``last.ckpt`` that ``--ckpt_path last`` would pick
(:func:`motlab.rundir.resume_checkpoint` of the run's experiment) holds ``trainer.max_steps``
optimiser steps — :class:`~motlab.callbacks.RunCheckpoint` writes it at the end of training,
and when the run is stopped. The checkpoint, not the exit status of ``motlab fit``, is what
says how far it got.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from motlab.checkpoint import trained_steps
from motlab.rundir import resume_checkpoint
from motlab.sweep.check import CheckedRun


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
    last = resume_checkpoint(checked.experiment)
    if last is None:
        return RunState("start")
    step = trained_steps(last)
    status = "finished" if step >= checked.max_steps else "resume"
    return RunState(status, step, last)
