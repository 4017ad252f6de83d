"""Reading TensorBoard runs: merging versions/event files, elapsed time, tokens, tables."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from motlab.analysis import find_runs, format_table, read_run, scalars_table, to_frame
from motlab.analysis.runs import SeparateRunsWarning, infer_tokens_per_step


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


def test_resume_in_one_version_merges_its_event_files(tmp_path, tbruns):
    """motlab's own resume (``--ckpt_path last``) logs a second event file into the same
    version directory, re-doing the steps after the checkpoint: later points win, gaps don't
    count."""
    root = tmp_path / "run"
    tbruns.write_curve(root / "version_0", range(0, 451, 50), lambda s: 10.0)
    resume_t0 = tbruns.T0 + 10_000  # an hour-long pause before the resume
    tbruns.write_curve(root / "version_0", range(300, 601, 50), lambda s: 1.0, t0=resume_t0)
    assert len(list((root / "version_0").glob("events.out.tfevents.*"))) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is left out
        run = read_run(root)
    s = run["val/loss"]
    np.testing.assert_array_equal(s.steps, np.arange(0, 601, 50))
    assert (s.values[s.steps < 300] == 10.0).all() and (s.values[s.steps >= 300] == 1.0).all()
    # Elapsed: the first file spans 450 s, the second (steps 300..600) another 300 s; the pause
    # between them does not count.
    assert s.elapsed[-1] == pytest.approx(450 + 300)
    assert s.elapsed[s.steps == 300][0] == pytest.approx(450)
    assert (np.diff(s.wall_time) != 0).all()
    assert run.versions == ["version_0"] and run.left_out == []


def test_separate_runs_in_versions_read_the_newest(tmp_path, tbruns):
    """The README's commands run three times: version_0..2 each start at step 0. They are three
    runs, not one resumed run: only the newest is read, and the others are named."""
    root = tmp_path / "mot"
    for v, (sps, loss) in enumerate([(1.0, 9.0), (2.0, 8.0), (3.0, 7.0)]):
        t0 = tbruns.T0 + 100_000 * v
        tbruns.write_curve(
            root / f"version_{v}", range(0, 21), lambda s, x=loss: x, seconds_per_step=sps, t0=t0
        )
    with pytest.warns(SeparateRunsWarning, match=r"left out version_0 .*; version_1 ") as record:
        run = read_run(root)
    assert "version_2" in str(record[0].message)
    s = run["val/loss"]
    np.testing.assert_array_equal(s.steps, np.arange(0, 21))
    assert (s.values == 7.0).all()
    assert s.elapsed[-1] == pytest.approx(20 * 3.0)  # version_2's own wall-clock, not the sum
    assert run.versions == ["version_2"] and run.left_out == ["version_0", "version_1"]
    assert run.name == "mot"
    # version= still reads exactly one version, with nothing to warn about.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = read_run(root, version=0)
    assert (first["val/loss"].values == 9.0).all() and first.left_out == []
    assert read_run(root / "version_1")["val/loss"].elapsed[-1] == pytest.approx(40.0)


def test_a_version_continuing_past_the_previous_one_is_a_resume(tmp_path, tbruns):
    """version_2 starts after version_1's last step: one resumed run (version_1 + version_2).
    version_1 restarted at 0, below version_0's end: version_0 is another run."""
    root = tmp_path / "run"
    tbruns.write_curve(root / "version_0", range(0, 101, 10), lambda s: 9.0)
    tbruns.write_curve(root / "version_1", range(0, 451, 50), lambda s: 5.0, t0=tbruns.T0 + 1e4)
    tbruns.write_curve(root / "version_2", range(500, 701, 50), lambda s: 4.0, t0=tbruns.T0 + 2e4)
    with pytest.warns(SeparateRunsWarning, match="version_0"):
        run = read_run(root)
    s = run["val/loss"]
    np.testing.assert_array_equal(s.steps, np.arange(0, 701, 50))
    assert (s.values[s.steps <= 450] == 5.0).all() and (s.values[s.steps >= 500] == 4.0).all()
    assert s.elapsed[-1] == pytest.approx(450 + 200)
    assert run.versions == ["version_1", "version_2"] and run.left_out == ["version_0"]


def test_a_version_starting_at_or_below_the_previous_end_is_another_run(tmp_path, tbruns):
    """Steps that overlap the version before (here from 300, after it logged up to 450) do not
    continue it: only the newest version is read (pass version= for the other)."""
    root = tmp_path / "run"
    tbruns.write_curve(root / "version_0", range(0, 451, 50), lambda s: 10.0)
    tbruns.write_curve(root / "version_1", range(450, 601, 50), lambda s: 1.0, t0=tbruns.T0 + 1e4)
    with pytest.warns(SeparateRunsWarning, match="version_0"):
        run = read_run(root)
    np.testing.assert_array_equal(run["val/loss"].steps, np.arange(450, 601, 50))
    assert run.left_out == ["version_0"]


def test_saved_config_tells_a_fresh_run_from_a_resume(tmp_path, tbruns):
    """A tiny run (steps 0-20) then a full run logging from step 49: the steps alone look like a
    resume, but the full run's saved ``config.yaml`` says ``ckpt_path: null`` (not resumed)."""
    root = tmp_path / "run"
    tbruns.write_curve(root / "version_0", range(0, 21), lambda s: 9.0)
    tbruns.write_curve(root / "version_1", range(49, 1000, 50), lambda s: 4.0, t0=tbruns.T0 + 1e4)
    (root / "version_1" / "config.yaml").write_text("ckpt_path: null\n")
    with pytest.warns(SeparateRunsWarning, match="version_0"):
        run = read_run(root)
    assert run["val/loss"].steps[0] == 49 and run.left_out == ["version_0"]
    # Resumed from a checkpoint (saved with another checkpoint.dirpath): one run.
    (root / "version_1" / "config.yaml").write_text("ckpt_path: ckpts/last.ckpt\n")
    run = read_run(root)
    assert run["val/loss"].steps[0] == 0 and run.versions == ["version_0", "version_1"]


def test_versions_are_ordered_by_time_not_by_name(tmp_path, tbruns):
    """version_10 is newer than version_9 (a name sort would say otherwise)."""
    root = tmp_path / "run"
    tbruns.write_curve(root / "version_9", range(0, 21), lambda s: 9.0)
    tbruns.write_curve(root / "version_10", range(0, 21), lambda s: 3.0, t0=tbruns.T0 + 1e4)
    with pytest.warns(SeparateRunsWarning, match="version_9"):
        run = read_run(root)
    assert (run["val/loss"].values == 3.0).all() and run.versions == ["version_10"]


def test_an_evaluation_version_neither_hides_the_run_nor_merges_into_it(tmp_path, tbruns):
    """``motlab validate --ckpt_path ...`` logs val/loss at step 0 into a version of its own:
    the training run before it is still the run read, and its step-0 point stays its own."""
    root = tmp_path / "run"
    tbruns.write_curve(root / "version_0", range(0, 21), lambda s: 9.0 - 0.1 * s)
    tbruns.write_curve(root / "version_1", [0], lambda s: 7.0, t0=tbruns.T0 + 1e4)
    tbruns.write_curve(root / "version_2", range(0, 11), lambda s: 5.0, t0=tbruns.T0 + 2e4)
    tbruns.write_curve(root / "version_3", [0], lambda s: 4.0, t0=tbruns.T0 + 3e4)
    with pytest.warns(SeparateRunsWarning, match="version_3 "):
        run = read_run(root)
    assert run.versions == ["version_2"]
    assert run.left_out == ["version_0", "version_1", "version_3"]
    assert (run["val/loss"].values == 5.0).all()


def test_find_runs_and_names(tmp_path, tbruns):
    root = tmp_path / "run"
    tbruns.write_curve(root / "version_0", range(0, 451, 50), lambda s: 10.0)
    tbruns.write_curve(root / "version_1", range(500, 601, 50), lambda s: 1.0, t0=tbruns.T0 + 1e4)
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
