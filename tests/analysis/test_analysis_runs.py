"""Reading TensorBoard runs: merging versions/event files, elapsed time, tokens, tables."""

from __future__ import annotations

import numpy as np
import pytest

from motlab.analysis import find_runs, format_table, read_run, scalars_table, to_frame
from motlab.analysis.runs import infer_tokens_per_step


def test_read_run_values_and_tokens(two_runs):
    dense, _ = two_runs
    run = read_run(dense)
    assert run.name == "dense"
    s = run["val/loss"]
    np.testing.assert_array_equal(s.steps, np.arange(0, 1001, 100))
    np.testing.assert_allclose(s.values, 5 - 2 * s.steps / 1000, rtol=1e-6)
    np.testing.assert_allclose(s.elapsed, s.steps * 1.0)
    assert run.tokens_per_step == 16 * 256
    np.testing.assert_allclose(run.tokens_at(s.steps), s.steps * 4096.0)
    assert s.final == pytest.approx(3.0)
    with pytest.raises(KeyError, match="val/loss"):
        run["train/nope"]


def test_resumed_run_merges_versions(tmp_path, tbruns):
    """version_1 resumes at step 300 after a crash at 450: later points win, gaps don't count."""
    root = tmp_path / "run"
    tbruns.write_curve(root / "version_0", range(0, 451, 50), lambda s: 10.0)
    resume_t0 = tbruns.T0 + 10_000  # an hour-long pause before the resume
    tbruns.write_curve(root / "version_1", range(300, 601, 50), lambda s: 1.0, t0=resume_t0)
    run = read_run(root)
    s = run["val/loss"]
    np.testing.assert_array_equal(s.steps, np.arange(0, 601, 50))
    assert (s.values[s.steps < 300] == 10.0).all() and (s.values[s.steps >= 300] == 1.0).all()
    # Elapsed: version_0 spans 450 s, version_1 (steps 300..600) another 300 s; the pause
    # between them does not count.
    assert s.elapsed[-1] == pytest.approx(450 + 300)
    assert s.elapsed[s.steps == 300][0] == pytest.approx(450)
    assert (np.diff(s.wall_time) != 0).all()
    # One version only.
    only = read_run(root, version=0)
    assert only["val/loss"].steps[-1] == 450 and only.name == "run"
    assert sorted(p.name for p in find_runs(root)) == ["version_0", "version_1"]
    assert read_run(root / "version_1").name == "run/version_1"


def test_tokens_from_logged_scalar(tmp_path, tbruns):
    root = tbruns.write_curve(
        tmp_path / "r", range(0, 101, 10), lambda s: 1.0, extra={"train/tokens": lambda s: 8 * s}
    )
    run = read_run(root)
    assert run.tokens_per_step is None
    assert float(run.tokens_at(25.0)) == pytest.approx(200.0)
    assert float(run.tokens_at(150.0)) == pytest.approx(1200.0)  # past the last point: same rate


def test_tables(two_runs):
    rows = scalars_table(two_runs, tags=["val/loss"])
    assert len(rows) == 11 + 7
    assert set(rows[0]) == {"run", "tag", "step", "value", "wall_time", "elapsed", "tokens"}
    assert rows[-1]["run"] == "mot" and rows[-1]["tokens"] == 900 * 4096
    text = format_table(rows[:3], ["run", "step", "value"])
    assert text.splitlines()[0].split() == ["run", "step", "value"]
    pd = pytest.importorskip("pandas")
    frame = to_frame(rows)
    assert isinstance(frame, pd.DataFrame) and len(frame) == len(rows)


def test_missing_runs(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run directory"):
        read_run(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="event files"):
        read_run(tmp_path / "empty")


def test_tokens_per_step_from_lightning_cli_config():
    config = {
        "data": {"init_args": {"batch_size": 8, "seq_len": 128}},
        "trainer": {"accumulate_grad_batches": 2, "devices": 4, "num_nodes": 1},
    }
    assert infer_tokens_per_step(config) == 8 * 128 * 2 * 4
    assert infer_tokens_per_step({"data": {"batch_size": 8}}) is None
