"""What a checkpoint file holds, and whether it fits a model: the one place that reads them.

Two file kinds are understood: the Lightning checkpoints that ``motlab fit`` writes (the GPT
config as a plain dict in ``ckpt["net_config"]`` — the net as saved, which may differ from the
hyper-parameters after an in-run switch — and in ``ckpt["hyper_parameters"]["net"]``; the
weights under ``net.``; the data module's settings in ``ckpt["datamodule_hyper_parameters"]``),
the plain files :func:`save_model` writes (``{"config": ..., "state_dict": ...}``), and the
directories ``motlab export`` writes (config.json and model.safetensors, read by
:mod:`motlab.hf.files`, so a model from the hub loads too). ``LitLM``
writes and reads the net config through :func:`store_net_config` and :func:`net_config_of`, the
evaluation backend reads the data settings with :func:`read_data_config`, the sweeps a run's
progress with :func:`trained_steps`; where a run's checkpoint is, is :mod:`motlab.rundir`'s.

A resume (``--ckpt_path last``) continues from the newest checkpoint that is intact
(:func:`newest_intact_checkpoint`): one that loads and whose every record still has the CRC-32
it was written with (:func:`check_intact`); a damaged one is named and passed over.

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

from motlab.atomic import atomic_write
from motlab.config import GPTConfig
from motlab.config_keys import user_key
from motlab.hf.files import TOKENIZER, is_export, read_export
from motlab.layers.registry import Capacity
from motlab.model import GPT
from motlab.rundir import find_resume_checkpoint, resume_candidates

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
    """Write the config and weights of ``model`` for :func:`load_model` (atomically: ``path``
    holds the whole file or what it held before, :func:`motlab.atomic.atomic_write`)."""
    with atomic_write(path) as f:
        torch.save({"config": config_to_dict(model.cfg), "state_dict": model.state_dict()}, f)


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
    ``runs/mot``, a version or a checkpoint directory) its newest ``last.ckpt``; an exported
    model's directory is itself the checkpoint."""
    path = Path(path).expanduser()
    if path.is_dir() and not is_export(path):
        try:
            return find_resume_checkpoint(path)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{option} {e}" if option else str(e)) from e
    return path


def check_intact(path: str | Path, option: str | None = None) -> None:
    """Raise ``ValueError`` naming ``path`` unless it is a checkpoint that loads and whose every
    record has the CRC-32 it was written with.

    ``torch.load`` does not check the CRCs that ``torch.save`` writes, so a file whose tensors
    were damaged after the write (a bad copy, a failing disk) would load and train on wrong
    weights; this reads the whole file once to check them. Records written without a CRC
    (``torch.serialization.set_crc32_options(False)``: stored as 0) are not checked. A directory
    (a sharded checkpoint) is left to the strategy that reads it.
    """
    path = Path(path)
    if path.is_dir():
        return
    load_file(path, option=option)
    where = f"{option} {path}" if option else str(path)
    name = "its zip directory"
    try:
        with zipfile.ZipFile(path) as archive:
            for record in archive.infolist():
                if record.CRC == 0:
                    continue
                name = record.filename
                with archive.open(record) as f:  # raises at the end on a CRC mismatch
                    while f.read(1 << 24):
                        pass
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ValueError(
            f"{where} is damaged: {name} is not the data that was written "
            f"({type(e).__name__}: {str(e)[:120]})"
        ) from e


@dataclass(frozen=True)
class ResumePoint:
    """The checkpoint a resume continues from, and the newer ones passed over."""

    path: Path
    damaged: tuple[tuple[Path, str], ...] = ()
    """``(file, why)`` of each newer checkpoint that does not load, newest first."""

    def report(self) -> list[str]:
        """One line per damaged checkpoint, then which one is used instead (empty when the
        first choice was intact)."""
        if not self.damaged:
            return []
        lines = [f"damaged checkpoint, passed over: {why}" for _, why in self.damaged]
        return [*lines, f"resuming from the newest intact checkpoint instead: {self.path}"]


def newest_intact_checkpoint(root: str | Path) -> ResumePoint | None:
    """The checkpoint a resume of the experiment at ``root`` continues from: the first of
    :func:`motlab.rundir.resume_candidates` that is intact (:func:`check_intact`), with the
    damaged ones before it. None when there is no checkpoint at all; ``ValueError`` (naming
    every file) when there are some and none is intact."""
    damaged: list[tuple[Path, str]] = []
    for path in resume_candidates(root):
        try:
            check_intact(path)
        except (ValueError, FileNotFoundError) as e:
            damaged.append((path, str(e)))
            continue
        return ResumePoint(path, tuple(damaged))
    if not damaged:
        return None
    lines = "\n".join(f"  {why}" for _, why in damaged)
    raise ValueError(f"no checkpoint in {root} is intact:\n{lines}")


def read_saved_net(path: str | Path, option: str | None = None) -> SavedNet:
    """The net config and weights of a training checkpoint or a save_model file (``path`` may
    be a directory: :func:`resolve_checkpoint`).

    For a Lightning checkpoint the config is the net as it was when saved (``net_config``,
    written by ``LitLM.on_save_checkpoint``), else the ``net`` hyper-parameter.
    """
    path = resolve_checkpoint(path, option)
    if is_export(path):
        exported = read_export(path, option)
        return SavedNet(path, exported.config, exported.state, exported.global_step)
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
    names the problem). For an exported model, the tokenizer beside it."""
    if is_export(path):
        tokenizer = Path(path) / TOKENIZER
        return {"tokenizer": str(tokenizer)} if tokenizer.is_file() else {}
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
    flat_a, flat_b = _flat(a), _flat(b)
    diff = [
        f"{_as_set(key)}: checkpoint {flat_a.get(key)!r} vs config {flat_b.get(key)!r}"
        for key in dict.fromkeys([*flat_a, *flat_b])
        if key.split(".")[0] not in skip and key != "size" and flat_a.get(key) != flat_b.get(key)
    ]
    if diff:
        return (
            f"the checkpoint's {variant_a} model differs from the configured {variant_b} model "
            f"in {'; '.join(diff)}"
        )
    return ""


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"ffn": {"n_experts": 32}}`` as ``{"ffn.n_experts": 32}``: differences named per key,
    not as whole mappings."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _as_set(key: str) -> str:
    """A ``model.net`` key as the user sets it: ``data.seq_len`` for ``seq_len`` (bound from the
    data module), the vocabulary size by ``data.tokenizer``, ``model.net.KEY`` otherwise."""
    named = user_key(key)
    return f"{named} (its vocabulary size)" if key == "vocab_size" else named


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
    """The GPT stored at ``path`` (a checkpoint file, an experiment directory such as
    ``runs/mot`` for its newest ``last.ckpt``, or a directory ``motlab export`` wrote), in
    eval mode: ``model(tokens_BT) → logits_BTV``.

    Set for inference: token-choice layers run at ``capacity``, by default dropless, so a row's
    logits do not depend on the rest of the batch; ``"training"`` keeps the training capacity
    (:mod:`motlab.inference`)."""
    from motlab.inference import set_capacity

    saved = read_saved_net(path)
    model = GPT(GPTConfig.from_dict(saved.config))
    model.load_state_dict(saved.state)
    set_capacity(model, capacity)
    return model.to(map_location).eval()


def saved_source(saved: Mapping[str, Any], key: str) -> tuple[str | None, str | None]:
    """The checkpoint's ``data.{key}`` (``tokenizer``, ``path``) as ``(source, missing)``: a hub
    name or a path that exists here as ``source``; a path not found here as ``missing``.
    ``motlab fit`` saves local paths absolute; those of older checkpoints are relative to the
    directory the run was started in, and read relative to this one."""
    from motlab.data.tokenizer import looks_like_path

    source = saved.get(key)
    if not source or not isinstance(source, str):
        return None, None
    if looks_like_path(source) and not Path(source).expanduser().exists():
        return None, source
    return source, None


def saved_tokenizer(saved: Mapping[str, Any], path: Path, flag: str) -> str | None:
    """The tokenizer ``path`` was trained with, if saved (``None``: the caller's default); a
    saved path not found here is refused, naming ``flag``, rather than swapped for another
    tokenizer whose ids would not match the model's."""
    source, missing = saved_source(saved, "tokenizer")
    if missing is not None:
        raise FileNotFoundError(
            f"{path} was trained with the tokenizer {missing}, which is not found here: "
            f"pass its tokenizer.json ({flag})"
        )
    return source
