"""Feed-forward variants and their registry.

A new routing variant costs one file here — its config (subclassing :class:`FFNConfig`), its
layer (subclassing :class:`FFNLayer`) and one :func:`register_variant` line at the bottom — plus
one YAML in ``conf/`` and its tests. This package imports every module in it, so the model, the
CLI, parameter and FLOP counts, routing analysis and the registry-parametrised tests pick the
variant up with no other file touched. ``motlab variants`` lists every variant's keys.
"""

from __future__ import annotations

import importlib
import pkgutil

from motlab.layers.aux import Aux
from motlab.layers.dense import DenseConfig, DenseFFN
from motlab.layers.expert_choice import ExpertChoice, ExpertChoiceConfig
from motlab.layers.experts import Experts
from motlab.layers.mot import MoT, MoTConfig
from motlab.layers.registry import (
    FFN_REGISTRY,
    FFNConfig,
    FFNLayer,
    LayerCost,
    Variant,
    build_ffn,
    check_group_multiple,
    config_fields,
    ffn_config,
    register_variant,
)
from motlab.layers.token_choice import TokenChoice, TokenChoiceConfig

# Variants added as files of their own register themselves when imported.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
del _module

__all__ = [
    "Aux",
    "DenseConfig",
    "DenseFFN",
    "ExpertChoice",
    "ExpertChoiceConfig",
    "Experts",
    "FFNConfig",
    "FFNLayer",
    "FFN_REGISTRY",
    "LayerCost",
    "MoT",
    "MoTConfig",
    "TokenChoice",
    "TokenChoiceConfig",
    "Variant",
    "build_ffn",
    "check_group_multiple",
    "config_fields",
    "ffn_config",
    "register_variant",
]
