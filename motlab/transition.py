"""Transition tuning (METHOD.md §5): turn a trained MoT into a sparse token-choice MoE.

Every conversion and switch decision lives here; ``LitLM`` and the CLI only ask.

MoT and token choice share one expert layout (``experts.router`` (D, E), ``experts.w1``
(E, D, F), ``experts.w2`` (E, F, D)), so conversion moves no numbers: the router becomes the
token-choice gate and the experts stay experts. Only the routing changes — the softmax moves
from the group axis to the expert axis, and mixing becomes top-k dispatch with capacity.

Two ways to run it:

* **two-stage**: stage 2 is a token-choice config started from stage 1's checkpoint with
  ``model.init_from``; :func:`init_state` checks that the configured model is the MoT model with
  token-choice routing and hands over its tensors. :func:`convert_model` does the same in Python.
* **in-run switch** (:class:`TransitionConfig`, ``model.transition``): MoT until ``switch_at``,
  then :func:`switch_in_place` swaps the routing modules around the very same ``Parameter``
  objects, so the optimiser keeps its state; :func:`prepare_for_resume` redoes the switch before
  a checkpoint saved after it is loaded.

Either way, ``model.transition.calibration`` can recentre the token-choice routers on the first
training batch after the conversion (:mod:`motlab.calibration`).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

import docstring_parser
import torch
from torch import Tensor, nn

from motlab.calibration import CALIBRATIONS, Calibration
from motlab.checkpoint import SavedNet, config_to_dict, net_config_mismatch, variant_of
from motlab.config import GPTConfig
from motlab.layers import MoT, MoTConfig, TokenChoice, TokenChoiceConfig, ffn_config
from motlab.model import GPT
from motlab.modes import evaluating_in, routing_mode

MOT_ONLY_KEYS = ("log_temperature",)
"""State-dict entries of MoT that have no token-choice counterpart (the temperature)."""

ROUTING_KEYS = ("top_k", "capacity_factor", "load_balancing_weight", "z_loss_weight")
"""The token-choice keys a transition may set; expert count and size come from the MoT."""

SWITCH_AT_HELP = "Optimiser step at which MoT layers become token choice; ``None`` = never."


CALIBRATION_HELP = (
    "Router calibration on the first training batch after the conversion, for the in-run "
    "switch and for a MoT checkpoint given to a token-choice model with ``model.init_from``: "
    "``centre`` moves each expert's logits to mean 0 on that batch, ``standardise`` also to one "
    "common spread, so that argmax routing does not pile onto the few experts whose logits MoT "
    "left largest (MoT itself cannot see per-expert offsets); ``none`` converts as is."
)


@dataclasses.dataclass
class _InRunSwitch:
    """What :class:`TransitionConfig` does beside holding its fields (a dataclass without any,
    so that jsonargparse reads the subclass as a plain dataclass: keys, not a class path)."""

    def __post_init__(self) -> None:
        switch_at = getattr(self, "switch_at", None)
        if switch_at is not None and switch_at < 0:
            raise ValueError(f"model.transition.switch_at must be >= 0, got {switch_at}")
        calibration = getattr(self, "calibration", "none")
        if calibration not in CALIBRATIONS:
            raise ValueError(
                f"model.transition.calibration must be one of {', '.join(CALIBRATIONS)}, got "
                f"{calibration!r}"
            )

    def routing(self) -> dict[str, Any]:
        """The token-choice routing keys, for :func:`convert_config`."""
        return {k: getattr(self, k) for k in ROUTING_KEYS}


def _transition_config() -> type[_InRunSwitch]:
    """:class:`TransitionConfig`: ``switch_at``, then :data:`ROUTING_KEYS` as
    :class:`~motlab.layers.TokenChoiceConfig` declares them, with its types, defaults (the
    paper's) and help, then ``calibration`` (:mod:`motlab.calibration`; not a token-choice key:
    it acts once, at the conversion).

    Built from the token-choice config rather than written out, so a routing key, its default
    and its docstring are defined once, in ``motlab/layers/token_choice.py``. The help goes into
    the class docstring, where jsonargparse (``motlab fit --help``) reads it.
    """
    hints = typing.get_type_hints(TokenChoiceConfig)
    defaults = {f.name: f.default for f in dataclasses.fields(TokenChoiceConfig)}
    docs = docstring_parser.parse_from_object(TokenChoiceConfig).params
    helps = {p.arg_name: " ".join((p.description or "").split()) for p in docs}
    fields: list[Any] = [("switch_at", int | None, dataclasses.field(default=None))]
    fields += [(k, hints[k], dataclasses.field(default=defaults[k])) for k in ROUTING_KEYS]
    fields += [("calibration", Calibration, dataclasses.field(default="none"))]
    args = [f"    switch_at: {SWITCH_AT_HELP}"]
    args += [f"    {k}: After the switch: {helps[k]}" for k in ROUTING_KEYS]
    args += [f"    calibration: {CALIBRATION_HELP}"]
    doc = (
        "The in-run switch, ``model.transition``: MoT until ``switch_at``, then token choice "
        "over the same tensors with the same optimiser state and schedule (METHOD.md §5). The "
        "routing keys are those of ``token_choice`` (``motlab variants token_choice``).\n\n"
        "Args:\n" + "\n".join(args)
    )
    cls = dataclasses.make_dataclass(
        "TransitionConfig", fields, bases=(_InRunSwitch,), namespace={"__doc__": doc}
    )
    cls.__module__ = __name__
    return cls


TransitionConfig = _transition_config()


def convert_config(cfg: GPTConfig, routing: Mapping[str, Any] | None = None) -> GPTConfig:
    """``cfg`` with its MoT feed-forward replaced by token choice over the same experts.

    ``routing`` holds token-choice keys (:data:`ROUTING_KEYS`); unset keys take token choice's
    defaults (the paper's top-1, 1.25, 0.01). Expert count and size come from the MoT config and
    may not be overridden.
    """
    if not isinstance(cfg.ffn, MoTConfig) or not cfg.routed_blocks():
        variant = cfg.ffn.variant if cfg.routed_blocks() else "dense (no routed blocks)"
        raise ValueError(
            f"transition tuning converts a MoT model, but this model's routed layers are "
            f"{variant}; train stage 1 with a MoT config (e.g. conf/mot.yaml)"
        )
    spec = {k: v for k, v in (routing or {}).items() if k != "variant"}
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


def convert_model(model: GPT, routing: Mapping[str, Any] | None = None) -> GPT:
    """A new token-choice :class:`GPT` holding copies of ``model``'s tensors, bit for bit."""
    new = GPT(convert_config(model.cfg, routing))
    new.load_state_dict(_without_mot_only(model.state_dict()), strict=True)
    return new.to(next(model.parameters()).device).train(model.training)


def init_state(cfg: GPTConfig, saved: SavedNet) -> dict[str, Tensor]:
    """The weights ``model.init_from`` gives a model of ``cfg``: the checkpoint's as they are,
    or, for a MoT checkpoint and a token-choice model (stage 2), the MoT tensors without the
    temperature — after checking that ``cfg`` is that MoT model with token-choice routing."""
    if saved.variant != "mot" or cfg.ffn.variant != "token_choice":
        return saved.state
    mot_cfg = GPTConfig.from_dict(saved.config)
    routing = {k: getattr(cfg.ffn, k) for k in ROUTING_KEYS}
    expected = convert_config(mot_cfg, routing)  # d_expert pinned to the MoT's size
    assert cfg.d_ff is not None and isinstance(cfg.ffn, TokenChoiceConfig)
    ours = dataclasses.replace(
        cfg, ffn=dataclasses.replace(cfg.ffn, d_expert=cfg.ffn.expert_size(cfg.d_ff))
    )
    message = net_config_mismatch(
        config_to_dict(expected), config_to_dict(ours), ignore=("vocab_size", "seq_len")
    )
    if message:
        assert isinstance(expected.ffn, TokenChoiceConfig)
        raise ValueError(
            f"model.init_from={saved.path} is a MoT checkpoint; converting it to token choice "
            f"needs model.net to be the same model with token-choice routing "
            f"(n_experts {expected.ffn.n_experts}, d_expert {expected.ffn.d_expert}): {message}"
        )
    return _without_mot_only(saved.state)


def check_switch(cfg: GPTConfig, transition: TransitionConfig) -> None:
    """Validate an in-run switch when the model is configured, not when it is due."""
    if transition.switch_at is None or cfg.ffn.variant == "token_choice":
        return
    if isinstance(cfg.ffn, MoTConfig) and cfg.ffn.learnable_temperature:
        raise ValueError(
            "the in-run switch keeps the optimiser state, which a learnable MoT temperature "
            "would not survive; set model.net.ffn.learnable_temperature false, or use the "
            "two-stage transition (model.init_from)"
        )
    convert_config(cfg, transition.routing())


def switch_due(model: GPT, transition: TransitionConfig, step: int) -> bool:
    """Whether the in-run switch should happen before optimiser step ``step``."""
    at = transition.switch_at
    return at is not None and step >= at and routing_mode(model) in ("mot", "mot_discrete")


def prepare_for_resume(model: GPT, transition: TransitionConfig, saved: Mapping[str, Any]) -> bool:
    """Switch ``model`` first if the checkpoint whose net config is ``saved`` was written after
    the configured in-run switch (token choice saved, MoT configured): its weights then fit.
    Returns whether it switched."""
    if transition.switch_at is None or routing_mode(model) != "mot":
        return False
    if variant_of(saved) != "token_choice":
        return False
    switch_in_place(model, transition.routing())
    return True


def switch_in_place(model: GPT, routing: Mapping[str, Any] | None = None) -> GPT:
    """Replace every MoT layer of ``model`` by token choice sharing the same Parameter objects.

    Returns ``model`` (modified). Optimiser state keyed by those parameters stays valid.
    """
    new_cfg = convert_config(model.cfg, routing)
    assert isinstance(new_cfg.ffn, TokenChoiceConfig)
    for block in model.blocks:
        if isinstance(block.ffn, MoT):
            block.ffn = _token_choice_on(block.ffn, new_cfg)
    model.cfg = new_cfg
    return model


def _token_choice_on(mot: MoT, cfg: GPTConfig) -> TokenChoice:
    assert isinstance(cfg.ffn, TokenChoiceConfig) and cfg.d_model and cfg.d_ff
    with torch.device("meta"):  # its own experts would be thrown away: allocate nothing
        layer = TokenChoice(cfg.d_model, cfg.d_ff, cfg.ffn)
    layer.experts = mot.experts  # the same module and Parameters, not copies
    return layer


def _without_mot_only(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: v for k, v in state.items() if not k.endswith(MOT_ONLY_KEYS)}


def discrete_mot(model: nn.Module) -> AbstractContextManager[None]:
    """Evaluate MoT layers with argmax routing (METHOD.md §2, the τ → 0 diagnostic): their
    ``discrete`` evaluation mode, inside a ``with`` block."""
    return evaluating_in(model, "discrete")
