"""motlab's model summary replaces Lightning's, whose table printed ``FLOPs 0``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ModelSummary

from motlab.callbacks import RunSummary
from motlab.callbacks.summary import describe_model, si
from motlab.config import GPTConfig
from motlab.lit import LitLM
from motlab.stats import model_stats

CONF = Path(__file__).resolve().parents[2] / "conf"


def test_si_prefixes() -> None:
    assert [si(x) for x in (373, 1020, 1.3e6, 336_936_960, 0.5)] == [
        "373", "1.02k", "1.3M", "337M", "0.5"
    ]  # fmt: skip


def test_describe_model_uses_motlabs_own_counts() -> None:
    cfg = GPTConfig(size="medium", ffn={"variant": "mot"})
    with torch.device("meta"):  # 337M parameters: no need to allocate them
        text = describe_model(LitLM(cfg))
    stats = model_stats(cfg)
    assert "feed-forward mot (group_size=32, n_experts=32" in text and "in blocks 4-7" in text
    assert (
        f"{si(stats.total_params)} parameters ({si(stats.active_params)} active per token)" in text
    )
    assert f"{si(stats.flops_per_token)} training FLOPs per token" in text
    assert "FLOPs 0" not in text


@pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")
def test_the_cli_prints_motlabs_summary_instead_of_lightnings(c4_dir, tokenizer_path) -> None:
    from motlab.cli import cli_main

    cli = cli_main(
        ["--config", str(CONF / "dense.yaml"), "--config", str(CONF / "tiny.yaml"),
         "--data.path", str(c4_dir), "--data.tokenizer", str(tokenizer_path)],
        run=False,
    )  # fmt: skip
    assert any(isinstance(cb, RunSummary) for cb in cli.trainer.callbacks)
    assert not any(isinstance(cb, ModelSummary) for cb in cli.trainer.callbacks)
