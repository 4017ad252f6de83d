"""What an exported directory holds, read without transformers: for :func:`motlab.load_model`
and ``model.init_from``.

An export (``motlab export``) is a directory with ``config.json`` and the weights in
``model.safetensors`` (or shards listed in ``model.safetensors.index.json``): tensors only, read
with safetensors, which cannot run code. ``config.json`` says how to read them: a ``motlab``
model (remote code) holds motlab's config under ``net`` and motlab's weights under ``net.*``; a
``gpt2`` model exported by motlab holds motlab's config under ``motlab_net`` and GPT-2's weights
(:mod:`motlab.hf.gpt2`). A directory from anywhere else is refused, naming it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from motlab.config import GPTConfig
from motlab.hf.gpt2 import GPT2_NET_KEY, from_gpt2

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
TOKENIZER = "tokenizer.json"
MOTLAB_TYPE = "motlab"
"""``model_type`` of a model exported as remote code."""
GLOBAL_STEP_KEY = "motlab_global_step"
"""Where config.json keeps the optimiser steps the exported model was trained for."""

WHAT = "a model exported by `motlab export` (config.json and model.safetensors)"


def is_export(path: str | Path) -> bool:
    """Whether ``path`` is a directory laid out as an export (config.json and safetensors)."""
    path = Path(path)
    return (path / CONFIG).is_file() and (
        (path / WEIGHTS).is_file() or (path / WEIGHTS_INDEX).is_file()
    )


@dataclass(frozen=True)
class ExportedNet:
    config: dict[str, Any]
    """motlab's model config (a ``GPTConfig`` dict)."""
    state: dict[str, Tensor]
    """motlab's weights."""
    global_step: int | None


def read_export(path: str | Path, option: str | None = None) -> ExportedNet:
    """The motlab config and weights of the exported directory ``path``."""
    path = Path(path)
    where = f"{option} {path}" if option else str(path)
    try:
        config = json.loads((path / CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{where}: {CONFIG} cannot be read ({e}); expected {WHAT}") from e
    model_type = config.get("model_type")
    step = config.get(GLOBAL_STEP_KEY)
    step = int(step) if isinstance(step, int) else None
    if model_type == MOTLAB_TYPE and isinstance(config.get("net"), dict):
        state = _read_weights(path, where)
        prefix = "net."
        net = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        return ExportedNet(dict(config["net"]), net, step)
    if model_type == "gpt2" and isinstance(config.get(GPT2_NET_KEY), dict):
        net_config = dict(config[GPT2_NET_KEY])
        state = from_gpt2(_read_weights(path, where), GPTConfig.from_dict(net_config), where)
        return ExportedNet(net_config, state, step)
    raise ValueError(
        f"{where} is a Hugging Face model directory (model_type {model_type!r}) but not {WHAT}: "
        "its config.json has no motlab model config"
    )


def _read_weights(path: Path, where: str) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if (path / WEIGHTS).is_file():
        files = [path / WEIGHTS]
    else:
        index = json.loads((path / WEIGHTS_INDEX).read_text())
        files = [path / name for name in sorted(set(index.get("weight_map", {}).values()))]
    state: dict[str, Tensor] = {}
    for file in files:
        try:
            state.update(load_file(file))
        except (SafetensorError, OSError) as e:
            raise ValueError(
                f"{where}: {file.name} is not a readable safetensors file ({e})"
            ) from e
    return state
