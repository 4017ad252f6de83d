"""Transition tuning (METHOD.md §5): turn a trained MoT into a sparse token-choice MoE.

MoT and token choice share one expert layout (``experts.router`` (D, E), ``experts.w1``
(E, D, F), ``experts.w2`` (E, F, D)), so conversion moves no numbers: the router becomes the
token-choice gate and the experts stay experts. Only the routing changes — the softmax moves
from the group axis to the expert axis, and mixing becomes top-k dispatch with capacity.

Two entry points:

* :func:`convert_config` / :func:`convert_model` build a new token-choice model from a MoT one
  (two-stage runs: stage 2 starts from stage 1's checkpoint with ``model.init_from``);
* :func:`switch_in_place` swaps the routing modules of a live model while keeping the very same
  ``Parameter`` objects, so an optimiser built on the MoT model keeps its state (the in-run
  switch).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from motlab.config import GPTConfig
from motlab.layers import MoT, MoTConfig, TokenChoice, TokenChoiceConfig, ffn_config
from motlab.model import GPT

# State-dict entries of MoT that have no token-choice counterpart (the temperature).
MOT_ONLY_KEYS = ("log_temperature",)


def convert_config(cfg: GPTConfig, spec: dict[str, Any] | None = None) -> GPTConfig:
    """``cfg`` with its MoT feed-forward replaced by token choice over the same experts.

    ``spec`` holds the token-choice routing keys (``top_k``, ``capacity_factor``,
    ``load_balancing_weight``, ``z_loss_weight``); their defaults are the paper's (top-1, 1.25,
    0.01). Expert count and size come from the MoT config and may not be overridden.
    """
    if not isinstance(cfg.ffn, MoTConfig) or not cfg.routed_blocks():
        variant = cfg.ffn.variant if cfg.routed_blocks() else "dense (no routed blocks)"
        raise ValueError(
            f"transition tuning converts a MoT model, but this model's routed layers are "
            f"{variant}; train stage 1 with a MoT config (e.g. conf/mot.yaml)"
        )
    spec = {k: v for k, v in (spec or {}).items() if k != "variant"}
    fixed = {"n_experts", "d_expert"} & set(spec)
    if fixed:
        raise ValueError(
            f"transition keeps the MoT experts; remove {sorted(fixed)} from the token-choice spec"
        )
    assert cfg.d_ff is not None
    mot = cfg.ffn
    tc = ffn_config({"variant": "token_choice", **spec})
    tc = dataclasses.replace(tc, n_experts=mot.n_experts, d_expert=mot.expert_size(cfg.d_ff))
    return dataclasses.replace(cfg, ffn=tc)


def convert_model(model: GPT, spec: dict[str, Any] | None = None) -> GPT:
    """A new token-choice :class:`GPT` holding copies of ``model``'s tensors, bit for bit."""
    new = GPT(convert_config(model.cfg, spec))
    state = {k: v for k, v in model.state_dict().items() if not k.endswith(MOT_ONLY_KEYS)}
    new.load_state_dict(state, strict=True)
    return new.to(next(model.parameters()).device).train(model.training)


def switch_in_place(model: GPT, spec: dict[str, Any] | None = None) -> GPT:
    """Replace every MoT layer of ``model`` by token choice sharing the same Parameter objects.

    Returns ``model`` (modified). Optimiser state keyed by those parameters stays valid.
    """
    new_cfg = convert_config(model.cfg, spec)
    assert isinstance(new_cfg.ffn, TokenChoiceConfig)
    for block in model.blocks:
        if isinstance(block.ffn, MoT):
            block.ffn = _token_choice_on(block.ffn, new_cfg)
    model.cfg = new_cfg
    return model


def check_switch(cfg: GPTConfig, at_step: int, spec: dict[str, Any] | None) -> GPTConfig:
    """Validate an in-run switch early; returns the token-choice config it will produce."""
    if at_step < 0:
        raise ValueError(f"model.switch_to_token_choice_at must be >= 0, got {at_step}")
    if isinstance(cfg.ffn, MoTConfig) and cfg.ffn.learnable_temperature:
        raise ValueError(
            "the in-run switch keeps the optimiser state, which a learnable MoT temperature "
            "would not survive; set model.net.ffn.learnable_temperature false, or use the "
            "two-stage transition (model.init_from)"
        )
    return convert_config(cfg, spec)


def saved_after_switch(saved_variant: str, current_variant: str, switch_at: int | None) -> bool:
    """Whether a checkpoint of ``saved_variant`` is what the configured in-run switch makes of
    the ``current_variant`` model (token choice saved, MoT configured, a switch step set)."""
    return switch_at is not None and saved_variant == "token_choice" and current_variant == "mot"


def _token_choice_on(mot: MoT, cfg: GPTConfig) -> TokenChoice:
    experts = mot.experts
    assert isinstance(cfg.ffn, TokenChoiceConfig) and cfg.d_model and cfg.d_ff
    with torch.device("meta"):  # its own experts would be thrown away: allocate nothing
        layer = TokenChoice(cfg.d_model, cfg.d_ff, cfg.ffn)
    layer.experts = experts  # the same module and Parameters, not copies
    return layer


@contextmanager
def discrete_mot(model: nn.Module) -> Iterator[None]:
    """Evaluate MoT layers with argmax routing (METHOD.md §2, the τ → 0 diagnostic)."""
    layers = [m for m in model.modules() if isinstance(m, MoT)]
    before = [m.discrete for m in layers]
    for m in layers:
        m.discrete = True
    try:
        yield
    finally:
        for m, flag in zip(layers, before, strict=True):
            m.discrete = flag


def routing_mode(model: nn.Module) -> str:
    """``"mot"``, ``"mot_discrete"``, ``"token_choice"``, ... — the routing the model uses now."""
    cfg = getattr(model, "cfg", None)
    if cfg is None or not cfg.routed_blocks():
        return "dense"
    if any(isinstance(m, MoT) and m.discrete for m in model.modules()):
        return "mot_discrete"
    return cfg.ffn.variant
