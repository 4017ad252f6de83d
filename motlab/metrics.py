"""The names of what ``motlab fit`` logs, for the code that logs them and the code that reads them.

TensorBoard tags, as ``LitLM``, the callbacks and Lightning's ``LearningRateMonitor`` write them
and as :mod:`motlab.analysis`, ``motlab compare``, the sweep report and the progress bar read
them back. A renamed metric is renamed here, for both sides at once.
"""

from __future__ import annotations

TRAIN_LOSS = "train/loss"
"""Cross-entropy of the training batch (the auxiliary losses not included), rank-averaged."""
TRAIN_PPL = "train/ppl"
"""``exp(train/loss)``."""
TRAIN_AUX_LOSS = "train/aux_loss"
"""Sum of the routed layers' weighted auxiliary losses (only when there are any)."""
GRAD_NORM = "train/grad_norm"
"""Global gradient norm before clipping."""

VAL_LOSS = "val/loss"
"""Token-weighted validation cross-entropy over all validation batches and ranks."""

TOKENS_PER_SEC = "perf/tokens_per_sec"
"""Input tokens per second over all devices, since the previous logging step."""
TOKENS_PER_SEC_PER_DEVICE = "perf/tokens_per_sec_per_device"
"""The same per device."""
TOKENS_SEEN = "perf/tokens_seen"
"""Training tokens seen: optimiser steps × tokens per optimiser step."""
MFU = "perf/mfu"
"""Model FLOPs utilisation against the device's peak."""

LR = "lr"
"""The learning-rate schedule's name: ``LearningRateMonitor`` logs ``lr/{param group}``
(``lr/decay``, ``lr/no_decay``)."""


def eval_loss(split: str, mode: str | None = None) -> str:
    """``val/loss``, or with a routing mode ``val/mot/loss`` (curves before and after a switch
    of routing stay apart)."""
    return f"{split}/loss" if mode is None else f"{split}/{mode}/loss"


def eval_ppl(split: str, mode: str | None = None) -> str:
    """``val/ppl``, or ``val/{mode}/ppl``."""
    return f"{split}/ppl" if mode is None else f"{split}/{mode}/ppl"


def routing(name: str) -> str:
    """``routing/{name}``: a routed layer's statistic or loss, ``name`` as ``block4/...``."""
    return f"routing/{name}"
