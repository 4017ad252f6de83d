"""Feed-forward variants and their registry.

A new routing variant costs one file here, one config dataclass with a ``variant`` literal, and
one entry in :data:`FFN_REGISTRY`; the model, CLI, causality tests and parameter counting pick it
up from the registry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from torch import nn

from motlab.layers.aux import Aux
from motlab.layers.dense import DenseConfig, DenseFFN
from motlab.layers.expert_choice import ExpertChoice, ExpertChoiceConfig
from motlab.layers.experts import Experts
from motlab.layers.mot import MoT, MoTConfig
from motlab.layers.token_choice import TokenChoice, TokenChoiceConfig

FFNConfig = DenseConfig | MoTConfig | TokenChoiceConfig | ExpertChoiceConfig


class Variant(NamedTuple):
    config: type
    layer: Callable[..., nn.Module]


FFN_REGISTRY: dict[str, Variant] = {
    "dense": Variant(DenseConfig, DenseFFN),
    "mot": Variant(MoTConfig, MoT),
    "token_choice": Variant(TokenChoiceConfig, TokenChoice),
    "expert_choice": Variant(ExpertChoiceConfig, ExpertChoice),
}


def _variant(name: str) -> Variant:
    if name not in FFN_REGISTRY:
        raise ValueError(
            f"unknown feed-forward variant {name!r}; valid names: {', '.join(FFN_REGISTRY)} "
            "(set model.net.ffn.variant)"
        )
    return FFN_REGISTRY[name]


def ffn_config(spec: Mapping[str, Any] | FFNConfig) -> FFNConfig:
    """Turn ``{"variant": "mot", "group_size": 32, ...}`` into that variant's config dataclass."""
    if dataclasses.is_dataclass(spec):
        return spec  # type: ignore[return-value]
    spec = dict(spec)
    name = spec.pop("variant", "dense")
    config_cls = _variant(name).config
    fields = {f.name for f in dataclasses.fields(config_cls)} - {"variant"}
    unknown = sorted(set(spec) - fields)
    if unknown:
        raise ValueError(
            f"unknown key(s) {unknown} for feed-forward variant {name!r}; "
            f"valid keys: {sorted(fields)}"
        )
    return config_cls(**spec)


def build_ffn(d_model: int, d_ff: int, cfg: FFNConfig) -> nn.Module:
    """Instantiate the layer of ``cfg.variant``; every layer maps (B, T, D) → ((B, T, D), Aux)."""
    return _variant(cfg.variant).layer(d_model, d_ff, cfg)


__all__ = [
    "Aux",
    "DenseConfig",
    "DenseFFN",
    "ExpertChoice",
    "ExpertChoiceConfig",
    "Experts",
    "FFNConfig",
    "FFN_REGISTRY",
    "MoT",
    "MoTConfig",
    "TokenChoice",
    "TokenChoiceConfig",
    "build_ffn",
    "ffn_config",
]
