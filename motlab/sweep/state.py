"""Where a sweep run stands: not started, resumable from its ``last.ckpt``, or finished.

A run is finished when the ``last.ckpt`` that ``--ckpt_path last`` would pick
(:func:`motlab.cli.find_last_checkpoint`) holds ``trainer.max_steps`` optimiser steps —
:class:`~motlab.callbacks.RunCheckpoint` writes it again at the end of training. The exit status
of ``motlab fit`` does not tell: a run stopped by SIGTERM exits with 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

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


def checkpoint_step(path: Path) -> int:
    """``global_step`` of a Lightning checkpoint, without loading its tensors."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - an older pickle; fall back to a full load
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return int(ckpt.get("global_step", 0))


def run_state(checked: CheckedRun) -> RunState:
    from motlab.cli import find_last_checkpoint

    try:
        last = find_last_checkpoint(checked.resume_config)
    except FileNotFoundError:
        return RunState("start")
    step = checkpoint_step(last)
    status = "finished" if step >= checked.max_steps else "resume"
    return RunState(status, step, last)
