"""The contract every feed-forward variant keeps, and the registry that names them.

A variant is a config dataclass and a layer class, joined under a name by one
:func:`register_variant` call at the bottom of the variant's own file in ``motlab/layers/``
(the package imports every module in it, so nothing else needs editing). Everything outside
that file — the model, the CLI, parameter and FLOP counts, routing analysis and the tests that
are parametrised over the registry — works through this contract alone:

* the config subclasses :class:`FFNConfig`: a ``variant`` literal, ``validate(d_ff)`` and
  ``group_size`` (1 unless the layer mixes or picks across the batch);
* the layer subclasses :class:`FFNLayer`: built as ``Layer(d_model, d_ff, cfg)``, it maps
  ``x_BTD`` to ``(out_BTD, Aux)``, and may override :meth:`FFNLayer.cost` (active parameters
  and multiply-adds per token), :meth:`FFNLayer.routing_report` (what analysis shows) and
  declare extra evaluation modes (:attr:`FFNLayer.EVAL_MODES`, :attr:`FFNLayer.mode`,
  :meth:`FFNLayer.set_mode`; MoT's argmax routing is one) that validation can run in.

The output at position t may depend on the inputs of any row of the batch (of its group) at
position t, never on other positions: that is what keeps a layer causal and lets cached
decoding run it one position at a time (a layer carries no state over time). Inference adds two
hooks whose defaults are right for position-wise layers (group size 1):
:meth:`FFNLayer.forward_masked` (left-padded prompts: padding must take no part in a group)
and :meth:`FFNLayer.set_capacity` (token choice's capacity, dropless at inference).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple, Protocol

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from motlab.layers.aux import Aux

Capacity = float | Literal["dropless", "training"]
"""How much a capacity-limited layer (token choice) takes at inference: ``"dropless"`` (every
token gets its k experts, so a row's output does not depend on the rest of the batch: the
default of :func:`motlab.generate`, :func:`motlab.load_model` and the lm-eval backend),
``"training"`` (the configured ``capacity_factor``, as in training and in-training
validation), or a capacity factor."""

CAPACITY_NAMES = ("dropless", "training")


def check_capacity(capacity: Any) -> Capacity:
    """``capacity`` if it is a :data:`Capacity` (a name or a factor > 0), else a clear error."""
    if capacity in CAPACITY_NAMES:
        return capacity
    number = isinstance(capacity, (int, float)) and not isinstance(capacity, bool)
    if number and math.isfinite(capacity) and capacity > 0:
        return float(capacity)
    raise ValueError(
        f"capacity must be 'dropless', 'training' or a capacity factor > 0, got {capacity!r}"
    )


def parse_capacity(text: Any) -> Capacity:
    """A :data:`Capacity` from a command-line or ``model_args`` string (``1.25`` a factor)."""
    if isinstance(text, str) and text not in CAPACITY_NAMES:
        try:
            text = float(text)
        except ValueError:
            pass
    return check_capacity(text)


class FFNConfig(Protocol):
    """What a variant's config dataclass provides; subclass it to inherit the defaults.

    Fields become ``model.net.ffn.*`` keys; their attribute docstrings are the help text that
    ``motlab variants`` prints.
    """

    variant: str
    """Registry name of the variant (a ``Literal`` field whose default is that name)."""

    @property
    def group_size(self) -> int:
        """Examples of the batch the layer mixes or picks among at one position; the per-device
        batch must be a multiple of it. 1 = every row is computed on its own."""
        return 1

    def validate(self, d_ff: int) -> None:
        """Raise at config time, before any model is built, if the sizes don't fit together."""


@dataclass(frozen=True)
class LayerCost:
    """What one token costs in a feed-forward layer, for comparing variants at equal compute."""

    active_params: float
    """Parameters a token's computation is multiplied by (fractional for layers whose experts
    process mixtures or picks of a group)."""
    forward_macs: float
    """Multiply-adds per token in the forward pass."""


class FFNLayer(nn.Module):
    """Base class of every feed-forward layer: ``Layer(d_model, d_ff, cfg)``, then
    ``forward(x_BTD) -> (out_BTD, Aux)``.

    Args:
        d_model: Residual width D.
        d_ff: The model's dense hidden size, the basis of FLOP matching.
        cfg: The variant's config.
    """

    EVAL_MODES: ClassVar[tuple[str, ...]] = ()
    """Extra ways the layer can be evaluated besides its own routing, by name (MoT:
    ``("discrete",)``, argmax routing, the τ → 0 diagnostic). ``motlab fit`` validates in the
    ``discrete`` mode on request (``model.discrete_eval``), logged as
    ``val/{variant}_discrete/loss``; :func:`motlab.modes.evaluating_in` runs a model in one."""

    def __init__(self, d_model: int, d_ff: int, cfg: FFNConfig) -> None:
        super().__init__()
        self.d_model, self.d_ff, self.cfg = d_model, d_ff, cfg

    @property
    def mode(self) -> str | None:
        """The evaluation mode (one of :attr:`EVAL_MODES`) the layer runs in now; None = its
        own routing. A layer with modes overrides this and :meth:`set_mode`."""
        return None

    def set_mode(self, mode: str | None) -> None:
        """Run in ``mode`` (one of :attr:`EVAL_MODES`), or in the layer's own routing (None)."""
        if mode is not None:
            raise self._unknown_mode(mode)

    @contextmanager
    def in_mode(self, mode: str) -> Iterator[None]:
        """Run in ``mode`` inside the ``with`` block; the mode before it is restored after."""
        if mode not in self.EVAL_MODES:
            raise self._unknown_mode(mode)
        before = self.mode
        self.set_mode(mode)
        try:
            yield
        finally:
            self.set_mode(before)

    def forward(self, x_BTD: Tensor) -> tuple[Tensor, Aux]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _unknown_mode(self, mode: str) -> ValueError:
        modes = ", ".join(self.EVAL_MODES) or "none"
        return ValueError(
            f"{type(self).__name__} has no evaluation mode {mode!r} (its modes: {modes})"
        )

    def cost(self) -> LayerCost:
        """Active parameters and forward multiply-adds per token.

        The default counts every parameter as active and measures the multiply-adds with
        ``torch.utils.flop_counter`` over one forward pass on the meta device (no memory, no
        arithmetic). Override it where the paper's convention differs from what runs: the
        built-in routed layers count analytically (token choice, for one, computes padded
        capacity slots that do not count as a token's compute).
        """
        G = self.cfg.group_size
        B, T = 2 * G, 16
        meta = {
            name: torch.empty_like(t, device="meta")
            for name, t in [*self.named_parameters(), *self.named_buffers()]
        }
        x_BTD = torch.empty(B, T, self.d_model, device="meta")
        try:
            with FlopCounterMode(display=False) as counter:
                torch.func.functional_call(self, meta, (x_BTD,))
        except Exception as e:
            raise RuntimeError(
                f"{type(self).__name__}.cost(): the layer's forward pass cannot run on the meta "
                f"device to count its FLOPs ({e}); override cost() in the variant's file"
            ) from e
        params = sum(p.numel() for p in self.parameters())
        return LayerCost(active_params=params, forward_macs=counter.get_total_flops() / 2 / (B * T))

    def routing_report(self, x_BTD: Tensor, aux: Aux) -> dict[str, Tensor]:
        """What the layer chooses to show of its routing on one batch, by name, from its input
        and the ``Aux`` it returned (:func:`motlab.analysis.inspect_routing` keeps every entry,
        on the CPU, 0-d tensors as floats). Nothing by default."""
        return {}

    def forward_masked(self, x_BTD: Tensor, real_BT: Tensor) -> tuple[Tensor, Aux]:
        """The forward pass when some positions are left padding (``real_BT`` False), as in a
        batch of prompts of different lengths: padding must not change a real position's output.

        The default is :meth:`forward` itself, which is right for a layer that computes every
        row on its own (group size 1): padding's outputs go only to padding. A layer that mixes
        or picks among the rows of a group must keep padding out of its groups; it overrides
        this method (MoT, expert choice), and without it the default refuses to run on padding.
        """
        self.check_padding()
        return self(x_BTD)

    @property
    def takes_padding(self) -> bool:
        """Whether :meth:`forward_masked` handles padding: group size 1, or overridden."""
        overridden = type(self).forward_masked is not FFNLayer.forward_masked
        return self.cfg.group_size == 1 or overridden

    def check_padding(self) -> None:
        """Raise, naming the variant and the fix, if the layer cannot take left padding."""
        if not self.takes_padding:
            raise ValueError(
                f"the feed-forward variant {self.cfg.variant!r} mixes groups of "
                f"{self.cfg.group_size} rows but does not handle left padding "
                "(FFNLayer.forward_masked): give it prompts of equal length, or override "
                "forward_masked in the variant's file so that padded positions take no part in "
                "a group"
            )

    def set_capacity(self, capacity: Capacity) -> Capacity:
        """Run at ``capacity`` from now on (:data:`Capacity`); return the previous setting.

        Only layers with a capacity (token choice) override it; the default has nothing to set
        and returns ``"training"``. :func:`motlab.inference.capacity` sets every layer of a model.
        """
        return "training"


class Variant(NamedTuple):
    """A registered variant: its config dataclass and its layer class."""

    config: type[FFNConfig]
    layer: type[FFNLayer]


FFN_REGISTRY: dict[str, Variant] = {}
"""Every registered variant by name (``model.net.ffn.variant``)."""


def register_variant(name: str, config_cls: type, layer_cls: type) -> None:
    """Make a feed-forward variant available as ``model.net.ffn.variant: name``.

    Checks the contract once, here, so that a mistake shows at import rather than mid-run.
    """
    problems = []
    if not (dataclasses.is_dataclass(config_cls) and FFNConfig in config_cls.__mro__):
        problems.append(f"{config_cls.__name__} must be a dataclass subclassing FFNConfig")
    else:
        fields = {f.name: f for f in dataclasses.fields(config_cls)}
        if "variant" not in fields or fields["variant"].default != name:
            problems.append(f"{config_cls.__name__}.variant must default to {name!r}")
    if not (isinstance(layer_cls, type) and issubclass(layer_cls, FFNLayer)):
        problems.append(f"{getattr(layer_cls, '__name__', layer_cls)} must subclass FFNLayer")
    if name in FFN_REGISTRY and FFN_REGISTRY[name] != (config_cls, layer_cls):
        problems.append(f"the name {name!r} is taken by {FFN_REGISTRY[name].layer.__name__}")
    if problems:
        raise TypeError(f"register_variant({name!r}): " + "; ".join(problems))
    FFN_REGISTRY[name] = Variant(config_cls, layer_cls)


def check_group_multiple(
    batch_size: int, group_size: int, variant: str, name: str | None = None, hint: str = ""
) -> None:
    """Raise unless ``batch_size`` rows make whole groups of ``group_size`` examples, the rows
    a MoT or expert-choice layer mixes or picks among at one position.

    ``name`` is the config key the batch size comes from (``data.batch_size``), None for a
    batch handed to a layer; ``hint`` is said last (another way out, e.g. filler rows).
    """
    if batch_size % group_size == 0:
        return
    batch = f"{name}={batch_size} (per device)" if name else f"a batch of {batch_size} rows"
    example = max(group_size, batch_size // group_size * group_size)
    raise ValueError(
        f"{batch} is not a multiple of model.net.ffn.group_size={group_size}: {variant} groups "
        f"the batch into groups of {group_size} examples on every device. Use a per-device "
        f"batch that is a multiple of {group_size} (e.g. {example}), or change the group "
        f"size{hint}."
    )


def _variant(name: str) -> Variant:
    if name not in FFN_REGISTRY:
        raise ValueError(
            f"unknown feed-forward variant {name!r}; valid names: {', '.join(FFN_REGISTRY)} "
            "(set model.net.ffn.variant; `motlab variants` lists them with their keys)"
        )
    return FFN_REGISTRY[name]


def config_fields(config_cls: type) -> list[dataclasses.Field]:
    """The user-settable fields of a variant's config (all but ``variant``)."""
    return [f for f in dataclasses.fields(config_cls) if f.name != "variant"]


def ffn_config(spec: Mapping[str, Any] | FFNConfig) -> FFNConfig:
    """Turn ``{"variant": "mot", "group_size": 32, ...}`` into that variant's config dataclass.

    Keys and value types are checked here: the CLI parses ``model.net.ffn`` as a free-form
    mapping (its keys depend on the variant), so nothing else has looked inside it.
    """
    if dataclasses.is_dataclass(spec):
        return spec  # type: ignore[return-value]
    spec = dict(spec)  # type: ignore[arg-type]
    name = spec.pop("variant", "dense")
    config_cls = _variant(name).config
    fields = {f.name for f in config_fields(config_cls)}
    unknown = sorted(set(spec) - fields)
    if unknown:
        raise ValueError(
            f"unknown key(s) {unknown} for feed-forward variant {name!r}; "
            f"valid keys: {sorted(fields)} (`motlab variants {name}` describes them)"
        )
    hints = typing.get_type_hints(config_cls)
    wrong = [
        f"model.net.ffn.{key}={value!r} is not {_type_name(hints[key])}"
        for key, value in spec.items()
        if not _has_type(value, hints[key])
    ]
    if wrong:
        raise ValueError(f"feed-forward variant {name!r}: " + "; ".join(wrong))
    return config_cls(**spec)


def _has_type(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits ``hint`` — the plain types variant configs use (numbers, bools,
    strings, None, literals and unions of them); any other hint is left to the variant."""
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint in (int, float):
        numbers = (int, float) if hint is float else (int,)
        return isinstance(value, numbers) and not isinstance(value, bool)
    if hint in (bool, str):
        return isinstance(value, hint)
    return True


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def build_ffn(d_model: int, d_ff: int, cfg: FFNConfig) -> FFNLayer:
    """Instantiate the layer of ``cfg.variant``; every layer maps (B, T, D) → ((B, T, D), Aux)."""
    return _variant(cfg.variant).layer(d_model, d_ff, cfg)
