"""What a checkpoint file holds, and whether it fits a model: the one place that reads them.

Two file kinds are understood: the Lightning checkpoints that ``motlab fit`` writes (the GPT
config as a plain dict in ``ckpt["net_config"]`` — the net as saved, which may differ from the
hyper-parameters after an in-run switch — and in ``ckpt["hyper_parameters"]["net"]``; the
weights under ``net.``; the data module's settings in ``ckpt["datamodule_hyper_parameters"]``),
and the plain files :func:`save_model` writes (``{"config": ..., "state_dict": ...}``). ``LitLM``
writes and reads the net config through :func:`store_net_config` and :func:`net_config_of`, the
evaluation backend reads the data settings with :func:`read_data_config`, the sweeps a run's
progress with :func:`trained_steps`; where a run's checkpoint is, is :mod:`motlab.rundir`'s.

Files are read with ``torch.load(weights_only=True)``: tensors, containers and numbers only,
never arbitrary pickled objects, so a checkpoint from elsewhere cannot run code. motlab's own
files need nothing more; any other file is refused with a message naming it.
"""

from __future__ import annotations

import dataclasses
import pickle
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from motlab.config import GPTConfig
from motlab.layers.registry import Capacity
from motlab.model import GPT
from motlab.rundir import find_resume_checkpoint

WHAT = "a motlab checkpoint (`motlab fit`'s .ckpt or a motlab.save_model file)"

NET_CONFIG = "net_config"
"""Where a Lightning checkpoint keeps the GPT config of the net as saved."""


def config_to_dict(cfg: GPTConfig) -> dict[str, Any]:
    """A plain, YAML/pickle-safe dict of ``cfg`` (the ffn config as ``{variant: ..., ...}``)."""
    return dataclasses.asdict(cfg)


def variant_of(config: Mapping[str, Any]) -> str:
    """The feed-forward variant a GPT config dict's routed blocks use."""
    return str(dict(config.get("ffn") or {}).get("variant", "dense"))


def save_model(model: GPT, path: str | Path) -> None:
    """Write the config and weights of ``model`` for :func:`load_model`."""
    torch.save({"config": config_to_dict(model.cfg), "state_dict": model.state_dict()}, path)


@dataclass(frozen=True)
class SavedNet:
    """The net a checkpoint file describes."""

    path: Path
    config: dict[str, Any]
    """The GPT config as saved (plain dict)."""
    state: dict[str, Tensor]
    """The net's weights, names without the ``net.`` prefix."""
    global_step: int | None
    """Optimiser steps trained (None for a save_model file)."""

    @property
    def variant(self) -> str:
        return variant_of(self.config)

    def describe(self) -> str:
        step = "" if self.global_step is None else f", step {self.global_step}"
        return f"{self.path} ({self.variant}{step})"


def load_file(path: str | Path, what: str = WHAT, option: str | None = None) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` of a file the user named, on the CPU.

    Every failure names the file, the option it came from (``option``, e.g. ``--ckpt_path``) and
    what was expected of it, instead of a bare ``UnpicklingError`` or ``EOFError``.
    """
    path = Path(path)
    where = f"{option} {path}" if option else str(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model checkpoint at {where}: no such file (expected {what})")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{where} holds objects other than tensors, containers and numbers, so it is not "
            f"{what}; motlab loads checkpoints with torch.load(weights_only=True) and does not "
            f"unpickle arbitrary objects. ({str(e).splitlines()[0]})"
        ) from e
    except (RuntimeError, ValueError, EOFError, OSError, zipfile.BadZipFile) as e:
        detail = (str(e).splitlines() or [""])[0]
        if "zipfile" in detail or "mmap" in detail:
            detail = "not a file written by torch.save"
        raise ValueError(
            f"{where} is not {what}: it is truncated, corrupt or of another format "
            f"({type(e).__name__}: {detail[:120] or 'no detail'})"
        ) from e
    if not isinstance(obj, dict):
        raise ValueError(f"{where} holds a {type(obj).__name__}, not {what}")
    return obj


def resolve_checkpoint(path: str | Path, option: str | None = None) -> Path:
    """A checkpoint file: ``path`` itself, or for a directory (an experiment such as
    ``runs/mot``, a version or a checkpoint directory) its newest ``last.ckpt``."""
    path = Path(path).expanduser()
    if path.is_dir():
        try:
            return find_resume_checkpoint(path)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{option} {e}" if option else str(e)) from e
    return path


def read_saved_net(path: str | Path, option: str | None = None) -> SavedNet:
    """The net config and weights of a training checkpoint or a save_model file (``path`` may
    be a directory: :func:`resolve_checkpoint`).

    For a Lightning checkpoint the config is the net as it was when saved (``net_config``,
    written by ``LitLM.on_save_checkpoint``), else the ``net`` hyper-parameter.
    """
    path = resolve_checkpoint(path, option)
    ckpt = load_file(path, option=option)
    where = f"{option} {path}" if option else str(path)
    if "config" in ckpt and "state_dict" in ckpt:  # save_model
        return SavedNet(Path(path), dict(ckpt["config"]), dict(ckpt["state_dict"]), None)
    net = net_config_of(ckpt)
    if net is None or "state_dict" not in ckpt:
        raise ValueError(
            f"{where} is a PyTorch file but not {WHAT}: it has no model config and weights "
            f"(keys: {sorted(ckpt)[:8]})"
        )
    prefix = "net."
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    return SavedNet(Path(path), net, state, ckpt.get("global_step"))


def trained_steps(path: str | Path) -> int:
    """Optimiser steps a Lightning checkpoint holds (``global_step``), without reading its
    tensors (they are memory-mapped, not loaded)."""
    return int(load_file(path).get("global_step", 0))


def read_net_config(path: str | Path, option: str | None = None) -> dict[str, Any] | None:
    """The net config of a Lightning checkpoint (None if it has none), read lazily (mmap)."""
    return net_config_of(load_file(path, option=option))


def net_config_of(ckpt: Mapping[str, Any]) -> dict[str, Any] | None:
    """The GPT config of a loaded Lightning checkpoint: the net as it was saved
    (:func:`store_net_config`), else the ``net`` hyper-parameter; None if it has neither."""
    net = ckpt.get(NET_CONFIG) or hyperparameters_of(ckpt).get("net")
    return dict(net) if net is not None else None


def store_net_config(ckpt: dict[str, Any], cfg: GPTConfig) -> None:
    """Record in a checkpoint being saved the net as it is now (after an in-run switch it
    differs from the ``net`` hyper-parameter)."""
    ckpt[NET_CONFIG] = config_to_dict(cfg)


def hyperparameters_of(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """The LightningModule's saved hyper-parameters of a loaded checkpoint (empty if none)."""
    return dict(ckpt.get("hyper_parameters") or {})


def read_data_config(path: str | Path) -> dict[str, Any]:
    """The data module's saved hyper-parameters (``tokenizer``, ``path``, ...) of the Lightning
    checkpoint at ``path``; empty when it has none or cannot be read (reading its model then
    names the problem)."""
    try:
        ckpt = load_file(path)
    except (ValueError, FileNotFoundError):
        return {}
    hp = ckpt.get("datamodule_hyper_parameters")
    return dict(hp) if isinstance(hp, Mapping) else {}


def net_config_mismatch(
    saved: Mapping[str, Any], current: Mapping[str, Any], ignore: Iterable[str] = ()
) -> str:
    """Empty if two GPT config dicts describe the same model, else a message naming both.

    Both are normalised through :class:`GPTConfig` first, so a preset name and its explicit
    sizes compare equal. Keys in ``ignore`` (e.g. late-bound ``vocab_size``) are not compared,
    nor is ``init``: the weights come from the checkpoint, not from the initialisation.
    """
    a, b = _normalised(saved), _normalised(current)
    skip = {*ignore, "init"}
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


def check_weights_fit(saved: SavedNet, state: Mapping[str, Tensor], model: GPT) -> None:
    """Raise, naming the file and both variants, unless ``state`` loads strictly into ``model``."""
    current = model.state_dict()
    missing = sorted(set(current) - set(state))
    unexpected = sorted(set(state) - set(current))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in current.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        ours = variant_of(config_to_dict(model.cfg))
        lines = [
            f"model.init_from={saved.path}: its weights do not fit this model "
            f"(checkpoint variant {saved.variant}, this model {ours})."
        ]
        if missing:
            lines.append(f"  missing in the checkpoint: {_short(missing)}")
        if unexpected:
            lines.append(f"  not in this model: {_short(unexpected)}")
        if shapes:
            lines.append(f"  shape mismatches: {_short(shapes)}")
        raise ValueError("\n".join(lines))


def _normalised(config: Mapping[str, Any]) -> dict[str, Any]:
    return config_to_dict(GPTConfig.from_dict(config))


def _short(items: list[str], n: int = 5) -> str:
    more = f" ... (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def load_model(
    path: str | Path, map_location: str | torch.device = "cpu", capacity: Capacity = "dropless"
) -> GPT:
    """The GPT stored at ``path`` (a checkpoint file, or an experiment directory such as
    ``runs/mot`` for its newest ``last.ckpt``), in eval mode: ``model(tokens_BT) → logits_BTV``.

    Set for inference: token-choice layers run at ``capacity``, by default dropless, so a row's
    logits do not depend on the rest of the batch; ``"training"`` keeps the training capacity
    (:mod:`motlab.inference`)."""
    from motlab.inference import set_capacity

    saved = read_saved_net(path)
    model = GPT(GPTConfig.from_dict(saved.config))
    model.load_state_dict(saved.state)
    set_capacity(model, capacity)
    return model.to(map_location).eval()


def resolves_here(source: Any) -> bool:
    """Whether a saved tokenizer or data source still resolves on this machine (a hub name, or
    a path that exists)."""
    from motlab.data.tokenizer import looks_like_path

    if not source or not isinstance(source, str):
        return False
    return not looks_like_path(source) or Path(source).expanduser().exists()
