"""The paper's speed-up metric: how much sooner a run reaches a target loss than a baseline.

"Steps to target" is the first point at which a loss curve reaches the target (≤), linearly
interpolated between the last logged point above the target and the first one at or below it.
The same crossing gives tokens (from the run's tokens per step or a logged tokens scalar) and
wall-clock seconds (the elapsed time of the logged points, see :mod:`motlab.analysis.runs`).

The speed-up of a candidate over a baseline is ``steps_baseline / steps_candidate`` at a target
loss — by default the baseline's final loss, as in the paper ("MoT reaches dense's final loss
in ⅓ of the steps"). A curve that is already at or below the target at its first logged point
counts that point's step (nothing can be said about the steps before it); a curve that never
reaches the target gives None.

Steps are TensorBoard step indices as logged. Lightning logs the metrics of the n-th optimiser
step (and a validation run after it) at index n - 1, while ``perf/tokens_seen`` counts all n
steps; on runs of a few dozen steps the step and token ratios therefore differ by a few
percent, on real runs not visibly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from motlab.analysis.runs import Run, as_run
from motlab.metrics import VAL_LOSS

DEFAULT_TAG = VAL_LOSS


def crossing(values: np.ndarray, target: float) -> tuple[int, float] | None:
    """Where ``values`` first reach ``target`` (≤), as (index i, fraction f) or None.

    The crossing lies at ``i - 1 + f`` in index space: f of the way from point i-1 to point i
    (i = 0, f = 1 when the first point is already at or below the target).
    """
    values = np.asarray(values, dtype=float)
    below = np.nonzero(values <= target)[0]
    if len(below) == 0:
        return None
    i = int(below[0])
    if i == 0:
        return 0, 1.0
    hi, lo = values[i - 1], values[i]
    return i, float((hi - target) / (hi - lo))


def at_crossing(xs: np.ndarray, values: np.ndarray, target: float) -> float | None:
    """The x (step, tokens, seconds, ...) at which ``values`` first reach ``target``."""
    where = crossing(values, target)
    if where is None:
        return None
    i, f = where
    xs = np.asarray(xs, dtype=float)
    if i == 0:
        return float(xs[0])
    return float(xs[i - 1] + f * (xs[i] - xs[i - 1]))


@dataclass(frozen=True)
class ToTarget:
    """When one run reached a target loss (None: never, or unknown)."""

    target: float
    steps: float | None
    tokens: float | None
    seconds: float | None


def to_target(run: Run | str, target: float, tag: str = DEFAULT_TAG) -> ToTarget:
    """Steps, tokens and wall-clock seconds ``run`` took to reach ``target`` on ``tag``."""
    run = as_run(run)
    s = run[tag]
    steps = at_crossing(s.steps, s.values, target)
    tokens = None
    if steps is not None:
        t = run.tokens_at(steps)
        tokens = None if t is None else float(t)
    seconds = at_crossing(s.elapsed, s.values, target)
    return ToTarget(target=target, steps=steps, tokens=tokens, seconds=seconds)


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b


@dataclass(frozen=True)
class SpeedUp:
    """How much sooner ``candidate`` reached ``target`` than ``baseline`` (ratios > 1: sooner)."""

    target: float
    baseline: ToTarget
    candidate: ToTarget

    @property
    def steps(self) -> float | None:
        """steps_baseline / steps_candidate — the paper's speed-up."""
        return _ratio(self.baseline.steps, self.candidate.steps)

    @property
    def tokens(self) -> float | None:
        return _ratio(self.baseline.tokens, self.candidate.tokens)

    @property
    def wall_clock(self) -> float | None:
        return _ratio(self.baseline.seconds, self.candidate.seconds)


def speedup(
    baseline: Run | str,
    candidate: Run | str,
    target: float | None = None,
    tag: str = DEFAULT_TAG,
) -> SpeedUp:
    """The speed-up of ``candidate`` over ``baseline`` at ``target`` (default: baseline's final)."""
    baseline, candidate = as_run(baseline), as_run(candidate)
    if target is None:
        target = baseline[tag].final
    return SpeedUp(target, to_target(baseline, target, tag), to_target(candidate, target, tag))


def compare_runs(
    runs: Sequence[Run | str], target: float | None = None, tag: str = DEFAULT_TAG
) -> list[dict[str, Any]]:
    """One row per run: final loss, steps/tokens/seconds to target, speed-ups vs ``runs[0]``.

    ``target`` defaults to the first run's final value of ``tag``.
    """
    loaded = [as_run(r) for r in runs]
    if not loaded:
        raise ValueError("compare_runs needs at least one run")
    baseline = loaded[0]
    if target is None:
        target = baseline[tag].final
    base = to_target(baseline, target, tag)
    rows = []
    for run in loaded:
        s = run[tag]
        mine = base if run is baseline else to_target(run, target, tag)
        su = SpeedUp(target, base, mine)
        rows.append(
            {
                "run": run.name,
                "final_step": int(s.steps[-1]),
                "final_loss": s.final,
                "target": target,
                "steps_to_target": mine.steps,
                "tokens_to_target": mine.tokens,
                "seconds_to_target": mine.seconds,
                "speedup_steps": su.steps,
                "speedup_tokens": su.tokens,
                "speedup_wall_clock": su.wall_clock,
            }
        )
    return rows
