"""The sweep report on synthetic runs with known answers: table, CSV, figure, compare --sweep."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from motlab.compare import main as compare_main
from motlab.sweep.report import build_report, read_manifest
from motlab.sweep.spec import SweepError, load_sweep, write_manifest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

from motlab.sweep.figure import plot_sweep  # noqa: E402

# val/loss = 5 - slope · step / 1000 for 1000 steps: dense ends at 3.0; E=8 gets there at step
# 800 (speed-up 1.25), E=32 at 500 (2.0); E=128 ends at 3.2 and never does.
SLOPES = {"dense": 2.0, "E=8": 2.5, "E=32": 4.0, "E=128": 1.8}


@pytest.fixture
def make_sweep(tbruns):
    """``make_sweep(dir, logged, axes)``: a sweep file and its manifest in ``dir``, and a
    logged run per entry of ``logged`` (name → slope); returns the sweep's directory."""
    return lambda *args: _make_sweep(tbruns, *args)


def _make_sweep(tb, tmp_path: Path, logged: dict[str, float] = SLOPES, axes: dict | None = None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "base.yaml").write_text("trainer:\n  max_steps: 1000\n")
    spec = {
        "config": "base.yaml",
        "axes": axes
        or {
            "E": {"model.net.ffn.n_experts": [8, 32, 128], "model.net.ffn.group_size": [8, 32, 128]}
        },
        "baselines": {"dense": {}},
    }
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    sweep = load_sweep(path)
    save_dir = tmp_path / "runs"
    runs = sweep.runs(save_dir=str(save_dir))
    write_manifest(sweep, runs, save_dir)
    for name, slope in logged.items():
        tb.write_curve(
            save_dir / name / "version_0", range(0, 1001, 100), lambda s, m=slope: 5 - m * s / 1000
        )
    return save_dir


def test_rows_give_final_loss_and_speedup_per_axis_value(tmp_path, make_sweep):
    report = build_report(read_manifest(make_sweep(tmp_path)), tmp_path / "runs")
    assert [r["run"] for r in report.rows] == ["dense", "E=8", "E=32", "E=128"]
    assert [r["baseline"] for r in report.rows] == [True, False, False, False]
    assert [r["E"] for r in report.rows] == [None, 8, 32, 128]
    assert [r["final_loss"] for r in report.rows] == pytest.approx([3.0, 2.5, 1.0, 3.2])
    speedups = [r["speedup_steps"] for r in report.rows]
    assert speedups[:3] == pytest.approx([1.0, 1.25, 2.0]) and speedups[3] is None
    assert report.reference == "dense" and not report.missing
    table = report.table().splitlines()
    assert table[0].split() == ["run", "E", "final", "step", "final", "val/loss", "steps", "to",
                                "target", "speed-up", "(steps)"]  # fmt: skip
    assert table[4].split()[:2] == ["E=32", "32"] and table[4].split()[-1] == "2"


def test_compare_sweep_writes_csv_and_figure_into_the_sweep_dir(tmp_path, capsys, make_sweep):
    save_dir = make_sweep(tmp_path, {k: v for k, v in SLOPES.items() if k != "E=128"})
    assert compare_main(["--sweep", str(save_dir)]) == 0
    out = capsys.readouterr().out
    assert "target val/loss = 3.0000 (dense's final)" in out
    assert "not run yet (no val/loss logged): E=128" in out
    with open(save_dir / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == ["dense", "E=8", "E=32"]
    assert {"run", "baseline", "E", "final_loss", "steps_to_target", "speedup_steps"} <= set(
        rows[0]
    )
    assert float(rows[2]["speedup_steps"]) == pytest.approx(2.0)
    assert (save_dir / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_given_target_loss(tmp_path, capsys, make_sweep):
    save_dir = make_sweep(tmp_path)
    assert (
        compare_main(
            ["--sweep", str(save_dir), "--target-loss", "4.0", "--csv", str(tmp_path / "t.csv")]
        )
        == 0
    )
    with open(tmp_path / "t.csv") as f:
        rows = {r["run"]: r for r in csv.DictReader(f)}
    # dense reaches 4.0 at step 500, E=128 at 555.6: speed-up 0.9.
    assert float(rows["E=128"]["speedup_steps"]) == pytest.approx(500 / (1000 / 1.8))
    assert "(given)" in capsys.readouterr().out


def test_figure_log_axis_labels_and_marked_baseline(tmp_path, make_sweep):
    report = build_report(read_manifest(make_sweep(tmp_path)), tmp_path / "runs")
    fig = plot_sweep(report)
    loss_ax, speed_ax = fig.axes
    for ax in (loss_ax, speed_ax):
        assert ax.get_xscale() == "log"  # a count of experts
        assert [t.get_text() for t in ax.get_xticklabels()] == ["8", "32", "128"]
        assert ax.get_xlabel() == "E = model.net.ffn.n_experts = model.net.ffn.group_size"
        assert ax.get_ylabel() and ax.get_title()
    assert loss_ax.get_ylabel() == "final val/loss"
    legend = [t.get_text() for t in loss_ax.get_legend().get_texts()]
    assert "dense (baseline): 3.000" in legend
    lines = {line.get_label(): line for line in loss_ax.get_lines()}
    assert list(lines["dense (baseline): 3.000"].get_ydata()) == [3.0, 3.0]
    assert list(lines["s"].get_xdata()) == [8, 32, 128]
    speed = {line.get_label(): line for line in speed_ax.get_lines()}
    assert list(speed["dense (baseline) = 1"].get_ydata()) == [1.0, 1.0]
    assert list(speed["s"].get_xdata()) == [8, 32]
    assert list(speed["s"].get_ydata()) == pytest.approx([1.25, 2.0])
    assert list(speed["never reached dense's final val/loss"].get_xdata()) == [128]
    fig.savefig(tmp_path / "sweep.png")


def test_two_axes_draw_one_line_per_value_of_the_other(tmp_path, make_sweep):
    axes = {"E": {"model.net.ffn.n_experts": [8, 32]}, "model.optim.lr": [0.001, 0.002]}
    logged = {"dense": 2.0, "E=8,lr=0.001": 2.5, "E=8,lr=0.002": 3.0, "E=32,lr=0.001": 4.0,
              "E=32,lr=0.002": 2.2}  # fmt: skip
    report = build_report(read_manifest(make_sweep(tmp_path, logged, axes)), tmp_path / "runs")
    fig = plot_sweep(report)
    assert len(fig.axes) == 4
    e_loss, _, lr_loss, _ = fig.axes
    assert e_loss.get_xscale() == "linear" and lr_loss.get_xscale() == "linear"  # 4× and 2× spans
    assert {line.get_label() for line in e_loss.get_lines()} >= {"lr=0.001", "lr=0.002"}
    assert {line.get_label() for line in lr_loss.get_lines()} >= {"E=8", "E=32"}


def test_report_without_a_baseline_or_any_logs(tmp_path, make_sweep):
    save_dir = make_sweep(tmp_path, {"E=8": 2.5, "E=32": 4.0})
    report = build_report(read_manifest(save_dir), save_dir)
    assert report.reference is None and report.missing == ["dense", "E=128"]
    assert all(r["speedup_steps"] is None for r in report.rows)
    plot_sweep(report)
    with pytest.raises(SweepError, match="has logged val/loss yet"):
        build_report(read_manifest(make_sweep(tmp_path / "empty", {})), tmp_path / "empty" / "runs")
    assert compare_main(["--sweep", str(tmp_path / "nowhere")]) == 2
