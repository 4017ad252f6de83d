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


def test_compare_with_target(runs, capsys):
    assert main([str(p) for p in runs] + ["--target-loss", "4.0"]) == 0
    text = capsys.readouterr().out
    assert "target val/loss = 4.0000" in text and "first run" not in text
    dense = next(line for line in text.splitlines() if line.startswith("dense"))
    assert " 500 " in f" {dense} "


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
