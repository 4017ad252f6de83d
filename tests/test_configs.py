"""Every ``conf/*.yaml`` parses at the paper's shapes and runs a few steps with the tiny overlay."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from motlab.cli import cli_main
from motlab.config import GPTConfig
from motlab.model import GPT
from motlab.stats import model_stats

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")

REPO = Path(__file__).resolve().parents[1]
OVERLAYS = {"tiny.yaml", "fsdp.yaml", "mot_switch.yaml"}  # applied on top of an experiment config
CONFIGS = sorted(p.name for p in (REPO / "conf").glob("*.yaml") if p.name not in OVERLAYS)
STAGE_TWO = {"transition.yaml"}  # transition tuning, stage 2: its own, shorter schedule
PAPER_RUNS = sorted(set(CONFIGS) - STAGE_TWO)

COMMON_TAGS = {
    "train/loss",
    "train/ppl",
    "train/grad_norm",
    "lr/decay",
    "lr/no_decay",
    "val/loss",
    "val/ppl",
    "perf/tokens_per_sec",
    "perf/tokens_per_sec_per_device",
    "perf/tokens_seen",
}
# METHOD.md §1 reference parameter counts (vocab 50257, context 256, no final norm).
PAPER_PARAMS = {"dense.yaml": 76.8e6, "mot.yaml": 336.9e6}


def print_config(capsys, *args: str) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", *args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("conf", PAPER_RUNS)
def test_config_is_the_papers_recipe(conf, capsys):
    cfg = print_config(capsys, "--config", str(REPO / "conf" / conf))
    trainer, model, data = cfg["trainer"], cfg["model"], cfg["data"]
    assert trainer["precision"] == "bf16-mixed"
    assert trainer["max_steps"] == 150_000 and trainer["gradient_clip_val"] == 0.5
    assert trainer["logger"]["class_path"].endswith("TensorBoardLogger")
    assert trainer["logger"]["init_args"]["save_dir"] == "runs"
    assert model["optim"]["lr"] == 7e-4 and model["optim"]["warmup_steps"] == 2500
    assert model["optim"]["weight_decay"] == 0.1 and model["optim"]["min_lr_ratio"] == 0.1
    assert list(model["optim"]["betas"]) == [0.9, 0.999]
    assert data["path"] is None and data["tokenizer"] == "gpt2"  # C4 from the hub
    assert data["seq_len"] == 256 and data["batch_size"] == 256
    assert cfg["checkpoint"]["save_last"] is True
    net = GPTConfig(**model["net"], seq_len=data["seq_len"])
    assert (net.d_model, net.d_ff, net.n_layers, net.n_heads) == (512, 2048, 8, 8)
    assert net.routed_blocks() == [4, 5, 6, 7]  # MoE in the second half
    assert data["batch_size"] % net.group_size == 0
    if conf in PAPER_PARAMS:
        total = model_stats(net).total_params
        assert total == pytest.approx(PAPER_PARAMS[conf], rel=2e-3)


def test_transition_configs(capsys):
    stage2 = print_config(capsys, "--config", str(REPO / "conf/transition.yaml"))
    assert stage2["trainer"]["max_steps"] == 15_000  # the paper's 150K + 15K
    assert stage2["model"]["net"]["ffn"]["variant"] == "token_choice"
    assert stage2["model"]["optim"]["warmup_steps"] == 500
    net = GPTConfig(**stage2["model"]["net"])
    mot = GPTConfig(**print_config(capsys, "--config", str(REPO / "conf/mot.yaml"))["model"]["net"])
    assert net.ffn.expert_size(2048) == mot.ffn.expert_size(2048)  # the MoT's experts, as they are
    switch = print_config(
        capsys,
        "--config",
        str(REPO / "conf/mot.yaml"),
        "--config",
        str(REPO / "conf/mot_switch.yaml"),
    )
    assert switch["model"]["transition"]["switch_at"] == 150_000
    assert switch["trainer"]["max_steps"] == 165_000


def test_routed_configs_match_the_paper(capsys):
    def ffn(conf: str) -> dict:
        return print_config(capsys, "--config", str(REPO / "conf" / conf))["model"]["net"]["ffn"]

    mot = ffn("mot.yaml")
    assert (mot["group_size"], mot["n_experts"], mot.get("d_expert")) == (32, 32, None)
    mot16 = ffn("mot_32e_16.yaml")
    assert (mot16["group_size"], mot16["n_experts"], mot16["d_expert"]) == (32, 512, 128)
    tc = ffn("token_choice.yaml")
    assert (tc["n_experts"], tc["top_k"], tc["capacity_factor"]) == (32, 1, 1.25)
    assert tc["load_balancing_weight"] == 0.01
    ec = ffn("expert_choice.yaml")
    assert (ec["group_size"], ec["n_experts"], ec["top_k"]) == (32, 32, 1)


def _routing_tags(net: GPT, batch_size: int) -> set[str]:
    """The TensorBoard tags of what the routed layers report (scalars as they are, per-expert
    vectors as ``_cv``/``_max_over_mean``/``_min_over_mean``), from one forward pass of the net."""
    with torch.no_grad():
        _, aux = net.forward_with_aux(torch.zeros(batch_size, 4, dtype=torch.long))
    tags = {"train/aux_loss"} if aux.losses else set()
    for name, value in {**aux.stats, **aux.losses}.items():
        suffixes = [""] if value.ndim == 0 else ["_cv", "_max_over_mean", "_min_over_mean"]
        tags |= {f"routing/{name}{s}" for s in suffixes}
    return tags


def _tags(run_dir: Path) -> set[str]:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return set(acc.Tags()["scalars"])


def _tiny_fit(conf: str, c4_dir: Path, tokenizer_path: Path, *extra: str):
    return cli_main(
        [
            "fit",
            *("--config", str(REPO / "conf" / conf), "--config", str(REPO / "conf/tiny.yaml")),
            *("--data.path", str(c4_dir), "--data.tokenizer", str(tokenizer_path)),
            *("--data.seq_len", "16", "--data.num_workers", "0", "--data.val_batches", "1"),
            *("--trainer.max_steps", "2", "--trainer.val_check_interval", "2"),
            *("--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"),
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def mot_checkpoint(tmp_path_factory, c4_dir, tokenizer_path) -> Path:
    """A 1-step tiny MoT run's last.ckpt: what stage 2 (transition.yaml) starts from."""
    root = tmp_path_factory.mktemp("stage1")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        _tiny_fit("mot.yaml", c4_dir, tokenizer_path, "--trainer.max_steps", "1")
    return root / "runs/mot/version_0/checkpoints/last.ckpt"


@pytest.mark.parametrize("conf", CONFIGS)
def test_config_runs_tiny_and_logs(conf, c4_dir, tokenizer_path, tmp_path, monkeypatch, request):
    monkeypatch.chdir(tmp_path)
    # Stage 2 requires the stage-1 checkpoint (tests/test_config_keys.py: refused without).
    stage1 = ("--model.init_from", str(request.getfixturevalue("mot_checkpoint")))
    cli = _tiny_fit(conf, c4_dir, tokenizer_path, *(stage1 if conf in STAGE_TWO else ()))
    assert cli.trainer.global_step == 2
    run_dir = tmp_path / "runs" / conf.removesuffix(".yaml") / "version_0"
    tags = _tags(run_dir)
    routing = _routing_tags(cli.model.net, cli.datamodule.batch_size)
    assert routing or cli.model.net.cfg.ffn.variant == "dense"  # routed layers report something
    missing = (COMMON_TAGS | routing) - tags
    assert not missing, f"missing TensorBoard scalars: {sorted(missing)}"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "config.yaml").is_file()
    if conf == "dense.yaml":
        assert not any(t.startswith("routing/") for t in tags)


def test_switch_overlay_runs_tiny(c4_dir, tokenizer_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = _tiny_fit(
        "mot.yaml", c4_dir, tokenizer_path, "--config", str(REPO / "conf/mot_switch.yaml"),
        "--trainer.max_steps", "4", "--model.transition.switch_at", "2",
    )  # fmt: skip
    assert cli.trainer.global_step == 4
    tags = _tags(tmp_path / "runs/mot/version_0")
    assert {"val/mot/loss", "val/token_choice/loss", "routing/block1/merge_entropy",
            "routing/block1/dropped_fraction"} <= tags  # fmt: skip


def test_bf16_true_runs_on_cpu(c4_dir, tokenizer_path, tmp_path, monkeypatch):
    """The low-precision experiment: every parameter (and buffer) in bf16, no fp32 master."""
    monkeypatch.chdir(tmp_path)
    cli = _tiny_fit("mot.yaml", c4_dir, tokenizer_path, "--trainer.precision", "bf16-true")
    assert {p.dtype for p in cli.model.parameters()} == {torch.bfloat16}
    assert cli.trainer.callback_metrics["train/loss"].isfinite()
    assert cli.trainer.callback_metrics["val/loss"].isfinite()


@pytest.mark.slow
def test_readme_quick_start_command(c4_dir, tokenizer_path, tmp_path):
    """The README's CPU command, verbatim but for the data paths, as a subprocess."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [
        *(sys.executable, "-m", "motlab", "fit"),
        *("--config", str(REPO / "conf/mot.yaml"), "--config", str(REPO / "conf/tiny.yaml")),
        *("--data.path", str(c4_dir), "--data.tokenizer", str(tokenizer_path)),
        *("--trainer.max_steps", "20"),
    ]
    subprocess.run(cmd, cwd=tmp_path, env=env, check=True, timeout=600)
    assert (tmp_path / "runs/mot/version_0/checkpoints/last.ckpt").is_file()
