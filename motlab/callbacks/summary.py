"""What is being trained, in motlab's own numbers, printed once at the start of ``fit``.

Lightning's model summary counts FLOPs only for a module given an example input, so for motlab
it printed ``FLOPs 0``; motlab knows its parameters, active parameters and training FLOPs per
token (:func:`motlab.stats.model_stats`, from each layer's own cost) and prints those instead.
"""

from __future__ import annotations

import dataclasses

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info

from motlab.stats import model_stats


def si(value: float) -> str:
    """``value`` with three significant digits and an SI prefix: 1020 → ``1.02k``."""
    for prefix in ("", "k", "M", "G", "T"):
        if abs(value) < 999.5 or prefix == "T":
            return f"{value:.3g}{prefix}"
        value /= 1000
    raise AssertionError  # pragma: no cover


def _blocks(indices: list[int]) -> str:
    if indices and indices == list(range(indices[0], indices[-1] + 1)) and len(indices) > 1:
        return f"blocks {indices[0]}-{indices[-1]}"
    return "block" + ("s " if len(indices) != 1 else " ") + ", ".join(map(str, indices))


def describe_model(pl_module: pl.LightningModule) -> str:
    """Two lines: the model's shape and routed blocks; its parameters and FLOPs per token."""
    cfg = pl_module.net.cfg
    stats = model_stats(cfg)
    routed = cfg.routed_blocks()
    keys = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(cfg.ffn).items() if k != "variant")
    layout = (
        f"feed-forward {cfg.ffn.variant} ({keys}) in {_blocks(routed)}, dense elsewhere"
        if routed and cfg.ffn.variant != "dense"
        else "dense feed-forward"
    )
    return (
        f"model: d_model {cfg.d_model}, {cfg.n_layers} blocks, {cfg.n_heads} heads, "
        f"seq_len {cfg.seq_len}, vocab {cfg.vocab_size}; {layout}\n"
        f"model: {si(stats.total_params)} parameters ({si(stats.active_params)} active per "
        f"token), {si(stats.flops_per_token)} training FLOPs per token"
    )


class RunSummary(pl.Callback):
    """Print :func:`describe_model` when ``fit`` starts (``trainer.enable_model_summary``)."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        rank_zero_info(describe_model(pl_module))
