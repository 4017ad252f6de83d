"""A fifth variant, defined here and registered with one call, passes the whole per-variant suite,
trains with ``motlab fit``, validating in the extra evaluation mode it declares, and decodes with
the KV cache: the proof that a variant costs one file and one registration."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import Tensor, nn
from variant_suite import (
    check_cached_decoding_matches_full_forward,
    check_compiled_matches_eager,
    check_counts,
    check_decode_step_compiles,
    check_generation_cached_matches_uncached,
    check_layer_causal,
    check_left_padding,
    check_model_causal,
)

from motlab.cli import cli_main
from motlab.layers import FFN_REGISTRY, Aux, FFNConfig, FFNLayer, LayerCost, register_variant
from motlab.layers.init import trunc_normal_fan_in_

REPO = Path(__file__).resolve().parents[2]


@dataclass
class GroupMeanConfig(FFNConfig):
    """A toy: the dense FFN of each token plus ``share`` × the FFN of its group's mean token."""

    variant: Literal["group_mean"] = "group_mean"
    """Registry name of this variant."""
    group_size: int = 4
    """G: examples averaged at one position."""
    share: float = 0.5
    """Weight of the group's mean token."""

    def validate(self, d_ff: int) -> None:
        if self.group_size < 1:
            raise ValueError("group_mean needs model.net.ffn.group_size >= 1")


class GroupMean(FFNLayer):
    """Evaluation mode ``discrete``: the group's first token instead of its mean."""

    EVAL_MODES = ("discrete",)

    def __init__(self, d_model: int, d_ff: int, cfg: GroupMeanConfig) -> None:
        super().__init__(d_model, d_ff, cfg)
        self.w1 = nn.Parameter(torch.empty(d_model, d_ff))  # (D, F)
        self.w2 = nn.Parameter(torch.empty(d_ff, d_model))  # (F, D)
        trunc_normal_fan_in_(self.w1, fan_in=d_model)
        trunc_normal_fan_in_(self.w2, fan_in=d_ff)
        self.first = False

    @property
    def mode(self) -> str | None:
        return "discrete" if self.first else None

    def set_mode(self, mode: str | None) -> None:
        self.first = mode == "discrete"

    def forward(self, x_BTD: Tensor) -> tuple[Tensor, Aux]:
        B, T, D = x_BTD.shape
        G = self.cfg.group_size
        x_QGTD = x_BTD.view(B // G, G, T, D)
        mean_QTD = x_QGTD[:, 0] if self.first else x_QGTD.mean(dim=1)
        mixed_BTD = mean_QTD.repeat_interleave(G, dim=0)
        out_BTD = F.relu(x_BTD @ self.w1) @ self.w2
        out_BTD = out_BTD + self.cfg.share * (F.relu(mixed_BTD @ self.w1) @ self.w2)
        return out_BTD, Aux(stats={"mean_norm": mean_QTD.detach().norm(dim=-1).mean()})


@pytest.fixture
def group_mean() -> Iterator[str]:
    register_variant("group_mean", GroupMeanConfig, GroupMean)  # the one line a variant needs
    yield "group_mean"
    del FFN_REGISTRY["group_mean"]


def test_causal(group_mean: str) -> None:
    check_layer_causal(group_mean)
    check_model_causal(group_mean)


def test_compiles_to_one_graph(group_mean: str) -> None:
    check_compiled_matches_eager(group_mean)


def test_counts_with_the_measured_default(group_mean: str) -> None:
    # cost() is not overridden: every parameter is active (W1, W2: 2 D d_ff), and the FLOPs
    # are measured: its FFN runs twice per token (its own and its group's mean).
    check_counts(group_mean, LayerCost(active_params=2 * 16 * 32, forward_macs=2 * 2 * 16 * 32))


def test_decodes_with_the_kv_cache(group_mean: str) -> None:
    """Cached decoding, its compiled step and cached generation need nothing of the variant;
    left padding, which it does not mask out of its groups, is refused with a clear error."""
    check_cached_decoding_matches_full_forward(group_mean)
    check_decode_step_compiles(group_mean)
    check_generation_cached_matches_uncached(group_mean)
    check_left_padding(group_mean)


def test_trains_with_motlab_fit(group_mean, c4_dir, tokenizer_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "group_mean.yaml").write_text(
        "model:\n  net:\n    ffn:\n      variant: group_mean\n      group_size: 4\n"
        "trainer:\n  logger:\n    class_path: lightning.pytorch.loggers.TensorBoardLogger\n"
        "    init_args: {save_dir: runs, name: group_mean}\n"
    )
    cli = cli_main(
        [
            "fit",
            *("--config", str(REPO / "conf/dense.yaml"), "--config", str(REPO / "conf/tiny.yaml")),
            *("--config", "group_mean.yaml"),
            *("--data.path", str(c4_dir), "--data.tokenizer", str(tokenizer_path)),
            *("--data.seq_len", "16", "--data.num_workers", "0", "--data.val_batches", "1"),
            *("--trainer.max_steps", "2", "--trainer.val_check_interval", "2"),
            *("--model.discrete_eval", "true"),
            *("--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"),
        ]
    )
    assert cli.trainer.global_step == 2
    assert isinstance(cli.model.net.blocks[-1].ffn, GroupMean)
    acc = EventAccumulator(str(tmp_path / "runs/group_mean/version_0"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert "routing/block1/mean_norm" in tags
    # Validation in the routing it runs, and in the evaluation mode it declares.
    assert {"val/loss", "val/group_mean/loss", "val/group_mean_discrete/loss"} <= set(tags)
    assert cli.model.net.blocks[-1].ffn.mode is None  # back in its own routing after validation
