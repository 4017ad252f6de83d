"""Quality runs: does MoT learn faster than dense at equal compute, and what does transition do?

    python benchmarks/quality.py --scale cpu [--runs main|ablation|all|NAME,...] [--seeds 1,2]
        [--out runs/quality_cpu] [--results benchmarks/results] [--dry-run] [--list]
        [--steps N] [--tag TAG] [-- EXTRA_FIT_FLAGS]
    python benchmarks/quality.py --scale medium --dry-run     # the GPU recipe's commands

Every run is a real ``motlab fit`` (a subprocess, ``python -m motlab fit``) from the variant's
``conf/*.yaml`` and an overlay this script writes for the recipe; results are read back with
``motlab.analysis`` and ``motlab compare``. Finished runs (a line in the results file made with
the same recipe) are skipped; an interrupted run resumes from its ``last.ckpt``. So the script can
be stopped and started again, and the main set and the initialisation ablation share it.

Recipes (``--scale``):

* ``cpu``: two CPU cores. A byte-level BPE of 4,096 tokens trained on the training split of the
  local C4 sample (made on first use with ``tokenizers``, cached in ``--out``), d_model 128,
  d_ff 512, 4 blocks with blocks 2-3 routed, 500 steps of 32 × 64 tokens, fp32; ``CPU`` below
  and benchmarks/RESULTS.md "Quality" say why each number is what it is.
* ``medium``: the paper-shaped single-GPU recipe: GPT-medium, per-device batch 64 × seq 256,
  600 steps, AdamW 7e-4, warm-up 50, cosine to 10 %, validation every 50 steps on 20 batches,
  bf16-mixed, compiled; GPT-2's tokenizer.

Runs (``--runs``; ``--list`` prints them): ``main`` = dense, MoT/32E, MoT/32E/16, token choice and
expert choice at every seed; transition from each seed's MoT/32E run: two-stage (a token-choice
run started from its last checkpoint, ``model.init_from``) and the in-run switch (the MoT/32E run
resumed with ``model.transition.switch_at``), each plain and with router calibration; at
``medium`` also pure bf16 (``bf16-true``) MoT/32E and expert choice. ``ablation`` (cpu) = the
initialisation ablation: per-part scales of ``model.net.init`` one at a time, MoT's temperature
as the other lever, and the best combination.

Outputs: ``RESULTS/quality_{scale}{tag}.jsonl`` (one line per run: run, variant, seed, steps,
tokens, precision, final_val_loss, curve as [step, val_loss] pairs, and what else was measured),
``..._conversion.jsonl`` (routing right after converting each seed's MoT, measured in-process
with and without calibration), ``motlab compare`` CSVs and figures per seed, and
``..._report.md``, the tables of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import json
import math
import os
import resource
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VAL_TAG = "val/loss"
EOT = "<|endoftext|>"


# ------------------------------------------------------------------------------------ recipes


@dataclass(frozen=True)
class Recipe:
    """What every run of one scale shares (the variants' own keys come from ``conf/``)."""

    scale: str
    d_model: int | None
    d_ff: int | None
    n_layers: int | None
    n_heads: int | None
    size: str | None
    moe_blocks: str
    seq_len: int
    batch_size: int
    steps: int
    lr: float
    warmup: int
    min_lr_ratio: float
    val_every: int
    val_batches: int
    precision: str
    compile: bool
    gradient_clip: float | None
    vocab: int | None
    """BPE vocabulary trained by this script; None = ``tokenizer`` as given."""
    tokenizer: str
    stage2_steps: int
    stage2_lr: float
    stage2_warmup: int
    log_every: int
    checkpoint_every: int
    num_workers: int

    def key(self) -> str:
        """A short hash of the recipe: results made with another recipe are not reused."""
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len


CPU = Recipe(
    scale="cpu",
    size=None,
    d_model=128,
    d_ff=512,
    n_layers=4,
    n_heads=4,
    moe_blocks="second_half",  # blocks 2-3, the paper's placement
    seq_len=64,
    batch_size=32,  # one MoT / expert-choice group of 32: 2,048 tokens a step
    steps=500,
    lr=2e-3,
    warmup=50,
    min_lr_ratio=0.1,
    val_every=50,
    val_batches=32,  # 65,536 validation tokens
    precision="32-true",
    compile=False,  # compiling costs more than it saves on short CPU runs
    gradient_clip=None,  # conf/tiny.yaml: at a few thousand tokens a step 0.5 clips every step
    vocab=4096,
    tokenizer="bpe",
    stage2_steps=100,
    stage2_lr=2e-3 * 2 / 7,  # conf/transition.yaml's ratio: 2e-4 after 7e-4
    stage2_warmup=10,
    log_every=10,
    checkpoint_every=100,
    num_workers=0,  # tokenizing a 4k BPE costs a few % of a step: no second process
)
"""Chosen by measurement: benchmarks/RESULTS.md "Quality", "The CPU recipe"."""

MEDIUM = Recipe(
    scale="medium",
    size="medium",
    d_model=None,
    d_ff=None,
    n_layers=None,
    n_heads=None,
    moe_blocks="second_half",
    seq_len=256,
    batch_size=64,
    steps=600,
    lr=7e-4,
    warmup=50,
    min_lr_ratio=0.1,
    val_every=50,
    val_batches=20,
    precision="bf16-mixed",
    compile=True,
    gradient_clip=0.5,
    vocab=None,
    tokenizer="gpt2",
    stage2_steps=60,
    stage2_lr=2e-4,
    stage2_warmup=5,
    log_every=10,
    checkpoint_every=100,
    num_workers=4,
)

RECIPES = {"cpu": CPU, "medium": MEDIUM}


# --------------------------------------------------------------------------------------- runs

VARIANTS: dict[str, tuple[str, list[str]]] = {
    "dense": ("dense.yaml", []),
    "mot": ("mot.yaml", []),
    # FLOP-matched at any d_ff (the config pins d_expert 128 for d_ff 2048).
    "mot_32e_16": ("mot_32e_16.yaml", ["--model.net.ffn.d_expert", "null"]),
    "token_choice": ("token_choice.yaml", []),
    "expert_choice": ("expert_choice.yaml", []),
}
"""Variant → (its conf/ file, flags)."""

VARIANT_LABELS = {
    "dense": "dense",
    "mot": "MoT/32E",
    "mot_32e_16": "MoT/32E/16",
    "token_choice": "token choice",
    "expert_choice": "expert choice",
}

TRANSITION_CALIBRATION = "standardise"
"""The calibration measured beside the plain conversion."""

TEMPERATURE = round(math.sqrt(0.1), 4)
"""The MoT temperature of the ablation: at the paper's router scale 0.1, logits / sqrt(0.1)
start as sharp as router scale 1.0 gives them, through the temperature instead of the weights."""

SETTINGS: dict[str, tuple[str, list[str], bool]] = {
    "router": ("router 1.0", ["--model.net.init.router", "1.0"], False),
    "experts": ("experts 1.0", ["--model.net.init.experts", "1.0"], False),
    "rest": (
        "dense, attention, head 1.0",
        [
            *("--model.net.init.dense", "1.0", "--model.net.init.attention", "1.0"),
            *("--model.net.init.head", "1.0"),
        ],
        True,
    ),
    "tau": (
        f"MoT temperature {TEMPERATURE}",
        ["--model.net.ffn.temperature", str(TEMPERATURE)],
        False,
    ),
}
"""Ablation setting → (description, flags, whether it changes the dense model too)."""

INIT_FACTORS = ("router", "experts", "rest")
"""The one-factor settings that ``best`` may combine."""


@dataclass
class RunSpec:
    """One ``motlab fit`` run of the set."""

    name: str
    variant: str
    seed: int
    conf: str
    flags: list[str]
    kind: str = "fit"
    """fit, two_stage (token choice from ``parent``'s checkpoint) or switch (``parent`` resumed
    with the in-run switch)."""
    parent: str | None = None
    setting: str = "paper"
    group: str = "main"
    calibration: str = "none"
    precision: str | None = None


def main_runs(recipe: Recipe, seeds: Sequence[int]) -> list[RunSpec]:
    runs = []
    for seed in seeds:
        for variant, (conf, flags) in VARIANTS.items():
            runs.append(RunSpec(f"{variant}_s{seed}", variant, seed, conf, list(flags)))
        for kind in ("two_stage", "switch"):
            for calibration in ("none", TRANSITION_CALIBRATION):
                suffix = "" if calibration == "none" else "_cal"
                runs.append(
                    RunSpec(
                        f"{kind}{suffix}_s{seed}",
                        "token_choice" if kind == "two_stage" else "mot",
                        seed,
                        "transition.yaml" if kind == "two_stage" else "mot.yaml",
                        [],
                        kind=kind,
                        parent=f"mot_s{seed}",
                        calibration=calibration,
                    )
                )
        if recipe.scale == "medium":
            for variant in ("mot", "expert_choice"):
                conf, flags = VARIANTS[variant]
                runs.append(
                    RunSpec(
                        f"{variant}_bf16_s{seed}",
                        variant,
                        seed,
                        conf,
                        list(flags),
                        precision="bf16-true",
                    )
                )
    return runs


def ablation_runs(seeds: Sequence[int], best: list[str] | None) -> list[RunSpec]:
    """One factor at a time (dense only where the factor changes it), then ``best``: the
    combination of ``best`` factors, for MoT/32E and MoT/32E/16, and for dense where one of
    them changes it (else dense at the paper's init is the same model, bit for bit)."""
    runs = []
    for seed in seeds:
        for setting, (_, flags, touches_dense) in SETTINGS.items():
            variants = ["mot", "dense"] if touches_dense else ["mot"]
            for variant in variants:
                conf, vflags = VARIANTS[variant]
                runs.append(
                    RunSpec(
                        f"{variant}_{setting}_s{seed}",
                        variant,
                        seed,
                        conf,
                        [*vflags, *flags],
                        setting=setting,
                        group="ablation",
                    )
                )
        if best:
            flags = [f for name in best for f in SETTINGS[name][1]]
            touches_dense = any(SETTINGS[name][2] for name in best)
            for variant in ("dense", "mot", "mot_32e_16")[0 if touches_dense else 1 :]:
                conf, vflags = VARIANTS[variant]
                runs.append(
                    RunSpec(
                        f"{variant}_best_s{seed}",
                        variant,
                        seed,
                        conf,
                        [*vflags, *flags],
                        setting="best=" + "+".join(best),
                        group="ablation",
                    )
                )
    return runs


# ------------------------------------------------------------------------------------ results


def read_results(path: Path) -> dict[str, dict[str, Any]]:
    """The results file as {run: row} (a later line for the same run wins)."""
    rows: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows[row["run"]] = row
    return rows


def write_results(path: Path, rows: dict[str, dict[str, Any]]) -> None:
    """Rewrite the results file (atomically: a stopped script never leaves half a line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in rows.values()))
    tmp.replace(path)


def best_factors(rows: dict[str, dict[str, Any]], seeds: Sequence[int]) -> list[str] | None:
    """The initialisation factors that, alone and at every seed, lowered MoT/32E's final loss,
    left dense's no higher (where the factor changes dense) and so shrank MoT's gap to dense:
    the setting that trains both at least as well as the paper's and compares them more
    fairly. A factor that closes the gap by making dense worse is not chosen. None until every
    one-factor run is in ``rows``."""
    chosen = []
    for factor in INIT_FACTORS:
        touches_dense = SETTINGS[factor][2]
        better = []
        for seed in seeds:
            need = [f"mot_s{seed}", f"dense_s{seed}", f"mot_{factor}_s{seed}"]
            if touches_dense:
                need.append(f"dense_{factor}_s{seed}")
            if any(n not in rows for n in need):
                return None
            paper_mot = rows[f"mot_s{seed}"]["final_val_loss"]
            paper_dense = rows[f"dense_s{seed}"]["final_val_loss"]
            mot = rows[f"mot_{factor}_s{seed}"]["final_val_loss"]
            dense = rows[f"dense_{factor}_s{seed}"]["final_val_loss"] if touches_dense else None
            dense = paper_dense if dense is None else dense
            better.append(
                mot < paper_mot and dense <= paper_dense and mot - dense < paper_mot - paper_dense
            )
        if all(better):
            chosen.append(factor)
    return chosen


# ---------------------------------------------------------------------------------- tokenizer


def train_tokenizer(data: Path, vocab: int, out: Path) -> Path:
    """A byte-level BPE of ``vocab`` tokens (``<|endoftext|>`` included) trained on the
    training files of the C4-layout directory ``data``; cached at ``out`` (training is
    deterministic: the same files give the same file)."""
    if out.is_file():
        return out
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    files = sorted((data / "en").glob("c4-train.*.json.gz"))
    if not files:
        raise FileNotFoundError(f"no {data}/en/c4-train.*.json.gz to train the tokenizer on")

    def texts() -> Iterator[str]:
        for f in files:
            with gzip.open(f, "rt", encoding="utf-8") as lines:
                for line in lines:
                    yield json.loads(line)["text"]

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts(), trainer)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tok.save(str(tmp))
    tmp.replace(out)
    return out


# ------------------------------------------------------------------------------------ commands


@dataclass
class Setup:
    recipe: Recipe
    out: Path
    results: Path
    tag: str
    data: str | None
    tokenizer: str
    extra: list[str]
    threads: int
    overlay: Path = field(init=False)

    def __post_init__(self) -> None:
        self.overlay = self.out / f"recipe_{self.recipe.scale}.yaml"

    @property
    def stem(self) -> str:
        return f"quality_{self.recipe.scale}{self.tag}"

    def run_dir(self, name: str) -> Path:
        return self.out / name


def overlay_yaml(recipe: Recipe) -> str:
    """The recipe as a config file laid over each variant's ``conf/*.yaml``."""
    net: dict[str, Any] = {"size": recipe.size, "moe_blocks": recipe.moe_blocks}
    if recipe.size is None:
        net.update(
            d_model=recipe.d_model,
            d_ff=recipe.d_ff,
            n_layers=recipe.n_layers,
            n_heads=recipe.n_heads,
        )
    config = {
        "trainer": {
            "accelerator": "cpu" if recipe.scale == "cpu" else "auto",
            "devices": 1,
            "precision": recipe.precision,
            "max_steps": recipe.steps,
            "gradient_clip_val": recipe.gradient_clip,
            "log_every_n_steps": recipe.log_every,
            "val_check_interval": recipe.val_every,
            "check_val_every_n_epoch": None,
            "num_sanity_val_steps": 0,
            "enable_progress_bar": False,
        },
        "model": {
            "compile": recipe.compile,
            "net": net,
            "optim": {
                "lr": recipe.lr,
                "warmup_steps": recipe.warmup,
                "min_lr_ratio": recipe.min_lr_ratio,
            },
        },
        "data": {
            "seq_len": recipe.seq_len,
            "batch_size": recipe.batch_size,
            "num_workers": recipe.num_workers,
            "val_batches": recipe.val_batches,
        },
        "checkpoint": {"every_n_train_steps": recipe.checkpoint_every, "save_top_k": 1},
    }
    import yaml

    header = f"# Written by benchmarks/quality.py: the {recipe.scale} recipe ({recipe.key()}).\n"
    return header + yaml.safe_dump(config, sort_keys=False)


def last_checkpoint(run_dir: Path) -> Path | None:
    found = sorted(run_dir.glob("version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def stage2_val_every(recipe: Recipe) -> int:
    """Validation interval of the token-choice steps of a transition: ten points over stage 2,
    so that the spike is seen a few steps after the switch and the recovery is resolved (the
    conversion itself, at 0 steps, is measured in-process: :func:`measure_conversion`)."""
    return max(1, recipe.stage2_steps // 10)


def fit_command(setup: Setup, spec: RunSpec, parent_ckpt: str | None) -> list[str]:
    """``python -m motlab fit ...`` for ``spec`` (resuming its own last.ckpt when there is
    one; ``parent_ckpt``: the MoT checkpoint a transition run starts from)."""
    recipe = setup.recipe
    seed = spec.seed
    cmd = [sys.executable, "-m", "motlab", "fit"]
    cmd += ["--config", str(REPO / "conf" / spec.conf), "--config", str(setup.overlay)]
    cmd += ["--seed_everything", str(seed), "--data.seed", str(seed)]
    cmd += ["--data.tokenizer", setup.tokenizer]
    if setup.data is not None:
        cmd += ["--data.path", setup.data]
    cmd += ["--trainer.logger.init_args.save_dir", str(setup.out)]
    cmd += ["--trainer.logger.init_args.name", spec.name]
    if spec.precision:
        cmd += ["--trainer.precision", spec.precision]
    cmd += spec.flags
    own = last_checkpoint(setup.run_dir(spec.name))
    if spec.kind == "two_stage":
        cmd += ["--model.init_from", str(parent_ckpt)]
        cmd += ["--trainer.max_steps", str(recipe.stage2_steps)]
        cmd += ["--model.optim.lr", repr(recipe.stage2_lr)]
        cmd += ["--model.optim.warmup_steps", str(recipe.stage2_warmup)]
        cmd += ["--model.transition.calibration", spec.calibration]
        cmd += ["--trainer.log_every_n_steps", "1"]
        cmd += ["--trainer.val_check_interval", str(stage2_val_every(recipe))]
    elif spec.kind == "switch":
        # The MoT/32E run, resumed from its last checkpoint: its schedule ended at
        # recipe.steps (total_steps), so the token-choice steps run on at the final rate.
        cmd += ["--model.transition.switch_at", str(recipe.steps)]
        cmd += ["--model.transition.calibration", spec.calibration]
        cmd += ["--model.optim.total_steps", str(recipe.steps)]
        cmd += ["--trainer.max_steps", str(recipe.steps + recipe.stage2_steps)]
        cmd += ["--trainer.log_every_n_steps", "1"]
        cmd += ["--trainer.val_check_interval", str(stage2_val_every(recipe))]
        if own is None:
            cmd += ["--ckpt_path", str(parent_ckpt)]
    if own is not None:
        cmd += ["--ckpt_path", "last"]
    return cmd + setup.extra


def plan(setup: Setup, specs: Sequence[RunSpec]) -> list[tuple[RunSpec, list[str]]]:
    """Each run with its command, parents first; transition runs name the parent's
    last.ckpt (which a dry run may not have yet)."""
    by_name = {s.name: s for s in specs}
    ordered: list[RunSpec] = []
    for spec in specs:
        if spec.parent and spec.parent in by_name and by_name[spec.parent] not in ordered:
            ordered.append(by_name[spec.parent])
        if spec not in ordered:
            ordered.append(spec)
    out = []
    for spec in ordered:
        parent_ckpt = None
        if spec.parent:
            found = last_checkpoint(setup.run_dir(spec.parent))
            parent_ckpt = str(
                found or setup.run_dir(spec.parent) / "version_0/checkpoints/last.ckpt"
            )
        out.append((spec, fit_command(setup, spec, parent_ckpt)))
    return out


# ------------------------------------------------------------------------------------- running


def run_one(setup: Setup, spec: RunSpec, cmd: list[str]) -> dict[str, float]:
    """Run one command to completion, its output in ``OUT/logs/NAME.log``; wall and CPU time,
    summed over every attempt (a stopped run's time is kept in ``OUT/logs/NAME.times.json``)."""
    log = setup.out / "logs" / f"{spec.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    env["OMP_NUM_THREADS"] = str(setup.threads)
    env["TOKENIZERS_PARALLELISM"] = "false"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    with open(log, "a") as f:
        f.write(f"$ {shlex.join(cmd)}\n")
        f.flush()
        status = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    ledger = log.with_suffix(".times.json")
    times = json.loads(ledger.read_text()) if ledger.is_file() else {"wall_s": 0.0, "cpu_s": 0.0}
    times = {"wall_s": times["wall_s"] + time.time() - start, "cpu_s": times["cpu_s"] + cpu}
    ledger.write_text(json.dumps(times))
    if status != 0:
        raise RuntimeError(f"run {spec.name} failed (exit {status}); see {log}")
    return times


def curve_of(run: Any, tag: str = VAL_TAG) -> list[list[float]]:
    s = run[tag]
    return [[int(step), round(float(v), 5)] for step, v in zip(s.steps, s.values, strict=True)]


def result_row(
    setup: Setup, spec: RunSpec, times: dict[str, float], rows: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The results line of a finished run, read from its TensorBoard logs."""
    from motlab.analysis import read_run

    run = read_run(setup.run_dir(spec.name))
    recipe = setup.recipe
    s = run[VAL_TAG]
    steps = int(s.steps[-1])  # steps trained (motlab.analysis reads index n - 1 as step n)
    trained = steps if spec.kind != "switch" else steps - recipe.steps
    row: dict[str, Any] = {
        "run": spec.name,
        "variant": spec.variant,
        "seed": spec.seed,
        "steps": steps,
        "tokens": steps * recipe.tokens_per_step,
        "precision": spec.precision or recipe.precision,
        "final_val_loss": round(float(s.final), 5),
        "curve": curve_of(run),
        "group": spec.group,
        "setting": spec.setting,
        "kind": spec.kind,
        "scale": recipe.scale,
        "recipe": recipe.key(),
        "wall_s": round(times.get("wall_s", float("nan")), 1),
        "cpu_s": round(times.get("cpu_s", float("nan")), 1),
        "steps_this_run": trained,
        "extra_flags": setup.extra,
    }
    if spec.kind in ("two_stage", "switch"):
        row.update(transition_measures(spec, run, rows[spec.parent or ""], recipe))
    return row


def transition_measures(
    spec: RunSpec, run: Any, parent: dict[str, Any], recipe: Recipe
) -> dict[str, Any]:
    """Spike (first validation after the switch minus the MoT's last) and steps to recover (to
    the MoT's last validation loss), and the first logged dropped fraction and expert load."""
    from motlab.analysis.speedup import at_crossing

    s = run[VAL_TAG]
    offset = recipe.steps if spec.kind == "switch" else 0
    after = s.steps > offset  # the switch run's own points (its MoT part is the parent's)
    steps_after = s.steps[after] - offset  # optimiser steps since the conversion
    values = s.values[after]
    before = parent["final_val_loss"]
    recover = at_crossing(steps_after, values, before)
    measures: dict[str, Any] = {
        "parent": spec.parent,
        "calibration": spec.calibration,
        "switch_step": recipe.steps,
        "val_before": before,
        "val_first_after": round(float(values[0]), 5),
        "first_after_step": int(steps_after[0]),
        "spike": round(float(values[0]) - before, 5),
        "steps_to_recover": None if recover is None else round(recover, 1),
    }
    dropped, load = {}, {}
    for tag, series in run.scalars.items():
        if tag.startswith("routing/") and series.steps.size:
            first = series.steps > offset
            if not first.any():
                continue
            value = float(series.values[first][0])
            block = tag.split("/")[1]
            if tag.endswith("/dropped_fraction"):
                dropped[block] = round(value, 4)
            elif tag.endswith("/tokens_per_expert_max_over_mean"):
                load[block] = round(value, 3)
    measures["dropped_fraction_first_step"] = dropped
    measures["load_max_over_mean_first_step"] = load
    return measures


# ---------------------------------------------------------------------- conversion measurement


def measure_conversion(setup: Setup, parent: str, seed: int, batches: int) -> list[dict[str, Any]]:
    """Convert ``parent``'s last checkpoint to token choice in-process, plain and calibrated
    (on the first training batch of the seed's stream), and measure on the validation batches:
    val loss before and right after, dropped fraction, argmax load per expert."""
    import torch

    from motlab import load_model
    from motlab.analysis.routing import inspect_routing
    from motlab.calibration import calibrate_routers
    from motlab.data import C4DataModule
    from motlab.transition import convert_model

    torch.set_num_threads(setup.threads)
    recipe = setup.recipe
    ckpt = last_checkpoint(setup.run_dir(parent))
    if ckpt is None:
        raise FileNotFoundError(f"no last.ckpt of {parent} to convert")
    mot = load_model(ckpt)
    data = C4DataModule(
        path=setup.data,
        tokenizer=setup.tokenizer,
        seq_len=recipe.seq_len,
        batch_size=recipe.batch_size,
        num_workers=0,
        seed=seed,
        val_batches=recipe.val_batches,
    )
    data.setup("fit")
    calibration_BT = next(iter(data.train_dataloader()))[:, :-1]
    val = list(data.val_dataloader())[:batches]

    def val_loss(model: Any) -> float:
        total = 0.0
        with torch.no_grad():
            for batch in val:
                logits = model(batch[:, :-1])
                total += float(
                    torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
                )
        return total / len(val)

    before = val_loss(mot)
    rows = []
    for calibration in ("none", "centre", "standardise"):
        tc = convert_model(mot)
        fold = None
        if calibration != "none":
            reports = calibrate_routers(tc, calibration_BT, calibration)
            fold = max(r.fold_error for r in reports)
        tc.eval()
        per_block: dict[int, dict[str, list[float]]] = {}
        for batch in val:
            for layer in inspect_routing(tc, batch[:, :-1]):
                requested = layer.requested_per_expert.float()
                mean = requested.mean()
                entry = per_block.setdefault(layer.block, {"dropped": [], "used": [], "max": []})
                entry["dropped"].append(float(layer.dropped_fraction))
                entry["used"].append(float((requested > 0).sum()))
                entry["max"].append(float(requested.max() / mean))
        blocks = {
            str(b): {k: round(sum(v) / len(v), 4) for k, v in e.items()}
            for b, e in per_block.items()
        }
        after = val_loss(tc)
        rows.append(
            {
                "parent": parent,
                "seed": seed,
                "calibration": calibration,
                "val_batches": len(val),
                "val_mot": round(before, 5),
                "val_converted": round(after, 5),
                "conversion_spike": round(after - before, 5),
                "dropped_fraction": round(
                    sum(e["dropped"] for e in blocks.values()) / len(blocks), 4
                ),
                "experts_used": {b: e["used"] for b, e in blocks.items()},
                "busiest_over_mean": {b: e["max"] for b, e in blocks.items()},
                "dropped_per_block": {b: e["dropped"] for b, e in blocks.items()},
                "fold_error": fold,
                "n_experts": mot.blocks[mot.cfg.routed_blocks()[0]].ffn.experts.n_experts,
            }
        )
    return rows


# -------------------------------------------------------------------------------------- report


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def steps_to(row: dict[str, Any], target: float) -> float | None:
    from motlab.analysis.speedup import at_crossing

    curve = row["curve"]
    return at_crossing([c[0] + 1 for c in curve], [c[1] for c in curve], target)


def speedup_at_common_loss(dense: dict[str, Any], other: dict[str, Any]) -> float:
    """Dense's steps over ``other``'s steps to the higher of their two final losses, the
    lowest loss both reach: above 1 ``other`` learns faster, below 1 slower. Where ``other``
    ends ahead this is the usual speed-up at dense's final loss; where it ends behind, dense
    reaches ``other``'s final loss early and the ratio says by how much (NaN if a curve never
    crosses, which a final value cannot do)."""
    target = max(dense["final_val_loss"], other["final_val_loss"])
    base, mine = steps_to(dense, target), steps_to(other, target)
    return base / mine if base and mine else float("nan")


def _spread(xs: Sequence[float]) -> str:
    """Mean ± half the range over seeds (the range of two seeds is their difference)."""
    if len(xs) < 2:
        return f"{xs[0]:.4f}" if xs else "–"
    return f"{_mean(xs):.4f} ± {(max(xs) - min(xs)) / 2:.4f}"


REPORT_SECTIONS = ("main", "conversion", "transition", "ablation")
"""The parts of the report, each a block of benchmarks/RESULTS.md (``--results-md``)."""


def report_sections(
    setup: Setup, rows: dict[str, dict[str, Any]], conversion: list[dict]
) -> dict[str, str]:
    """The markdown tables of benchmarks/RESULTS.md "Quality" and "Initialisation ablation",
    from the results alone, by :data:`REPORT_SECTIONS` (empty ones left out)."""
    seeds = sorted({r["seed"] for r in rows.values()})
    sections = {
        "main": _main_table(setup, rows, seeds),
        "conversion": _conversion_table(conversion),
        "transition": _transition_table(setup, rows),
        "ablation": _ablation_table(rows, seeds),
    }
    timed = [r for r in rows.values() if r.get("wall_s") == r.get("wall_s")]  # not NaN
    if timed and sections["main"]:
        total_wall = sum(r["wall_s"] for r in timed)
        total_cpu = sum(r["cpu_s"] for r in timed)
        sections["main"] += (
            f"\n{len(timed)} runs in `{setup.stem}.jsonl`: {total_wall / 60:.0f} min wall, "
            f"{total_cpu / 60:.0f} CPU-min ({setup.threads} threads, on a shared machine).\n"
        )
    return {k: v for k, v in sections.items() if v}


def report(setup: Setup, rows: dict[str, dict[str, Any]], conversion: list[dict]) -> str:
    """Every section of :func:`report_sections`, one after the other."""
    return "\n".join(report_sections(setup, rows, conversion).values())


def _main_table(setup: Setup, rows: dict[str, dict[str, Any]], seeds: list[int]) -> str:
    main = [r for r in rows.values() if r["group"] == "main" and r["kind"] == "fit"]
    if not main:
        return ""
    lines = [
        "| variant | "
        + " | ".join(f"final val loss s{s}" for s in seeds)
        + " | mean ± half-range | − dense, per seed | steps to dense's final (× dense's) "
        "| speed-up at the loss both reach, mean [per seed] |",
        "|---|" + "---:|" * len(seeds) + "---:|---:|---:|---:|",
    ]
    for variant in VARIANTS:
        for precision in sorted({r["precision"] for r in main if r["variant"] == variant}):
            these = {
                r["seed"]: r
                for r in main
                if r["variant"] == variant and r["precision"] == precision
            }
            finals = [f"{these[s]['final_val_loss']:.4f}" if s in these else "–" for s in seeds]
            ratios, speedups, gaps = [], [], []
            for s in seeds:
                dense = rows.get(f"dense_s{s}")
                if dense is None or s not in these:
                    continue
                target = dense["final_val_loss"]
                gaps.append(these[s]["final_val_loss"] - target)
                base, mine = steps_to(dense, target), steps_to(these[s], target)
                ratios.append(mine / base if base and mine else float("nan"))
                speedups.append(speedup_at_common_loss(dense, these[s]))
            fmt_ratio = ", ".join("never" if math.isnan(x) else f"{x:.2f}" for x in ratios)
            fmt_speed = (
                f"{_mean(speedups):.2f} [{', '.join(f'{x:.2f}' for x in speedups)}]"
                if speedups and not any(math.isnan(x) for x in speedups)
                else "–"
            )
            label = VARIANT_LABELS[variant]
            name = label if precision == setup.recipe.precision else f"{label} ({precision})"
            spread = _spread([these[s]["final_val_loss"] for s in seeds if s in these])
            fmt_gaps = ", ".join(f"{g:+.4f}" for g in gaps) if variant != "dense" else "–"
            lines.append(
                f"| {name} | " + " | ".join(finals) + f" | {spread} | {fmt_gaps} | "
                f"{fmt_ratio or '–'} | {fmt_speed} |"
            )
    return "\n".join(lines) + "\n"


def _conversion_table(conversion: list[dict]) -> str:
    if not conversion:
        return ""
    lines = [
        "| seed | calibration | MoT val loss | converted val loss | spike | dropped fraction "
        "| experts used (argmax) per block | busiest / mean per block |",
        "|---:|---|---:|---:|---:|---:|---|---|",
    ]
    for c in sorted(conversion, key=lambda c: (c["seed"], c["calibration"])):
        used = ", ".join(f"{v:.1f}" for v in c["experts_used"].values())
        busiest = ", ".join(f"{v:.1f}" for v in c["busiest_over_mean"].values())
        lines.append(
            f"| {c['seed']} | {c['calibration']} | {c['val_mot']:.4f} | "
            f"{c['val_converted']:.4f} | {c['conversion_spike']:+.4f} | "
            f"{c['dropped_fraction']:.3f} | {used} (of {c['n_experts']}) | {busiest} |"
        )
    return "\n".join(lines) + "\n"


def _transition_table(setup: Setup, rows: dict[str, dict[str, Any]]) -> str:
    transition = [r for r in rows.values() if r["kind"] in ("two_stage", "switch")]
    if not transition:
        return ""
    lines = [
        "| run | seed | calibration | MoT val loss | first val after (step) | spike | steps to "
        "recover | dropped fraction, first step | load max / mean, first step "
        "| final val loss |",
        "|---|---:|---|---:|---:|---:|---:|---|---|---:|",
    ]
    for r in sorted(transition, key=lambda r: (r["kind"], r["calibration"], r["seed"])):
        dropped = ", ".join(f"{v:.2f}" for v in r["dropped_fraction_first_step"].values())
        load = ", ".join(f"{v:.1f}" for v in r["load_max_over_mean_first_step"].values())
        recover = (
            "not within the run"
            if r["steps_to_recover"] is None
            else (f"{r['steps_to_recover']:.0f}")
        )
        lines.append(
            f"| {r['kind']} | {r['seed']} | {r['calibration']} | {r['val_before']:.4f} | "
            f"{r['val_first_after']:.4f} ({r['first_after_step']}) | {r['spike']:+.4f} | "
            f"{recover} | {dropped} | {load} | {r['final_val_loss']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def _ablation_settings(rows: dict[str, dict[str, Any]]) -> list[str]:
    ablation = [r for r in rows.values() if r["group"] == "ablation"]
    best = sorted({r["setting"] for r in ablation if r["setting"].startswith("best")})
    return ["paper", *SETTINGS, *best]


def _setting_row(
    rows: dict[str, dict[str, Any]], variant: str, setting: str, seed: int
) -> dict[str, Any] | None:
    """The run of ``variant`` at an ablation ``setting`` (dense: the paper's run where the
    setting leaves a dense model as it is)."""
    suffix = "" if setting == "paper" else "_" + setting.split("=")[0]
    row = rows.get(f"{variant}{suffix}_s{seed}")
    factors = setting.split("=", 1)[1].split("+") if setting.startswith("best=") else [setting]
    leaves_dense = all(f in SETTINGS and not SETTINGS[f][2] for f in factors)
    if row is None and variant == "dense" and leaves_dense:
        row = rows.get(f"dense_s{seed}")
    if row is None and setting.startswith("best=") and len(factors) == 1:
        row = _setting_row(rows, variant, factors[0], seed)  # one factor: its own runs
    return row


def _ablation_table(rows: dict[str, dict[str, Any]], seeds: list[int]) -> str:
    if not any(r["group"] == "ablation" for r in rows.values()):
        return ""
    lines = [
        "| setting | "
        + " | ".join(f"dense s{s} | MoT/32E s{s} | MoT − dense s{s}" for s in seeds)
        + " | MoT − dense, mean | MoT/32E/16 − dense, per seed |",
        "|---|" + "---:|---:|---:|" * len(seeds) + "---:|---:|",
    ]
    for setting in _ablation_settings(rows):
        cells, gaps, gaps16 = [], [], []
        for s in seeds:
            dense = _setting_row(rows, "dense", setting, s)
            mot = _setting_row(rows, "mot", setting, s)
            m16 = _setting_row(rows, "mot_32e_16", setting, s)
            if dense is not None and m16 is not None:
                gaps16.append(f"{m16['final_val_loss'] - dense['final_val_loss']:+.4f} (s{s})")
            if mot is None or dense is None:
                cells += ["–", "–", "–"]
                continue
            gap = mot["final_val_loss"] - dense["final_val_loss"]
            gaps.append(gap)
            cells += [
                f"{dense['final_val_loss']:.4f}",
                f"{mot['final_val_loss']:.4f}",
                f"{gap:+.4f}",
            ]
        if not gaps:
            continue
        label = (
            "paper (0.1 everywhere)" if setting == "paper" else SETTINGS.get(setting, (setting,))[0]
        )
        if setting.startswith("best="):
            parts = setting.split("=", 1)[1].split("+")
            label = "best: " + " + ".join(SETTINGS[p][0] for p in parts)
        mean = f"{_mean(gaps):+.4f}" + ("" if len(gaps) == len(seeds) else f" ({len(gaps)} seed)")
        lines.append(
            f"| {label} | " + " | ".join(cells) + f" | {mean} | {', '.join(gaps16) or '–'} |"
        )
    return "\n".join(lines) + "\n"


def update_markdown(path: Path, stem: str, sections: dict[str, str]) -> list[str]:
    """Replace the blocks of ``path`` marked ``<!-- quality.py STEM SECTION -->`` ...
    ``<!-- /quality.py -->`` by the report's sections; the names of those replaced. A section
    without a block is not written (the document says where each one goes)."""
    text = path.read_text()
    done = []
    for name, body in sections.items():
        start = f"<!-- quality.py {stem} {name} -->\n"
        at = text.find(start)
        if at < 0:
            continue
        end = text.find(MARK_END, at)
        if end < 0:
            raise SystemExit(f"error: {path}: {start.strip()} has no {MARK_END.strip()} after it")
        text = text[: at + len(start)] + body + text[end:]
        done.append(name)
    path.write_text(text)
    return done


MARK_END = "<!-- /quality.py -->"


def figures(setup: Setup, rows: dict[str, dict[str, Any]]) -> list[Path]:
    """``motlab compare`` CSV and figure per seed for the main set; the ablation's curves;
    the transition curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from motlab.compare import main as compare

    written = []
    results = setup.results
    seeds = sorted({r["seed"] for r in rows.values()})
    for seed in seeds:
        names = [f"{v}_s{seed}" for v in VARIANTS if f"{v}_s{seed}" in rows]
        if len(names) < 2 or f"dense_s{seed}" not in rows:
            continue
        stem = results / f"{setup.stem}_s{seed}"
        compare(
            [str(setup.run_dir(n)) for n in names]
            + ["--csv", f"{stem}.csv", "--plot", f"{stem}.png"]
        )
        written += [Path(f"{stem}.csv"), Path(f"{stem}.png")]

    transition = [r for r in rows.values() if r["kind"] in ("two_stage", "switch")]
    if transition:
        fig, axes = plt.subplots(1, len(seeds), figsize=(6 * len(seeds), 4), squeeze=False)
        for ax, seed in zip(axes[0], seeds, strict=True):
            parent = rows.get(f"mot_s{seed}")
            if parent:
                tail = [c for c in parent["curve"] if c[0] + 1 >= setup.recipe.steps // 2]
                ax.plot([c[0] + 1 for c in tail], [c[1] for c in tail], "k.-", label="MoT/32E")
            for r in sorted(transition, key=lambda r: r["run"]):
                if r["seed"] != seed:
                    continue
                offset = setup.recipe.steps if r["kind"] == "two_stage" else 0
                pts = [c for c in r["curve"] if c[0] + 1 + offset > setup.recipe.steps]
                ax.plot(
                    [c[0] + 1 + offset for c in pts],
                    [c[1] for c in pts],
                    marker=".",
                    label=f"{r['kind']}, calibration {r['calibration']}",
                )
            ax.axvline(setup.recipe.steps, color="grey", linestyle=":")
            ax.set(
                xlabel="optimiser step (MoT's, then token choice's)",
                ylabel="validation loss",
                title=f"MoT/32E → token choice, seed {seed}",
            )
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        path = results / f"{setup.stem}_transition.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    if any(r["group"] == "ablation" for r in rows.values()):
        path = results / f"{setup.stem}_ablation.png"
        ablation_figure(rows, seeds, setup.recipe.steps, path)
        written.append(path)
    return written


def ablation_figure(
    rows: dict[str, dict[str, Any]], seeds: list[int], steps: int, path: Path
) -> None:
    """Left: final validation loss of each variant at each setting; right: MoT's final loss
    minus dense's at the same setting (the question of the ablation), per seed."""
    import matplotlib.pyplot as plt

    settings = _ablation_settings(rows)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    labelled: set[str] = set()
    variants = (("dense", "C0"), ("mot", "C1"), ("mot_32e_16", "C2"))
    for i, setting in enumerate(settings):
        for s_i, seed in enumerate(seeds):
            marker = "o" if s_i == 0 else "^"
            dense = _setting_row(rows, "dense", setting, seed)
            for v_i, (variant, colour) in enumerate(variants):
                row = _setting_row(rows, variant, setting, seed)
                if row is None:
                    continue
                x = i + 0.12 * (v_i - 1)
                label = f"{VARIANT_LABELS[variant]}, seed {seed}"
                left.scatter(
                    x, row["final_val_loss"], color=colour, marker=marker,
                    label=None if label in labelled else label,
                )  # fmt: skip
                labelled.add(label)
                if variant != "dense" and dense is not None:
                    gap = row["final_val_loss"] - dense["final_val_loss"]
                    right.scatter(x, gap, color=colour, marker=marker)
    labels = []
    for setting in settings:
        if setting.startswith("best="):
            labels.append("best: " + "+".join(setting.split("=", 1)[1].split("+")))
        else:
            labels.append("paper" if setting == "paper" else SETTINGS[setting][0])
    for ax in (left, right):
        ax.set_xticks(range(len(settings)), labels, rotation=20, fontsize=8, ha="right")
        ax.grid(alpha=0.3)
    right.axhline(0, color="grey", linestyle=":")
    left.set(ylabel=f"final validation loss (step {steps})", title="Final loss per setting")
    right.set(
        ylabel="final val loss − dense's at the same setting",
        title="MoT − dense (below 0: MoT ahead)",
    )
    left.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/quality.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", choices=sorted(RECIPES), required=True)
    p.add_argument(
        "--runs",
        default="main",
        help="main, ablation, all, or run names separated by commas (see --list)",
    )
    p.add_argument("--seeds", default="1,2", help="seeds, comma-separated (default: 1,2)")
    p.add_argument(
        "--out", type=Path, default=None, help="run directory (default runs/quality_SCALE)"
    )
    p.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument(
        "--data-path",
        default=None,
        help="C4-layout directory (default: ../shared/data beside the checkout for cpu, "
        "the hub for medium)",
    )
    p.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer.json or hub name (default: the recipe's: a BPE trained here for cpu, "
        "gpt2 for medium)",
    )
    p.add_argument(
        "--recipe",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a field of the recipe (repeat), e.g. steps=4 val_batches=2 d_model=64",
    )
    p.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of every run")
    p.add_argument("--tag", default="", help="suffix of the results files (e.g. _f64)")
    p.add_argument(
        "--best",
        default=None,
        metavar="FACTOR,...",
        help="the ablation's best combination, e.g. router,experts (default: chosen from the "
        "one-factor runs of every seed, once they are all done)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--list", action="store_true", help="list the runs and whether they are done")
    p.add_argument("--report-only", action="store_true", help="only rewrite report and figures")
    p.add_argument(
        "--rebuild",
        action="store_true",
        help="read the results line of every finished run again from its logs (after a change in "
        "how they are read), keeping its times; runs nothing",
    )
    p.add_argument(
        "--results-md",
        type=Path,
        default=None,
        help="also write the report's tables into this file's marked blocks "
        "(<!-- quality.py STEM SECTION --> ... <!-- /quality.py -->), e.g. benchmarks/RESULTS.md",
    )
    p.add_argument("extra", nargs="*", help="after --: flags added to every motlab fit")
    return p


def with_overrides(recipe: Recipe, items: Sequence[str]) -> Recipe:
    """``recipe`` with ``FIELD=VALUE`` overrides (values as YAML: 4, 2e-3, null, true)."""
    import yaml

    fields = {f.name for f in dataclasses.fields(recipe)}
    changes = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in fields or name == "scale":
            raise SystemExit(
                f"error: --recipe {item!r}: expected FIELD=VALUE with FIELD one of "
                f"{sorted(fields - {'scale'})}"
            )
        changes[name] = yaml.safe_load(value)
    return dataclasses.replace(recipe, **changes)


def make_setup(args: argparse.Namespace) -> Setup:
    recipe = with_overrides(RECIPES[args.scale], args.recipe)
    out = args.out or REPO / "runs" / f"quality_{recipe.scale}{args.tag}"
    data = args.data_path
    if data is None and recipe.scale == "cpu":
        data = str((REPO.parent / "shared" / "data").resolve())
    tokenizer = args.tokenizer or recipe.tokenizer
    setup = Setup(
        recipe, out, args.results, args.tag, data, tokenizer, list(args.extra), args.threads
    )
    if recipe.vocab is not None and args.tokenizer is None:
        if data is None:
            raise SystemExit("error: the cpu recipe trains its tokenizer on --data-path: set it")
        path = out / f"tokenizer_bpe{recipe.vocab}.json"
        setup.tokenizer = (
            str(path) if args.dry_run else str(train_tokenizer(Path(data), recipe.vocab, path))
        )
    return setup


def select(
    args: argparse.Namespace, setup: Setup, rows: dict[str, dict[str, Any]]
) -> list[RunSpec]:
    seeds = [int(s) for s in args.seeds.split(",") if s]
    best = best_factors(rows, seeds)
    if args.best is not None:
        best = [f for f in args.best.split(",") if f]
        unknown = sorted(set(best) - set(INIT_FACTORS))
        if unknown or not best:
            raise SystemExit(
                f"error: --best {args.best!r}: expected factors of {', '.join(INIT_FACTORS)} "
                "separated by commas"
            )
    everything = main_runs(setup.recipe, seeds)
    if setup.recipe.scale == "cpu":
        everything += ablation_runs(seeds, best or None)
    by_name = {s.name: s for s in everything}
    if args.runs == "all":
        return everything
    if args.runs in ("main", "ablation"):
        if args.runs == "ablation" and best is None:
            print("ablation: the best combination is chosen once the one-factor runs are done")
        return [s for s in everything if s.group == args.runs]
    names = [n for n in args.runs.split(",") if n]
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SystemExit(
            f"error: unknown run(s) {unknown}; --list shows them (best_* exist once the "
            "one-factor ablation runs are done)"
        )
    return [by_name[n] for n in names]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup = make_setup(args)
    results_file = setup.results / f"{setup.stem}.jsonl"
    conversion_file = setup.results / f"{setup.stem}_conversion.jsonl"
    rows = read_results(results_file)
    specs = select(args, setup, rows)
    todo = plan(setup, specs)
    setup.out.mkdir(parents=True, exist_ok=True)
    setup.overlay.write_text(overlay_yaml(setup.recipe))
    if args.list or args.dry_run:
        for spec, cmd in todo:
            done = spec.name in rows and rows[spec.name]["recipe"] == setup.recipe.key()
            if args.list:
                print(f"{spec.name:28s} {'done' if done else 'to do'}  {spec.group}/{spec.setting}")
            else:
                print(shlex.join(cmd))
        return 0
    if args.rebuild:
        for spec, _ in todo:  # in plan order: a transition's parent is rebuilt before it
            if spec.name in rows and rows[spec.name]["recipe"] == setup.recipe.key():
                times = {k: rows[spec.name][k] for k in ("wall_s", "cpu_s")}
                rows[spec.name] = result_row(setup, spec, times, rows)
        write_results(results_file, rows)
    elif not args.report_only:
        for spec, _ in todo:
            if spec.name in rows and rows[spec.name]["recipe"] == setup.recipe.key():
                if rows[spec.name]["setting"] != spec.setting:
                    raise SystemExit(
                        f"error: {spec.name} was run at {rows[spec.name]['setting']}, now "
                        f"{spec.setting}: remove {setup.run_dir(spec.name)} and its line in "
                        f"{results_file} to run it again"
                    )
                continue
            if spec.parent and spec.parent not in rows:
                raise SystemExit(f"error: {spec.name} needs {spec.parent} first (add it to --runs)")
            # Rebuilt now: the parent's checkpoint and the run's own exist only now.
            parent_ckpt = last_checkpoint(setup.run_dir(spec.parent)) if spec.parent else None
            cmd = fit_command(setup, spec, str(parent_ckpt) if parent_ckpt else None)
            print(f"[{time.strftime('%H:%M:%S')}] {spec.name}: {shlex.join(cmd[3:])}", flush=True)
            times = run_one(setup, spec, cmd)
            rows[spec.name] = result_row(setup, spec, times, rows)
            write_results(results_file, rows)
            r = rows[spec.name]
            print(
                f"    final val loss {r['final_val_loss']:.4f} after {r['steps']} steps, "
                f"{times['wall_s']:.0f} s wall, {times['cpu_s']:.0f} CPU-s",
                flush=True,
            )
        parents = sorted({s.parent for s in specs if s.parent and s.parent in rows})
        conversion = read_conversion(conversion_file)
        for parent in parents:
            if any(
                c["parent"] == parent and c.get("recipe") == setup.recipe.key() for c in conversion
            ):
                continue
            seed = rows[parent]["seed"]
            for c in measure_conversion(setup, parent, seed, setup.recipe.val_batches):
                c["recipe"] = setup.recipe.key()
                conversion.append(c)
            conversion_file.write_text("".join(json.dumps(c) + "\n" for c in conversion))
    conversion = read_conversion(conversion_file)
    text = report(setup, rows, conversion)
    (setup.results / f"{setup.stem}_report.md").write_text(text)
    figures(setup, rows)
    if args.results_md is not None:
        written = update_markdown(
            args.results_md, setup.stem, report_sections(setup, rows, conversion)
        )
        print(f"{args.results_md}: wrote {', '.join(written) or 'no'} block(s) of {setup.stem}")
    print(text)
    return 0


def read_conversion(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


if __name__ == "__main__":
    try:
        status = main()
    except SystemExit as stop:
        if not isinstance(stop.code, str):
            raise
        print(stop.code, file=sys.stderr)  # the "error: ..." of bad input: exit status 2
        status = 2
    raise SystemExit(status)
