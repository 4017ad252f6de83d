"""Save and load models outside of training: ``motlab.load_model(path)``.

Two file kinds are understood: the Lightning checkpoints that ``motlab fit`` writes (the GPT
config is stored in the checkpoint's hyper-parameters, the weights under ``net.``), and the plain
files :func:`save_model` writes (``{"config": ..., "state_dict": ...}``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from motlab.config import GPTConfig
from motlab.model import GPT


def config_to_dict(cfg: GPTConfig) -> dict[str, Any]:
    """A plain, YAML/pickle-safe dict of ``cfg`` (the ffn config as ``{variant: ..., ...}``)."""
    return dataclasses.asdict(cfg)


def save_model(model: GPT, path: str | Path) -> None:
    """Write the config and weights of ``model`` for :func:`load_model`."""
    torch.save({"config": config_to_dict(model.cfg), "state_dict": model.state_dict()}, path)


def _read(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    if not path.is_file():
        raise FileNotFoundError(f"no model checkpoint at {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if "config" in ckpt:  # save_model
        return ckpt["config"], ckpt["state_dict"]
    hparams = ckpt.get("hyper_parameters", {})
    net = hparams.get("net_config") or hparams.get("net")
    if net is None or "state_dict" not in ckpt:
        raise ValueError(f"{path} is neither a motlab training checkpoint nor a save_model file")
    if dataclasses.is_dataclass(net):
        net = dataclasses.asdict(net)
    prefix = "net."
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    return dict(net), state


def load_config(path: str | Path) -> GPTConfig:
    """The :class:`GPTConfig` stored in a checkpoint."""
    return GPTConfig(**_read(Path(path))[0])


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> GPT:
    """The GPT stored at ``path``, in eval mode: ``model(tokens_BT) → logits_BTV``."""
    config, state = _read(Path(path))
    model = GPT(GPTConfig(**config))
    model.load_state_dict(state)
    return model.to(map_location).eval()
