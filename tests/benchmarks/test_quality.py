"""benchmarks/quality.py: the planned commands parse, and the script runs end to end at a few
steps (tiny shapes), writes its results, skips finished runs and measures the transition."""

from __future__ import annotations

import importlib.util
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from jsonargparse import Namespace

from motlab.cli import MotCLI
from motlab.config import GPTConfig

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "quality.py"

spec = importlib.util.spec_from_file_location("motlab_bench_quality", SCRIPT)
assert spec is not None and spec.loader is not None
quality = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = quality  # dataclasses look their module up while it loads
spec.loader.exec_module(quality)

TINY = [
    *("--recipe", "d_model=32", "--recipe", "d_ff=64", "--recipe", "n_layers=2"),
    *("--recipe", "n_heads=2", "--recipe", "seq_len=16", "--recipe", "steps=3"),
    *("--recipe", "stage2_steps=2", "--recipe", "val_every=1", "--recipe", "val_batches=1"),
    *("--recipe", "warmup=1", "--recipe", "stage2_warmup=1", "--recipe", "checkpoint_every=3"),
    *("--recipe", "log_every=1"),
]


class ParseOnly(MotCLI):
    """``motlab fit``'s parser and nothing else: no data, no model, no run."""

    def _parse_ckpt_path(self) -> None:  # a planned run's checkpoints do not exist yet
        pass

    def before_instantiate_classes(self) -> None:
        pass

    def instantiate_classes(self) -> None:
        pass

    def after_instantiate_classes(self) -> None:
        pass

    def _run_subcommand(self, subcommand: str) -> None:
        pass


def _planned(*args: str) -> list[list[str]]:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--dry-run"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        timeout=120,
    ).stdout
    return [shlex.split(line) for line in out.splitlines() if " -m motlab fit " in line]


def test_medium_recipe_commands_parse_with_the_fit_parser(tmp_path, c4_dir, tokenizer_path):
    commands = _planned(
        "--scale",
        "medium",
        "--out",
        str(tmp_path / "runs"),
        "--data-path",
        str(c4_dir),
        "--tokenizer",
        str(tokenizer_path),
    )
    names = [c[c.index("--trainer.logger.init_args.name") + 1] for c in commands]
    for seed in (1, 2):
        for name in ("dense", "mot", "mot_32e_16", "token_choice", "expert_choice"):
            assert f"{name}_s{seed}" in names
        for name in ("two_stage", "two_stage_cal", "switch", "switch_cal"):
            assert f"{name}_s{seed}" in names
        for name in ("mot_bf16", "expert_choice_bf16"):
            assert f"{name}_s{seed}" in names
    assert names.index("mot_s1") < names.index("switch_s1")  # parents first
    for command, name in zip(commands, names, strict=True):
        cli = ParseOnly(args=command[3:])
        fit = cli.config.fit
        net = fit.model.net.as_dict()
        cfg = GPTConfig(**{k: v for k, v in net.items() if k != "vocab_size"})
        assert (cfg.d_model, cfg.n_layers, cfg.seq_len) == (512, 8, 256), name
        assert fit.data.batch_size == 64 and fit.data.val_batches == 20
        assert fit.model.compile is True
        assert fit.model.optim.lr == (2e-4 if "two_stage" in name else 7e-4)
        precision = "bf16-true" if "bf16" in name else "bf16-mixed"
        assert fit.trainer.precision == precision, name
        if name.startswith("switch"):
            assert fit.model.transition.switch_at == 600
            assert fit.trainer.max_steps == 660 and fit.model.optim.total_steps == 600
            assert fit.trainer.val_check_interval == 6  # ten points over the 60 steps
            assert fit.ckpt_path.endswith(f"mot_s{name[-1]}/version_0/checkpoints/last.ckpt")
        elif name.startswith("two_stage"):
            assert net["ffn"]["variant"] == "token_choice"
            assert fit.model.init_from.endswith("checkpoints/last.ckpt")
            assert fit.trainer.max_steps == 60 and fit.trainer.val_check_interval == 6
        else:
            assert fit.trainer.max_steps == 600 and fit.trainer.val_check_interval == 50
            assert fit.model.optim.warmup_steps == 50 and fit.model.optim.min_lr_ratio == 0.1
        calibrated = name.endswith("_cal_s1") or name.endswith("_cal_s2")
        if "two_stage" in name or name.startswith("switch"):
            expected = quality.TRANSITION_CALIBRATION if calibrated else "none"
            assert fit.model.transition.calibration == expected
        if name.startswith("mot_32e_16"):
            assert GPTConfig(**{**net, "vocab_size": 100}).ffn.expert_size(2048) == 128
    assert isinstance(cli.config, Namespace)


def test_ablation_runs_and_the_best_combination() -> None:
    runs = {r.name: r for r in quality.ablation_runs([1], None)}
    assert "dense_router_s1" not in runs  # the router scale leaves a dense model as it is
    assert {"mot_router_s1", "mot_experts_s1", "mot_rest_s1", "dense_rest_s1", "mot_tau_s1"} <= set(
        runs
    )
    assert "--model.net.init.router" in runs["mot_router_s1"].flags

    def row(loss: float) -> dict:
        return {"final_val_loss": loss}

    rows = {"mot_s1": row(5.0), "dense_s1": row(4.9), "mot_router_s1": row(4.8)}
    assert quality.best_factors(rows, [1]) is None  # not every one-factor run is done
    rows |= {"mot_experts_s1": row(5.1), "mot_rest_s1": row(4.7), "dense_rest_s1": row(4.5)}
    assert quality.best_factors(rows, [1]) == ["router"]  # rest: gap 0.2 > the paper's 0.1
    rows |= {"mot_rest_s1": row(5.05), "dense_rest_s1": row(5.0)}
    assert quality.best_factors(rows, [1]) == ["router"]  # rest: gap shrinks, dense worse
    rows |= {"mot_rest_s1": row(4.6), "dense_rest_s1": row(4.55)}
    assert quality.best_factors(rows, [1]) == ["router", "rest"]  # both better, gap smaller
    rows |= {"mot_s2": row(5.0), "dense_s2": row(4.9), "mot_router_s2": row(5.1)}
    rows |= {"mot_experts_s2": row(4.8), "mot_rest_s2": row(4.6), "dense_rest_s2": row(4.55)}
    assert quality.best_factors(rows, [1, 2]) == ["rest"]  # router and experts: one seed only
    best = {r.name: r for r in quality.ablation_runs([1], ["router", "experts"])}
    assert best["mot_32e_16_best_s1"].flags.count("--model.net.init.experts") == 1
    assert best["mot_best_s1"].setting == "best=router+experts"
    assert "dense_best_s1" not in best  # router and experts leave dense as it is
    best = {r.name: r for r in quality.ablation_runs([1], ["router", "rest"])}
    assert best["dense_best_s1"].flags.count("--model.net.init.head") == 1


def test_best_can_be_named(tmp_path, c4_dir, tokenizer_path) -> None:
    common = ["--scale", "cpu", "--out", str(tmp_path), "--data-path", str(c4_dir)]
    common += ["--tokenizer", str(tokenizer_path), "--results", str(tmp_path)]
    commands = _planned(*common, "--runs", "mot_best_s1", "--best", "router,experts")
    assert len(commands) == 1
    command = commands[0]
    assert command[command.index("--model.net.init.router") + 1] == "1.0"
    assert command[command.index("--model.net.init.experts") + 1] == "1.0"
    bad = subprocess.run(
        [sys.executable, str(SCRIPT), *common, "--best", "router,bias", "--dry-run"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "error: --best 'router,bias'" in bad.stderr


def test_the_script_end_to_end_at_a_few_steps(tmp_path, c4_dir, tokenizer_path) -> None:
    """dense, MoT/32E and the calibrated in-run switch from it, at 3 (+ 2) steps of a tiny
    model: results lines, compare CSV and figure, the conversion measurement; a second call
    skips every finished run."""
    results = tmp_path / "results"
    doc = tmp_path / "RESULTS.md"
    doc.write_text(
        "<!-- quality.py quality_cpu main -->\nuntouched?\n<!-- /quality.py -->\n"
        "<!-- quality.py quality_cpu transition -->\n<!-- /quality.py -->\n"
        "<!-- quality.py quality_cpu_f64 main -->\nuntouched\n<!-- /quality.py -->\n"
    )
    args = [
        sys.executable,
        str(SCRIPT),
        "--scale",
        "cpu",
        "--runs",
        "dense_s1,mot_s1,switch_cal_s1",
        "--seeds",
        "1",
        "--out",
        str(tmp_path / "runs"),
        "--results",
        str(results),
        "--data-path",
        str(c4_dir),
        "--tokenizer",
        str(tokenizer_path),
        "--results-md",
        str(doc),
        *TINY,
    ]
    first = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    rows = {
        r["run"]: r
        for r in map(json.loads, (results / "quality_cpu.jsonl").read_text().splitlines())
    }
    assert set(rows) == {"dense_s1", "mot_s1", "switch_cal_s1"}
    for name in ("dense_s1", "mot_s1"):
        r = rows[name]
        assert r["steps"] == 3 and r["tokens"] == 3 * 32 * 16 and r["precision"] == "32-true"
        assert [c[0] for c in r["curve"]] == [1, 2, 3]  # steps trained, as motlab counts
        assert r["final_val_loss"] == r["curve"][-1][1]
    switch = rows["switch_cal_s1"]
    assert switch["steps"] == 5 and switch["calibration"] == "standardise"
    assert switch["val_before"] == rows["mot_s1"]["final_val_loss"]
    assert switch["first_after_step"] == 1
    assert switch["spike"] == pytest.approx(switch["val_first_after"] - switch["val_before"])
    assert set(switch["dropped_fraction_first_step"]) == {"block1"}
    conversion = [json.loads(x) for x in (results / "quality_cpu_conversion.jsonl").open()]
    assert {c["calibration"] for c in conversion} == {"none", "centre", "standardise"}
    assert all(
        c["val_mot"] == pytest.approx(rows["mot_s1"]["final_val_loss"], abs=1e-3)
        for c in conversion
    )
    assert (results / "quality_cpu_s1.csv").is_file() and (results / "quality_cpu_s1.png").is_file()
    assert (results / "quality_cpu_transition.png").is_file()
    report = (results / "quality_cpu_report.md").read_text()
    assert "| MoT/32E |" in report and "| switch | 1 | standardise |" in report
    doc = tmp_path / "RESULTS.md"
    assert doc.read_text().count("| MoT/32E | ") == 1  # the main block, written by the script
    written = doc.read_text()
    assert "| switch | 1 | standardise |" in written
    assert "untouched?" not in written and "\nuntouched\n" in written  # another stem's block

    again = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert again.returncode == 0
    assert " -m motlab fit" not in again.stdout and "fit --config" not in again.stdout

    # --rebuild reads every finished run's line again from its logs, running nothing.
    lines = (results / "quality_cpu.jsonl").read_text()
    stale = {**rows["mot_s1"], "steps": 99, "curve": [[98, 1.0]], "final_val_loss": 1.0}
    (results / "quality_cpu.jsonl").write_text(
        "".join(json.dumps(stale if r == "mot_s1" else rows[r]) + "\n" for r in rows)
    )
    rebuilt = subprocess.run(
        [*args, "--rebuild"], capture_output=True, text=True, cwd=REPO, timeout=600
    )
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert "fit --config" not in rebuilt.stdout
    assert (results / "quality_cpu.jsonl").read_text() == lines


def _row(run: str, curve: list[tuple[int, float]], **kw) -> dict:
    return {
        "run": run, "seed": int(run[-1]), "final_val_loss": curve[-1][1],
        "curve": [list(c) for c in curve], "group": "main", "kind": "fit", **kw,
    }  # fmt: skip


def test_speedup_at_the_loss_both_reach() -> None:
    dense = _row("dense_s1", [(9, 6.0), (19, 5.0), (29, 4.0)])
    ahead = _row("mot_s1", [(9, 5.0), (19, 4.0), (29, 3.5)])  # at 4.0 in 20 steps, dense 30
    behind = _row("mot_s1", [(9, 6.0), (19, 5.5), (29, 5.0)])  # at 5.0 in 30 steps, dense 20
    assert quality.speedup_at_common_loss(dense, ahead) == pytest.approx(30 / 20)
    assert quality.speedup_at_common_loss(dense, behind) == pytest.approx(20 / 30)
    assert quality.speedup_at_common_loss(dense, dense) == pytest.approx(1.0)


def test_ablation_table_compares_each_setting_with_dense_at_that_setting(tmp_path) -> None:
    rows = {
        r["run"]: r
        for r in (
            _row("dense_s1", [(9, 5.0)]),
            _row("mot_s1", [(9, 5.2)]),
            _row("mot_experts_s1", [(9, 4.9)], group="ablation", setting="experts"),
            _row("mot_rest_s1", [(9, 5.5)], group="ablation", setting="rest"),
            _row("dense_rest_s1", [(9, 5.6)], group="ablation", setting="rest"),
        )
    }
    table = quality._ablation_table(rows, [1])
    lines = {line.split(" | ")[0]: line for line in table.splitlines()}
    assert "| 5.0000 | 5.2000 | +0.2000 |" in lines["| paper (0.1 everywhere)"]
    # experts leave dense as it is: the paper's dense run; rest changes it: its own.
    assert "| 5.0000 | 4.9000 | -0.1000 |" in lines["| experts 1.0"]
    assert "| 5.6000 | 5.5000 | -0.1000 |" in lines["| dense, attention, head 1.0"]
    assert not any(line.startswith("| router") for line in lines)  # not run: no row
    # A best combination of one factor is that factor's runs, MoT/32E/16 its own.
    best = _row("mot_32e_16_best_s1", [(9, 4.8)], group="ablation", setting="best=experts")
    table = quality._ablation_table({**rows, best["run"]: best}, [1])
    lines = {line.split(" | ")[0]: line for line in table.splitlines()}
    assert "| 5.0000 | 4.9000 | -0.1000 | -0.1000 | -0.2000 (s1) |" in lines["| best: experts 1.0"]
    quality.ablation_figure(rows, [1], 10, tmp_path / "ablation.png")
    assert (tmp_path / "ablation.png").stat().st_size > 0


def test_update_markdown_replaces_only_the_marked_blocks(tmp_path) -> None:
    doc = tmp_path / "RESULTS.md"
    end = quality.MARK_END
    doc.write_text(
        f"# R\n<!-- quality.py quality_cpu main -->\nold\n{end}\nprose\n"
        f"<!-- quality.py quality_cpu_f64 main -->\nkeep\n{end}\n"
    )
    done = quality.update_markdown(doc, "quality_cpu", {"main": "| new |\n", "ablation": "x\n"})
    assert done == ["main"]  # no ablation block: not written
    assert doc.read_text() == (
        f"# R\n<!-- quality.py quality_cpu main -->\n| new |\n{end}\nprose\n"
        f"<!-- quality.py quality_cpu_f64 main -->\nkeep\n{end}\n"
    )
    doc.write_text("<!-- quality.py quality_cpu main -->\nno end\n")
    with pytest.raises(SystemExit, match="has no"):
        quality.update_markdown(doc, "quality_cpu", {"main": "x\n"})
