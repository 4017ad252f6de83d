"""Sweep files: expansion into named runs, their exact commands, and errors in the file."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from motlab.sweep.spec import SweepError, cli_value, format_value, load_sweep

SWEEPS = Path(__file__).resolve().parents[2] / "conf" / "sweeps"


def write(tmp_path: Path, spec: dict, name: str = "s.yaml") -> Path:
    (tmp_path / "base.yaml").write_text("trainer:\n  max_steps: 3\n")
    (tmp_path / "other.yaml").write_text("trainer:\n  max_steps: 5\n")
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_experts_sweep_zips_group_size_with_experts(monkeypatch):
    monkeypatch.chdir(SWEEPS.parents[1])
    runs = load_sweep(SWEEPS / "experts.yaml").runs()
    assert [r.name for r in runs] == ["dense", "E=8", "E=32", "E=128"]
    assert runs[0].baseline and runs[0].configs == ["conf/dense.yaml"]
    for run, e in zip(runs[1:], (8, 32, 128), strict=True):
        assert not run.baseline and run.configs == ["conf/mot.yaml"]
        assert run.values == {"E": e}
        assert run.settings == {"model.net.ffn.n_experts": e, "model.net.ffn.group_size": e}
        assert run.run_dir == Path("runs/sweeps/experts") / f"E={e}"


def test_granularity_sweep_names_runs_by_k(monkeypatch):
    monkeypatch.chdir(SWEEPS.parents[1])
    sweep = load_sweep(SWEEPS / "granularity.yaml")
    runs = sweep.runs()
    assert [r.name for r in runs] == ["dense", "k=1", "k=4", "k=16", "k=32"]
    assert [r.settings for r in runs[1:]] == [
        {"model.net.ffn.n_experts": 32 * k} for k in (1, 4, 16, 32)
    ]
    assert [a.log_scale for a in sweep.axes] == [True]


def test_the_command_merges_configs_overlays_flags_then_axes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(
        tmp_path,
        {
            "config": ["base.yaml"],
            "set": {"model.optim.warmup_steps": 2},
            "axes": {"model.optim.lr": [0.001, 0.0003], "E": {"model.net.ffn.n_experts": [8, 16]}},
            "baselines": {"dense": {"config": "other.yaml", "set": {"seed_everything": 1}}},
        },
    )
    runs = load_sweep(path).runs(
        overlays=["tiny.yaml"], extra_flags=["--data.path", "d"], save_dir="out"
    )
    assert [r.name for r in runs] == [
        "dense", "lr=0.001,E=8", "lr=0.001,E=16", "lr=0.0003,E=8", "lr=0.0003,E=16"
    ]  # fmt: skip
    assert shlex.split(runs[2].command(resume=True)) == [
        "motlab", "fit", "--config", "base.yaml", "--config", "tiny.yaml",
        "--model.optim.warmup_steps", "2", "--data.path", "d",
        "--model.optim.lr", "0.001", "--model.net.ffn.n_experts", "16",
        "--trainer.logger.init_args.save_dir", "out",
        "--trainer.logger.init_args.name", "lr=0.001,E=16",
        "--ckpt_path", "last",
    ]  # fmt: skip
    dense = runs[0]
    assert dense.configs == ["other.yaml", "tiny.yaml"]
    assert dense.settings == {"model.optim.warmup_steps": 2, "seed_everything": 1}
    assert "--ckpt_path" not in dense.fit_args()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"config": "base.yaml", "axes": {"a.b": [1]}, "baseline": {}}, r"unknown key.*baseline"),
        ({"axes": {"a.b": [1]}}, r"needs 'config'"),
        ({"config": "base.yaml"}, r"needs 'axes'"),
        ({"config": "missing.yaml", "axes": {"a.b": [1]}}, r"no config file missing\.yaml"),
        ({"config": "base.yaml", "axes": {"a.b": 3}}, r"axes\.a\.b: give a list"),
        ({"config": "base.yaml", "axes": {"a.b": []}}, r"non-empty list"),
        (
            {"config": "base.yaml", "axes": {"E": {"x.e": [8, 16], "x.g": [8]}}},
            r"axes\.E: zipped lists .* lengths",
        ),
        (
            {"config": "base.yaml", "axes": {"x.e": [1, 2], "E": {"x.e": [3, 4]}}},
            r"x\.e is already swept by axis 'e'",
        ),
        ({"config": "base.yaml", "axes": {"x.lr": [0.1, 0.10]}}, r"several runs are named"),
        ({"config": "base.yaml", "axes": {"E": {"scale": "log"}}}, r"names no config key"),
        ({"config": "base.yaml", "axes": {"E": {"x.e": [8], "scale": "ln"}}}, r"'log' or"),
        (
            {"config": "base.yaml", "axes": {"a.b": [1]}, "baselines": {"d": {"confg": "x"}}},
            r"baselines\.d: unknown key.*confg",
        ),
        ({"config": "base.yaml", "axes": {"a.b": [1]}, "slurm": {"gpu": 2}}, r"slurm: unknown"),
        (
            {"config": "base.yaml", "axes": {"a.b": [1]}, "slurm": {"gpus": "two"}},
            r"(?s)slurm: .*gpus.*Expected a <class 'int'>",
        ),
    ],
)
def test_malformed_sweep_files_are_named(tmp_path, monkeypatch, spec, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SweepError, match=message):
        load_sweep(write(tmp_path, spec)).runs()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--model.net.ffn.n_experts", "4"], r"sets model\.net\.ffn\.n_experts.*axis 'E'"),
        (["--model.net.ffn.n_experts=4"], r"axis 'E'"),
        (["--trainer.logger.init_args.name", "x"], r"set by the sweep itself"),
        (["--ckpt_path", "last"], r"set by the sweep itself"),
    ],
)
def test_extra_flags_may_not_set_what_the_sweep_owns(tmp_path, monkeypatch, flags, message):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, {"config": "base.yaml", "axes": {"E": {"model.net.ffn.n_experts": [8]}}})
    with pytest.raises(SweepError, match=message):
        load_sweep(path).runs(extra_flags=flags)


def test_values_in_names_and_on_the_command_line():
    assert [format_value(v) for v in (8, 7e-4, True, None, "a b/c", [1, 2])] == [
        "8", "0.0007", "true", "null", "a_b_c", "_1_2_"
    ]  # fmt: skip
    assert [cli_value(v) for v in (8, 7e-4, 1e-5, True, None, "mot", "8", [0.9, 0.95])] == [
        "8", "0.0007", "1e-05", "true", "null", "mot", '"8"', "[0.9, 0.95]"
    ]  # fmt: skip
