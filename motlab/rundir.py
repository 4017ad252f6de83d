"""Where a run's files are: the one module that knows the layout of an experiment directory.

::

    {save_dir}/{name}/                  an experiment: every run logged under one logger name
        version_N/                      one TensorBoard version: a run, or the part of a run
            events.out.tfevents.*       that a resume logged into it
            config.yaml, hparams.yaml   the run's configuration (LightningCLI, the logger)
            checkpoints/
                0005000.ckpt            every checkpoint.every_n_train_steps
                last.ckpt               the latest state of a run that ended or was stopped

``checkpoint.dirpath`` puts the checkpoints of every version in that one directory instead.

Everything that needs to know where a run is asks here: ``motlab fit --ckpt_path last`` and
``--model.init_from last`` (:func:`experiment_root`, :func:`resume_checkpoint`), the resume into
the version it continues (:func:`resumed_version`), ``motlab.load_model`` of a directory, the
run tables of :mod:`motlab.analysis.runs` (which versions are one run and which are separate:
:func:`newest_run`) and the sweeps (one experiment per run, finished or resumable by its
``last.ckpt``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VERSION_PREFIX = "version_"
"""TensorBoard's (and Lightning's) name of a version directory: ``version_0``, ``version_1``, ..."""
CHECKPOINT_DIR = "checkpoints"
"""The checkpoint directory inside a version directory (without ``checkpoint.dirpath``)."""
LAST_CHECKPOINT = "last.ckpt"
"""The file that holds the latest state of a run (``checkpoint.save_last``)."""
RUN_CONFIG = "config.yaml"
"""The whole run's configuration, written by LightningCLI into the version directory."""
HPARAMS = "hparams.yaml"
"""The module's hyper-parameters, written by the logger into the version directory."""
DEFAULT_LOGGER_DIR = "lightning_logs"
"""Lightning's default logger writes its versions here, under ``trainer.default_root_dir``."""


def experiment_dir(save_dir: str | Path, name: str) -> Path:
    """The experiment of a logger with ``save_dir`` and ``name``: its versions live in it."""
    return Path(save_dir) / name


def is_version_dir(path: Path) -> bool:
    """Whether ``path`` is named as a version directory (``version_N``)."""
    return re.fullmatch(rf"{VERSION_PREFIX}\d+", path.name) is not None


def version_name(version: int | str) -> str:
    """``3`` → ``version_3``; a name (``"version_3"``, or any other) is kept as it is."""
    return version if isinstance(version, str) else f"{VERSION_PREFIX}{version}"


def natural_key(name: str) -> list[Any]:
    """Sort key that orders ``version_9`` before ``version_10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


# --------------------------------------------------------------------------------- the config


def logger_root(config: Any) -> Path | None:
    """``save_dir/name`` of the logger in a parsed ``motlab fit`` config (a subcommand's
    namespace: ``trainer.logger`` and ``trainer.default_root_dir``); Lightning's default logger
    when the logger is ``True`` or unset; None for a logger without a ``save_dir``."""
    logger = config.trainer.get("logger")
    default_root = Path(config.trainer.get("default_root_dir") or ".")
    if logger is True or logger is None:
        return default_root / DEFAULT_LOGGER_DIR
    if isinstance(logger, list):
        logger = logger[0] if logger else None
    init = _get(logger, "init_args")
    save_dir = _get(init, "save_dir")
    if save_dir is None:
        return None
    return experiment_dir(save_dir, _get(init, "name") or "")


def experiment_root(config: Any) -> Path | None:
    """Where the experiment configured in a parsed ``motlab fit`` config keeps its checkpoints:
    ``checkpoint.dirpath`` if set, else the logger's ``save_dir/name`` (:func:`logger_root`)."""
    checkpoint = config.get("checkpoint") or {}
    dirpath = _get(checkpoint, "dirpath")
    return Path(dirpath) if dirpath else logger_root(config)


def _get(node: Any, key: str) -> Any:
    """``node[key]`` of a mapping or a jsonargparse ``Namespace``; None when absent."""
    getter = getattr(node, "get", None)
    return getter(key) if callable(getter) else None


# ---------------------------------------------------------------------------- the checkpoints


def last_checkpoints(root: str | Path) -> list[Path]:
    """Every ``last.ckpt`` of an experiment: ``root`` may be an experiment directory (its
    ``version_*/checkpoints/last.ckpt``), a version directory or a checkpoint directory."""
    root = Path(root)
    return [
        *root.glob(f"{VERSION_PREFIX}*/{CHECKPOINT_DIR}/{LAST_CHECKPOINT}"),
        *root.glob(f"{CHECKPOINT_DIR}/{LAST_CHECKPOINT}"),
        *root.glob(LAST_CHECKPOINT),
    ]


def resume_checkpoint(root: str | Path) -> Path | None:
    """The checkpoint a resume of the experiment at ``root`` continues from — its newest
    ``last.ckpt`` (by modification time: ``version_10`` may be older than ``version_9``) — or
    None when there is nothing to resume."""
    candidates = last_checkpoints(root)
    return max(candidates, key=lambda c: c.stat().st_mtime) if candidates else None


def find_resume_checkpoint(root: str | Path) -> Path:
    """:func:`resume_checkpoint`, raising ``FileNotFoundError`` (naming where it looked) when
    there is nothing to resume."""
    found = resume_checkpoint(root)
    if found is None:
        raise FileNotFoundError(
            f"no {LAST_CHECKPOINT} in {root} (looked in {VERSION_PREFIX}*/{CHECKPOINT_DIR}/, "
            f"{CHECKPOINT_DIR}/ and the directory itself)"
        )
    return found


def resumed_version(checkpoint: str | Path, logger_root: Path | None) -> str | None:
    """The version directory a run resumed from ``checkpoint`` logs into: the one the checkpoint
    lives in (``ROOT/version_N/checkpoints/...``) when that is a version of the logger's
    experiment ``logger_root``; else None (the logger starts a new version)."""
    checkpoint = Path(checkpoint)
    version = checkpoint.parent.parent
    if logger_root is None or checkpoint.parent.name != CHECKPOINT_DIR:
        return None
    if not version.name.startswith(VERSION_PREFIX):
        return None
    if logger_root.resolve() != version.parent.resolve():
        return None
    return version.name


# ---------------------------------------------------------------------- versions and runs


@dataclass(frozen=True)
class Version:
    """What one version directory logged: a run, or the part of one a resume logged into it."""

    directory: Path
    first_step: int
    last_step: int
    start: float
    """Wall time of its first logged point."""

    @property
    def resumed(self) -> bool | None:
        """Whether its saved ``config.yaml`` records a ``ckpt_path`` (LightningCLI saves the one
        it was started with); None when there is no such record."""
        config = read_yaml(self.directory / RUN_CONFIG)
        if config is None or "ckpt_path" not in config:
            return None
        return config["ckpt_path"] is not None

    @property
    def is_evaluation(self) -> bool:
        """Logged at one step only: ``motlab validate``/``test`` log at step 0 into a version of
        their own, which is an evaluation, not a run."""
        return self.first_step == self.last_step


def in_time_order(versions: Sequence[Version]) -> list[Version]:
    """``versions`` oldest first: by their first point, not by name (``version_10`` may have
    been written before ``version_9`` when an earlier experiment's versions were kept)."""
    return sorted(versions, key=lambda v: (v.start, natural_key(v.directory.name)))


def newest_run(versions: Sequence[Version]) -> tuple[list[Version], list[Version]]:
    """``(chain, left_out)``: the newest run — its newest version with the unbroken chain of
    older versions it continues, oldest first — and every other version.

    The same command trained again starts a new version at step 0: a separate run. A version
    continues the one before it (in time) only when its steps go on past that version's last
    step and its saved ``config.yaml``, where there is one, records a ``ckpt_path`` (a resume
    from a checkpoint kept elsewhere, e.g. with another ``checkpoint.dirpath``). Evaluations
    (:attr:`Version.is_evaluation`) are left out, and the newest run is chosen among the others
    when there are any.
    """
    ordered = in_time_order(versions)
    runs = [v for v in ordered if not v.is_evaluation] or ordered
    if not runs:
        return [], []
    chain = [runs[-1]]
    for earlier in reversed(runs[:-1]):
        later = chain[0]
        if later.first_step <= earlier.last_step or later.resumed is False:
            break
        chain.insert(0, earlier)
    left_out = [v for v in ordered if all(v is not c for c in chain)]
    return chain, left_out


def read_yaml(path: Path) -> dict[str, Any] | None:
    """The mapping in a YAML file, or None when it is missing or not a readable mapping."""
    import yaml

    if not path.is_file():
        return None
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return None
    return loaded if isinstance(loaded, dict) else None
