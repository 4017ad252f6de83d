"""Save checkpoints through motlab's writer as fast as it can, until killed.

Run by ``tests/test_kill_resume.py`` and killed with SIGKILL at random moments:

    python tests/scripts/save_loop.py CHECKPOINT_DIR

Each step writes ``step=NNNNNNN.ckpt`` and ``last.ckpt`` (as ``motlab fit`` does, through
:class:`motlab.checkpoint_io.DurableCheckpointIO`), removes the step checkpoint two steps back,
and then prints the step: a printed step was saved whole. A restart continues after the newest
intact checkpoint, as ``--ckpt_path auto`` does. Nearly all of its time is spent writing, so a
kill mostly lands mid-write.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from motlab.checkpoint import newest_intact_checkpoint, trained_steps
from motlab.checkpoint_io import DurableCheckpointIO

NUMEL = 4_000_000
"""Floats in the checkpoint (16 MB): a write long enough to be killed in."""


def main() -> None:
    directory = Path(sys.argv[1])
    found = newest_intact_checkpoint(directory)
    step = 0 if found is None else trained_steps(found.path)
    io = DurableCheckpointIO()
    print("ready", flush=True)
    while True:
        step += 1
        checkpoint = {"state_dict": {"w": torch.full((NUMEL,), float(step))}, "global_step": step}
        io.save_checkpoint(checkpoint, directory / f"step={step:07d}.ckpt")
        io.save_checkpoint(checkpoint, directory / "last.ckpt")
        old = directory / f"step={step - 2:07d}.ckpt"
        if old.exists():
            io.remove_checkpoint(old)
        print(step, flush=True)


if __name__ == "__main__":
    main()
