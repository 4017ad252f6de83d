"""Save and load models outside of training: ``motlab.load_model(path)``.

Two file kinds are understood: the Lightning checkpoints that ``motlab fit`` writes (the GPT
config as a plain dict in ``ckpt["net_config"]`` — the net as saved — and in
``ckpt["hyper_parameters"]["net"]``, the weights under ``net.``), and the plain files
:func:`save_model` writes (``{"config": ..., "state_dict": ...}``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
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


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(net config dict, net state dict)`` of a training checkpoint or a save_model file.

    For a Lightning checkpoint the config is the net as it was when saved (``net_config``,
    written by ``LitLM.on_save_checkpoint``), else the ``net`` hyper-parameter; the weights are
    the ``state_dict`` entries under ``net.`` with that prefix removed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model checkpoint at {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if "config" in ckpt:  # save_model
        return ckpt["config"], ckpt["state_dict"]
    hparams = ckpt.get("hyper_parameters", {})
    net = ckpt.get("net_config") or hparams.get("net_config") or hparams.get("net")
    if net is None or "state_dict" not in ckpt:
        raise ValueError(f"{path} is neither a motlab training checkpoint nor a save_model file")
    if dataclasses.is_dataclass(net):
        net = dataclasses.asdict(net)
    prefix = "net."
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    return dict(net), state


def net_config_mismatch(
    saved: Mapping[str, Any], current: Mapping[str, Any], ignore: Iterable[str] = ()
) -> str:
    """Empty if two GPT config dicts describe the same model, else a message naming both.

    Both are normalised through :class:`GPTConfig` first, so a preset name and its explicit
    sizes compare equal. Keys in ``ignore`` (e.g. late-bound ``vocab_size``) are not compared.
    """
    a, b = _normalised(saved), _normalised(current)
    skip = set(ignore)
    variant_a, variant_b = a["ffn"]["variant"], b["ffn"]["variant"]
    if variant_a != variant_b:
        return (
            f"the checkpoint's model uses the {variant_a!r} feed-forward variant but the "
            f"configured model uses {variant_b!r} (model.net.ffn.variant); resume with the "
            f"checkpoint's config, or start a new run from its weights with model.init_from"
        )
    diff = [
        f"{key}: checkpoint {a[key]!r} vs config {b[key]!r}"
        for key in a
        if key not in skip and key != "size" and a[key] != b.get(key)
    ]
    if diff:
        return (
            f"the checkpoint's {variant_a} model differs from the configured {variant_b} model "
            f"in model.net: {'; '.join(diff)}"
        )
    return ""


def _normalised(config: Mapping[str, Any]) -> dict[str, Any]:
    cfg = GPTConfig(**{k: v for k, v in dict(config).items() if not k.startswith("_")})
    return config_to_dict(cfg)


def load_config(path: str | Path) -> GPTConfig:
    """The :class:`GPTConfig` stored in a checkpoint."""
    return GPTConfig(**read_checkpoint(path)[0])


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> GPT:
    """The GPT stored at ``path``, in eval mode: ``model(tokens_BT) → logits_BTV``."""
    config, state = read_checkpoint(path)
    model = GPT(GPTConfig(**config))
    model.load_state_dict(state)
    return model.to(map_location).eval()
