"""The speed-up metric on synthetic curves with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from motlab.analysis import at_crossing, compare_runs, read_run, speedup, to_target
from motlab.analysis.speedup import crossing


def test_crossing_interpolates():
    values = np.array([5.0, 4.0, 3.0, 2.0])
    assert at_crossing([0, 10, 20, 30], values, 2.5) == pytest.approx(25.0)
    assert at_crossing([0, 10, 20, 30], values, 3.0) == pytest.approx(20.0)
    assert at_crossing([0, 10, 20, 30], values, 6.0) == 0.0  # already there at the first point
    assert at_crossing([0, 10, 20, 30], values, 1.0) is None
    # First crossing of a noisy curve, not a later one.
    assert crossing(np.array([5.0, 3.0, 4.0, 2.0]), 3.5) == (1, 0.75)


def test_speedup_is_two_with_interpolation(two_runs):
    dense, mot = two_runs
    result = speedup(dense, mot)
    assert result.target == pytest.approx(3.0)
    assert result.baseline.steps == pytest.approx(1000)
    assert result.candidate.steps == pytest.approx(500)  # between logged steps 450 and 600
    assert result.steps == pytest.approx(2.0)
    assert result.tokens == pytest.approx(2.0)
    assert result.candidate.tokens == pytest.approx(500 * 4096)
    assert result.wall_clock == pytest.approx(1.0)  # mot's steps take twice as long
    assert result.candidate.seconds == pytest.approx(1000.0)


def test_given_target_and_never_reached(two_runs):
    dense, mot = two_runs
    at_4 = speedup(dense, mot, target=4.0)
    assert at_4.baseline.steps == pytest.approx(500) and at_4.candidate.steps == pytest.approx(250)
    never = to_target(read_run(dense), target=1.0)
    assert never.steps is None and never.tokens is None and never.seconds is None
    assert speedup(dense, mot, target=1.5).steps is None  # dense never gets there


def test_compare_runs_rows(two_runs):
    rows = compare_runs(list(two_runs))
    assert [r["run"] for r in rows] == ["dense", "mot"]
    assert rows[0]["speedup_steps"] == pytest.approx(1.0)
    assert rows[1]["speedup_steps"] == pytest.approx(2.0)
    assert rows[1]["final_loss"] == pytest.approx(5 - 4 * 900 / 1000, rel=1e-6)
    assert rows[1]["steps_to_target"] == pytest.approx(500)
