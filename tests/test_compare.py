"""``motlab compare`` on synthetic runs: the table and the plot."""

from __future__ import annotations

import pytest

from motlab.compare import main


@pytest.fixture
def runs(tmp_path, tbruns):
    return tbruns.baseline_and_twice_as_fast(tmp_path)


def test_compare_prints_table_and_writes_plot(runs, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "cmp.png"
    csv = tmp_path / "cmp.csv"
    assert main([str(p) for p in runs] + ["--plot", str(out), "--csv", str(csv)]) == 0
    text = capsys.readouterr().out
    assert "target val/loss = 3.0000" in text
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("run"))
    assert "speed-up (steps)" in header and "tokens to target" in header
    mot = next(line for line in lines if line.startswith("mot"))
    assert mot.split()[-3:] == ["2.00", "2.00", "1.00"]  # speed-up in steps, tokens, wall-clock
    assert out.stat().st_size > 10_000 and out.read_bytes()[:4] == b"\x89PNG"
    assert csv.read_text().splitlines()[0].startswith("run,final_step,final_loss")


def test_compare_creates_the_directories_of_its_outputs(runs, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    plot, csv = tmp_path / "figs" / "a" / "cmp.png", tmp_path / "tables" / "cmp.csv"
    assert main([str(p) for p in runs] + ["--plot", str(plot), "--csv", str(csv)]) == 0
    assert plot.read_bytes()[:4] == b"\x89PNG" and csv.read_text().startswith("run,")
    (tmp_path / "taken").write_text("a file")
    assert main([str(p) for p in runs] + ["--csv", str(tmp_path / "taken" / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert f"motlab compare: error: cannot write {tmp_path / 'taken' / 'x.csv'}" in err


def test_compare_with_target(runs, capsys):
    assert main([str(p) for p in runs] + ["--target-loss", "4.0"]) == 0
    text = capsys.readouterr().out
    assert "target val/loss = 4.0000" in text and "first run" not in text
    dense = next(line for line in text.splitlines() if line.startswith("dense"))
    assert " 500.0 " in f" {dense} "  # steps to target: interpolated, one decimal


def test_compare_errors(runs, tmp_path, capsys):
    assert main([str(runs[0]), str(tmp_path / "missing")]) == 2
    assert "no run directory" in capsys.readouterr().err
    assert main([str(runs[0]), "--tag", "val/nope"]) == 2
    assert "val/nope" in capsys.readouterr().err


def test_compare_reads_the_newest_of_separate_runs_and_says_so(runs, tbruns, capsys):
    """runs/mot trained three times (version_0..2, each from step 0): compare uses the newest
    run only, not three runs' wall-clock added up, and names the versions left out."""
    dense, mot = runs
    for v in (1, 2):
        tbruns.write_curve(
            mot / f"version_{v}",
            range(0, 1001, 150),
            lambda s: 5 - 4 * s / 1000,
            seconds_per_step=2.0,
            t0=tbruns.T0 + 10_000 * v,
        )
        (mot / f"version_{v}" / "config.yaml").write_text(
            (mot / "version_0/config.yaml").read_text()
        )
    assert main([str(dense), str(mot)]) == 0
    text = capsys.readouterr().out
    assert f"{mot}: read version_2; left out version_0, version_1" in text
    row = next(line for line in text.splitlines() if line.startswith("mot"))
    assert row.split()[-3:] == ["2.00", "2.00", "1.00"]  # speed-up in steps, tokens, wall-clock


def test_steps_to_target_are_printed_as_python_gives_them(runs, capsys):
    """Interpolated steps to the target, one decimal (34.55 was printed 35)."""
    from motlab.analysis import compare_runs

    rows = compare_runs([str(p) for p in runs], target=3.3333)
    assert main([str(p) for p in runs] + ["--target-loss", "3.3333"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for row in rows:
        line = next(line for line in lines if line.startswith(row["run"]))
        steps = row["steps_to_target"]
        assert steps != round(steps) and f" {steps:,.1f} " in f" {line} "


def test_a_real_run_is_read_in_steps_trained(tmp_path, monkeypatch, c4_dir, tokenizer_path, capsys):
    """One convention: the run that says "after step 4" is 4 steps in compare and in Python,
    beside the 4 × 512 tokens it trained (TensorBoard's index of that step is 3)."""
    from pathlib import Path

    from motlab.analysis import read_run
    from motlab.cli import cli_main

    conf = Path(__file__).resolve().parents[1] / "conf"
    monkeypatch.chdir(tmp_path)
    cli = cli_main(
        ["fit", "--config", str(conf / "dense.yaml"), "--config", str(conf / "tiny.yaml"),
         "--data.path", str(c4_dir), "--data.tokenizer", str(tokenizer_path),
         "--data.seq_len", "16", "--data.num_workers", "0", "--data.val_batches", "1",
         "--trainer.max_steps", "4", "--trainer.val_check_interval", "2",
         "--trainer.enable_progress_bar", "false"]
    )  # fmt: skip
    assert cli.trainer.global_step == 4
    run = read_run(tmp_path / "runs/dense")
    assert list(run["val/loss"].steps) == [2, 4] and list(run["train/loss"].steps) == [1, 2, 3, 4]
    assert run.tokens_per_step == 32 * 16
    assert run.tokens_at(4.0) == 4 * 512 == run["perf/tokens_seen"].values[-1]
    assert main([str(tmp_path / "runs/dense")]) == 0
    dense = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("dense"))
    assert dense.split()[1:5] == ["4", f"{run['val/loss'].final:.4f}", "4.0", "2,048"]
