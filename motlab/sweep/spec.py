"""Sweep files (``conf/sweeps/*.yaml``) and their expansion into named ``motlab fit`` runs.

A sweep file::

    config: [../mot.yaml]                 # base config file(s), relative to this file
    axes:
      E:                                  # an axis; several keys change together (zipped)
        model.net.ffn.n_experts: [8, 32, 128]
        model.net.ffn.group_size: [8, 32, 128]
      model.optim.lr: [3.0e-4, 7.0e-4]    # shorthand: one key, named after its last part
    baselines:
      dense: {config: [../dense.yaml]}

expands into the cartesian product of its axes — here six runs named ``E=8,lr=0.0003`` … — plus
one run per baseline. Each run is one ``motlab fit`` command: the base configs, the caller's
overlays, the sweep's fixed ``set`` keys, the caller's extra flags, the run's axis values, and
the logger's ``save_dir`` (the sweep's directory) and ``name`` (the run's), so that every run
logs and checkpoints into its own experiment directory ``{save_dir}/{run}/version_N``.

The file is read with plain YAML and checked here for its shape (unknown keys, list lengths,
duplicate run names); the merged configs of the runs are checked by :mod:`motlab.sweep.check`
with motlab's own parser and classes.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from motlab.rundir import experiment_dir

Scale = Literal["log", "linear"]

SWEEP_OWNED_FLAGS = ("--trainer.logger", "--ckpt_path", "--checkpoint.dirpath")
"""Flag prefixes the sweep sets itself: callers may not pass them as extra ``motlab fit`` flags."""


class SweepError(ValueError):
    """A sweep file or a run of it is malformed; the message names the file, key or run."""


@dataclass
class SlurmSettings:
    """Defaults of the ``slurm`` launcher; its command-line flags win over these."""

    gpus: int = 1
    """GPUs per node (one task per GPU). Runs must set ``trainer.devices`` to the same count."""
    nodes: int = 1
    """Nodes per job (``trainer.num_nodes`` must match)."""
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    time: str = "24:00:00"
    """Time limit per job, ``[D-]HH:MM:SS`` or minutes; a job that reaches it is requeued."""
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    array_parallelism: int | None = None
    """Most jobs of the array running at once (default: all)."""
    signal_delay_s: int = 120
    """Seconds before the time limit at which SLURM signals the job to checkpoint and requeue."""
    additional: dict[str, Any] = field(default_factory=dict)
    """Further ``#SBATCH`` options, e.g. ``{constraint: h100}``."""


@dataclass
class Baseline:
    """A reference run (e.g. dense) the sweep's runs are compared against."""

    config: list[str] | None = None
    """Its config files (relative to the sweep file); default: the sweep's ``config``."""
    set: dict[str, Any] = field(default_factory=dict)
    """Dotted keys fixed for this run, after the sweep's own ``set``."""


@dataclass
class Axis:
    """One swept dimension: a list of values, and the config key(s) each value sets."""

    name: str
    keys: dict[str, list[Any]]
    """Dotted config key → its value at each point of the axis (equal lengths: zipped)."""
    values: list[Any]
    """The axis' own values: in run names and on the report's x axis."""
    scale: Scale | None = None
    """x scale of the report; None: log when the values are positive and span 8× or more."""

    def __len__(self) -> int:
        return len(self.values)

    @property
    def log_scale(self) -> bool:
        if self.scale is not None:
            return self.scale == "log"
        numbers = [v for v in self.values if _is_number(v)]
        return (
            len(numbers) == len(self.values)
            and min(numbers) > 0
            and (max(numbers) / min(numbers) >= 8)
        )


@dataclass
class SweepRun:
    """One ``motlab fit`` run of a sweep."""

    name: str
    """Experiment (logger) name: ``axis=value`` pairs, or the baseline's name."""
    save_dir: str
    """The sweep's log directory; the run logs into ``save_dir/name/version_N``."""
    configs: list[str]
    flags: list[str]
    """Every flag after the ``--config`` files, in order (values as strings)."""
    values: dict[str, Any] = field(default_factory=dict)
    """Axis name → this run's value (empty for a baseline)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Dotted key → value that this run sets on top of its configs (``set`` and axes)."""
    baseline: bool = False

    @property
    def run_dir(self) -> Path:
        """The run's experiment directory: its versions and checkpoints."""
        return experiment_dir(self.save_dir, self.name)

    def fit_args(self, resume: bool = False) -> list[str]:
        """Arguments after ``motlab``: ``fit --config ... --key value ... [--ckpt_path last]``."""
        args = ["fit"]
        for path in self.configs:
            args += ["--config", path]
        args += self.flags
        if resume:
            args += ["--ckpt_path", "last"]
        return args

    def command(self, resume: bool = False) -> str:
        """The shell command, as printed by ``--dry-run`` and run by the launchers."""
        return shlex.join(["motlab", *self.fit_args(resume)])


@dataclass
class Sweep:
    """A parsed sweep file."""

    name: str
    path: Path
    config: list[str]
    """Base config files, as paths relative to the working directory (or absolute)."""
    axes: list[Axis]
    baselines: dict[str, Baseline]
    set: dict[str, Any] = field(default_factory=dict)
    save_dir: str = ""
    slurm: SlurmSettings = field(default_factory=SlurmSettings)

    def runs(
        self,
        overlays: Sequence[str] = (),
        extra_flags: Sequence[str] = (),
        save_dir: str | None = None,
    ) -> list[SweepRun]:
        """The baselines first, then every combination of the axes (the first axis slowest).

        ``overlays`` are config files merged after each run's own (e.g. ``conf/tiny.yaml``);
        ``extra_flags`` are ``motlab fit`` flags for every run (e.g. ``--data.path DIR``). They
        may not set a swept key, the logger or the checkpoint path (the sweep owns those).
        """
        save_dir = save_dir or self.save_dir
        self._check_extra_flags(extra_flags)
        common = dict(save_dir=save_dir, overlays=overlays, extra_flags=extra_flags)
        runs = []
        for name, baseline in self.baselines.items():
            runs.append(
                self._run(
                    name,
                    configs=self.config if baseline.config is None else baseline.config,
                    fixed={**self.set, **baseline.set},
                    **common,
                )
            )
        for point in itertools.product(*(range(len(axis)) for axis in self.axes)):
            at = list(zip(self.axes, point, strict=True))
            values = {axis.name: axis.values[i] for axis, i in at}
            swept = {key: vals[i] for axis, i in at for key, vals in axis.keys.items()}
            name = ",".join(f"{axis}={format_value(v)}" for axis, v in values.items())
            runs.append(
                self._run(
                    name, configs=self.config, fixed=self.set, values=values, swept=swept, **common
                )
            )
        names = [run.name for run in runs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise SweepError(
                f"{self.path}: several runs are named {duplicates}: give the axes distinct "
                "values (or a baseline another name)"
            )
        return runs

    @staticmethod
    def _run(
        name: str,
        *,
        configs: Sequence[str],
        fixed: Mapping[str, Any],
        save_dir: str,
        overlays: Sequence[str],
        extra_flags: Sequence[str],
        values: dict[str, Any] | None = None,
        swept: Mapping[str, Any] | None = None,
    ) -> SweepRun:
        """Flags in order of precedence: ``set``, extra flags, axis values, the sweep's own."""
        swept = swept or {}
        flags = [f for key, value in fixed.items() for f in (f"--{key}", cli_value(value))]
        flags += list(extra_flags)
        flags += [f for key, value in swept.items() for f in (f"--{key}", cli_value(value))]
        flags += ["--trainer.logger.init_args.save_dir", save_dir]
        flags += ["--trainer.logger.init_args.name", name]
        # No checkpoint.save_on_exception: Lightning 2.6 saves a Ctrl-C mid-step (the resumed
        # weights differ). motlab fit itself saves a stopped run at a step boundary.
        return SweepRun(
            name=name,
            save_dir=save_dir,
            configs=[*configs, *overlays],
            flags=flags,
            values=values or {},
            settings={**fixed, **swept},
            baseline=values is None,
        )

    def _check_extra_flags(self, extra_flags: Sequence[str]) -> None:
        swept = {key: axis.name for axis in self.axes for key in axis.keys}
        for flag in extra_flags:
            if not flag.startswith("--"):
                continue
            key = flag[2:].split("=", 1)[0]
            if key in swept:
                raise SweepError(
                    f"the extra flag {flag} sets {key}, which the sweep's axis {swept[key]!r} "
                    "sweeps: remove it (or edit the axis in the sweep file)"
                )
            if any(flag.split("=", 1)[0].startswith(p) for p in SWEEP_OWNED_FLAGS):
                raise SweepError(
                    f"the extra flag {flag} is set by the sweep itself (each run logs and "
                    "checkpoints into --save-dir/RUN, and resumes with --ckpt_path last): "
                    "remove it, and use --save-dir to choose the directory"
                )

    def to_manifest(self, runs: Sequence[SweepRun]) -> dict[str, Any]:
        """What the report needs to know about the sweep, as JSON-ready data."""
        return {
            "sweep": self.name,
            "file": str(self.path),
            "axes": [
                {"name": a.name, "keys": a.keys, "values": a.values, "log_scale": a.log_scale}
                for a in self.axes
            ],
            "baselines": list(self.baselines),
            "runs": [
                {
                    "name": r.name,
                    "baseline": r.baseline,
                    "values": r.values,
                    "settings": r.settings,
                    "command": r.command(),
                }
                for r in runs
            ],
        }


MANIFEST = "sweep.json"
"""Written into the sweep's directory at launch; ``motlab compare --sweep DIR`` reads it."""


def write_manifest(sweep: Sweep, runs: Sequence[SweepRun], save_dir: str | Path) -> Path:
    path = Path(save_dir) / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sweep.to_manifest(runs), indent=2) + "\n")
    return path


# ------------------------------------------------------------------------------------ loading

TOP_LEVEL = {"name", "save_dir", "config", "set", "axes", "baselines", "slurm"}
AXIS_OPTIONS = {"values", "scale"}


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file; config paths become relative to the working directory."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"no sweep file at {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SweepError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: a sweep file is a mapping with keys {sorted(TOP_LEVEL)}")
    _unknown(raw, TOP_LEVEL, str(path))
    if "config" not in raw:
        raise SweepError(f"{path}: needs 'config', the base config file(s) of its runs")
    if not raw.get("axes"):
        raise SweepError(f"{path}: needs 'axes', a mapping of axis name → values")

    name = str(raw.get("name") or path.stem)
    fixed = _mapping(raw.get("set") or {}, f"{path}: set")
    baselines = {}
    for bname, spec in _mapping(raw.get("baselines") or {}, f"{path}: baselines").items():
        where = f"{path}: baselines.{bname}"
        spec = _mapping(spec or {}, where)
        _unknown(spec, {f.name for f in dataclasses.fields(Baseline)}, where)
        configs = spec.get("config")
        baselines[str(bname)] = Baseline(
            config=None if configs is None else _config_paths(configs, path, f"{where}.config"),
            set=_mapping(spec.get("set") or {}, f"{where}.set"),
        )
    slurm_raw = _mapping(raw.get("slurm") or {}, f"{path}: slurm")
    _unknown(slurm_raw, {f.name for f in dataclasses.fields(SlurmSettings)}, f"{path}: slurm")
    _check_types(SlurmSettings, slurm_raw, f"{path}: slurm")
    return Sweep(
        name=name,
        path=path,
        config=_config_paths(raw["config"], path, f"{path}: config"),
        axes=_axes(_mapping(raw["axes"], f"{path}: axes"), path),
        baselines=baselines,
        set=fixed,
        save_dir=str(raw.get("save_dir") or Path("runs") / "sweeps" / name),
        slurm=SlurmSettings(**slurm_raw),
    )


def _axes(raw: Mapping[str, Any], path: Path) -> list[Axis]:
    axes = []
    owner: dict[str, str] = {}
    for name, spec in raw.items():
        where = f"{path}: axes.{name}"
        if isinstance(spec, list):  # shorthand: `model.net.ffn.n_experts: [8, 32]`
            keys, values, scale = {str(name): spec}, None, None
            name = str(name).rsplit(".", 1)[-1]
        elif isinstance(spec, dict):
            keys = {k: v for k, v in spec.items() if k not in AXIS_OPTIONS}
            values, scale = spec.get("values"), spec.get("scale")
            if not keys:
                raise SweepError(f"{where}: names no config key (e.g. model.net.ffn.n_experts)")
        else:
            raise SweepError(
                f"{where}: give a list of values, or a mapping of config keys to lists"
            )
        if scale not in (None, "log", "linear"):
            raise SweepError(f"{where}.scale: 'log' or 'linear', got {scale!r}")
        lengths = {}
        for key, vals in keys.items():
            if not isinstance(vals, list) or not vals:
                raise SweepError(f"{where}.{key}: needs a non-empty list of values")
            lengths[key] = len(vals)
            if key in owner:
                raise SweepError(f"{where}: {key} is already swept by axis {owner[key]!r}")
            owner[key] = str(name)
        if values is None:
            values = next(iter(keys.values()))
        elif not isinstance(values, list):
            raise SweepError(f"{where}.values: needs a list")
        lengths["values"] = len(values)
        if len(set(lengths.values())) > 1:
            raise SweepError(
                f"{where}: zipped lists must have one value per point; lengths {lengths}"
            )
        axes.append(Axis(name=str(name), keys=keys, values=values, scale=scale))
    names = [a.name for a in axes]
    if len(set(names)) < len(names):
        raise SweepError(f"{path}: axes share a name {names}: name them (axes: {{NAME: ...}})")
    return axes


def _config_paths(value: Any, sweep_path: Path, where: str) -> list[str]:
    paths = [value] if isinstance(value, str) else value
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths) or not paths:
        raise SweepError(f"{where}: a config file path or a list of them")
    out = []
    for p in paths:
        full = sweep_path.parent / p
        if not full.is_file():
            raise SweepError(f"{where}: no config file {p} (looked for {full})")
        out.append(_display_path(full))
    return out


def _display_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(resolved)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SweepError(f"{where}: expected a mapping, got {value!r}")
    return {str(k): v for k, v in value.items()}


def _check_types(cls: type, values: Mapping[str, Any], where: str) -> None:
    """Values against the dataclass' field types, with jsonargparse's messages."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls)
    try:
        parser.parse_object(dict(values))
    except Exception as err:  # noqa: BLE001 - jsonargparse's ArgumentError, re-raised as ours
        raise SweepError(f"{where}: {err}") from err


def _unknown(spec: Mapping[str, Any], valid: set[str], where: str) -> None:
    unknown = sorted(set(spec) - valid)
    if unknown:
        raise SweepError(f"{where}: unknown key(s) {unknown}; valid: {sorted(valid)}")


# ----------------------------------------------------------------------------------- values


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def format_value(value: Any) -> str:
    """A value as it appears in a run name: ``8``, ``0.0007``, ``true``; path-safe."""
    if isinstance(value, bool) or value is None:
        text = json.dumps(value)
    elif isinstance(value, float):
        text = f"{value:g}" if math.isfinite(value) else str(value)
    elif isinstance(value, (int, str)):
        text = str(value)
    else:
        text = json.dumps(value, separators=(",", ":"))
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)


def cli_value(value: Any) -> str:
    """A value as a ``motlab fit`` flag argument (parsed back as YAML by the CLI)."""
    if isinstance(value, str):
        # A string that YAML would read as something else (a number, true, null) is quoted.
        return value if yaml.safe_load(value) == value else json.dumps(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    return json.dumps(value, separators=(", ", ": "))


def relative_to_cwd(path: str | os.PathLike[str]) -> str:
    return _display_path(Path(path))
