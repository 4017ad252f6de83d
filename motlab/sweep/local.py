"""The ``local`` launcher: a sweep's runs one after another, each its own ``motlab fit`` process.

Relaunching the same command skips finished runs and resumes an interrupted one from its
``last.ckpt`` (``--ckpt_path last``: same version directory, same weights, optimiser, schedule
and data position). Ctrl-C reaches the running ``motlab fit`` too, which finishes its optimiser
step, saves it and writes out its logs; SIGTERM to the sweep is passed on to it likewise. A run
killed without a chance to save resumes from its last ``checkpoint.every_n_train_steps``
boundary, and trains the steps after it again, to the same result.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Sequence

from motlab.sweep.check import CheckedRun
from motlab.sweep.state import run_state

EXIT_INTERRUPTED = 130


def say(message: str) -> None:
    """Print at once, so that the lines land between the runs' own output."""
    print(message, flush=True)


class _Terminated(Exception):
    """The sweep process got SIGTERM."""


def _run_fit(args: Sequence[str], python: str) -> int:
    """Run ``motlab`` with ``args``; on Ctrl-C or SIGTERM let it checkpoint, then re-raise."""
    proc = subprocess.Popen([python, "-m", "motlab", *args])

    def on_sigterm(signum: int, frame: object) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return proc.wait()
    except (KeyboardInterrupt, _Terminated):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the save
        # Ctrl-C in a terminal reached the child as well (same process group); a signal sent to
        # this process alone did not. SIGTERM asks the child to stop either way, at once: one
        # that is already stopping takes it for the same stop (and still reports the Ctrl-C),
        # whereas a SIGTERM sent later, after a slow step, could find it past its handlers.
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait()
        raise KeyboardInterrupt from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def launch_local(
    checked: Sequence[CheckedRun],
    python: str = sys.executable,
    log: Callable[[str], None] = say,
) -> int:
    """Run every unfinished run in order; return 0 when all are finished.

    Stops at the first run that fails or stops short of its ``max_steps`` (1), or at Ctrl-C
    (130), saying how to go on.
    """
    n = len(checked)
    for i, c in enumerate(checked, 1):
        state = run_state(c)
        where = f"[{i}/{n}] {c.run.name}"
        if state.status == "finished":
            log(f"{where}: skip, {state.describe(c.max_steps)}")
            continue
        resume = state.status == "resume"
        log(f"{where}: {state.describe(c.max_steps)}\n  {c.run.command(resume)}")
        try:
            code = _run_fit(c.run.fit_args(resume), python)
        except KeyboardInterrupt:
            log(
                f"sweep interrupted during run {c.run.name}: run the same command again to "
                "resume it from its checkpoint"
            )
            return EXIT_INTERRUPTED
        after = run_state(c)
        if code != 0:
            log(
                f"run {c.run.name} failed (motlab fit exited with {code}); after a fix, run the "
                f"same command again to resume ({after.describe(c.max_steps)})"
            )
            return 1
        if after.status != "finished":
            log(
                f"run {c.run.name} stopped at step {after.step} of {c.max_steps}; run the same "
                "command again to resume it"
            )
            return 1
    log(f"all {n} runs finished")
    return 0
