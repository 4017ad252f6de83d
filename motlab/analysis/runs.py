"""Read TensorBoard runs into arrays and tables.

A *run* is a directory holding one or more TensorBoard event files, possibly in ``version_N``
sub-directories. Several event files in one directory are one run: ``motlab fit --ckpt_path
last`` logs its resume into the version directory it resumes, re-doing the steps after the
checkpoint. They are merged per scalar tag: points are ordered by wall time and, where the same
step was logged twice, the later point wins.

Several ``version_N`` directories are usually *separate* runs: the same command trained again
starts a new version at step 0. A version continues the one before it (in time) only when its
steps continue past that version's last step, and its saved ``config.yaml``, where there is one,
records a ``ckpt_path`` (a resume from a checkpoint, e.g. with another ``checkpoint.dirpath``).
A version that logged at one step only is an evaluation (``motlab validate``/``test`` log at
step 0 into a version of their own), not a run. (:func:`motlab.rundir.newest_run` holds this
rule.) :func:`read_run` reads the newest run's version and the unbroken chain of versions it
continues; the others are left out, listed in :attr:`Run.left_out` and named in a
:class:`SeparateRunsWarning`. Pass ``version`` to read one version only.

Every point carries its step, value, absolute wall time and *elapsed* seconds: time since the
run's first event, counting each event file's own span only, so that the pause between a crash
and its resume is not counted as training time.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from motlab.metrics import TOKENS_SEEN
from motlab.rundir import (
    HPARAMS,
    RUN_CONFIG,
    Version,
    in_time_order,
    is_version_dir,
    newest_run,
    read_yaml,
    version_name,
)

EVENT_GLOB = "events.out.tfevents.*"

TOKENS_TAGS = (TOKENS_SEEN, "train/tokens_seen", "train/tokens", "tokens")
"""Scalar tags read as the number of training tokens seen at a step, when one is logged."""

CONFIG_FILES = (RUN_CONFIG, HPARAMS)
"""Files beside the event files that may describe the run (LightningCLI, TensorBoardLogger)."""


class SeparateRunsWarning(UserWarning):
    """A run directory holds versions of separate runs; only the newest run was read."""


@dataclass
class Series:
    """One scalar tag of a run, sorted by step (one point per step)."""

    steps: np.ndarray
    values: np.ndarray
    wall_time: np.ndarray
    """Absolute time of each point (seconds since the epoch)."""
    elapsed: np.ndarray
    """Seconds since the run started, gaps between event files excluded."""

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def final(self) -> float:
        """The value at the last logged step."""
        return float(self.values[-1])


@dataclass
class Run:
    """The scalars of one run, merged over its event files."""

    name: str
    path: Path
    scalars: dict[str, Series]
    config: dict[str, Any] = field(default_factory=dict)
    """The run's saved configuration (``config.yaml`` / ``hparams.yaml``), if found."""
    tokens_per_step: float | None = None
    """Training tokens per optimiser step, when known (see :func:`infer_tokens_per_step`)."""
    versions: list[str] = field(default_factory=list)
    """The directories read (relative to ``path``; ``"."`` for ``path`` itself), oldest first."""
    left_out: list[str] = field(default_factory=list)
    """Directories under ``path`` holding *other* runs, not read (see the module docstring)."""

    @property
    def tags(self) -> list[str]:
        return sorted(self.scalars)

    def __getitem__(self, tag: str) -> Series:
        if tag not in self.scalars:
            raise KeyError(
                f"run {self.name!r} has no scalar {tag!r}; it has: {', '.join(self.tags) or '-'}"
            )
        return self.scalars[tag]

    def tokens_at(self, steps: np.ndarray | float) -> np.ndarray | None:
        """Training tokens seen after ``steps`` optimiser steps, or None when unknown.

        Uses a logged tokens scalar (:data:`TOKENS_TAGS`, e.g. ``perf/tokens_seen``) when there
        is one — interpolated linearly in the step, through (0, 0) before its first point and
        at its last segment's rate after its last — else ``steps · tokens_per_step``.
        """
        steps = np.asarray(steps, dtype=float)
        for tag in TOKENS_TAGS:
            s = self.scalars.get(tag)
            if s is None or len(s) == 0:
                continue
            xs = np.concatenate([[0.0], s.steps.astype(float)])
            ys = np.concatenate([[0.0], s.values])
            keep = np.concatenate([[True], s.steps > 0])  # (0, 0) is already the first point
            xs, ys = xs[keep], ys[keep]
            rate = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2]) if len(xs) > 1 else 0.0
            return np.where(
                steps > xs[-1], ys[-1] + (steps - xs[-1]) * rate, np.interp(steps, xs, ys)
            )
        if self.tokens_per_step is None:
            return None
        return steps * self.tokens_per_step


def event_files(path: str | Path, version: int | str | None = None) -> list[Path]:
    """The TensorBoard event files of a run: ``path`` itself, or every one below it.

    ``version`` (``3`` or ``"version_3"``) keeps only the files under that sub-directory.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"no run directory or event file at {path}")
    if version is not None:
        name = version_name(version)
        matches = [p for p in path.rglob(name) if p.is_dir()]
        if not matches:
            raise FileNotFoundError(f"run {path} has no {name!r} sub-directory")
        files = [f for m in matches for f in m.rglob(EVENT_GLOB)]
    else:
        files = list(path.rglob(EVENT_GLOB))
    return sorted(f for f in files if f.is_file())


def _read_file(path: Path) -> dict[str, list[tuple[int, float, float]]]:
    """{tag: [(step, wall_time, value), ...]} of one event file, in file order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
    acc.Reload()
    return {
        tag: [(int(e.step), float(e.wall_time), float(e.value)) for e in acc.Scalars(tag)]
        for tag in acc.Tags()["scalars"]
    }


def _load_config(dirs: Sequence[Path], root: Path) -> dict[str, Any]:
    """The saved configuration in the run root or the directories read (oldest first), if any.

    A LightningCLI ``config.yaml`` (the whole run) wins over ``hparams.yaml`` (the module's
    hyper-parameters) key by key; with several versions, the latest directory wins.
    """
    top = root if root.is_dir() else root.parent
    found: dict[str, dict[str, Any]] = {name: {} for name in CONFIG_FILES}
    for d in dict.fromkeys([top, *dirs]):
        for name in CONFIG_FILES:
            loaded = read_yaml(d / name)
            if loaded is not None:
                found[name] = loaded
    return {**found["hparams.yaml"], **found["config.yaml"]}


def _lookup(config: dict[str, Any], *keys: str) -> Any:
    """The first of the dotted ``keys`` present in ``config`` (nested dicts), else None."""
    for key in keys:
        node: Any = config
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                node = None
                break
            node = node[part]
        if node is not None:
            return node
    return None


def infer_tokens_per_step(config: dict[str, Any]) -> float | None:
    """Tokens per optimiser step from a saved run config, or None when it can't be told.

    batch size × sequence length × gradient accumulation × devices × nodes, reading the keys
    ``motlab fit`` saves (``data.batch_size``, ``data.seq_len``, ``trainer.*``).
    """
    batch = _lookup(config, "data.init_args.batch_size", "data.batch_size", "batch_size")
    seq_len = _lookup(
        config,
        "data.init_args.seq_len",
        "data.seq_len",
        "model.init_args.net.seq_len",
        "model.net.seq_len",
        "seq_len",
    )
    if not isinstance(batch, int) or not isinstance(seq_len, int):
        return None
    accumulate = _lookup(config, "trainer.accumulate_grad_batches") or 1
    devices = _lookup(config, "trainer.devices")
    nodes = _lookup(config, "trainer.num_nodes") or 1
    n_devices = devices if isinstance(devices, int) and devices > 0 else 1
    if isinstance(devices, list):
        n_devices = len(devices)
    return float(batch * seq_len * int(accumulate) * n_devices * int(nodes))


def read_run(
    path: str | Path,
    version: int | str | None = None,
    name: str | None = None,
    tokens_per_step: float | None = None,
) -> Run:
    """Read every scalar of the run at ``path`` (a run directory or one event file).

    ``tokens_per_step`` overrides what the run's saved config says (see
    :func:`infer_tokens_per_step`); a logged tokens scalar takes precedence over both.
    """
    path = Path(path)
    files = event_files(path, version)
    if not files:
        raise FileNotFoundError(f"no TensorBoard event files ({EVENT_GLOB}) under {path}")

    per_file = {f: _read_file(f) for f in files}
    files_of, versions = _versions(per_file)
    chain, left_out = newest_run(versions) if version is None else (versions, [])
    root = path if path.is_dir() else path.parent
    if left_out:
        warnings.warn(_left_out_message(path, chain, left_out, root), SeparateRunsWarning, 2)

    # Order files by their first event; each contributes its own span to the elapsed time.
    spans = []
    for part in chain:
        for f in files_of[part.directory]:
            times = [t for points in per_file[f].values() for _, t, _ in points]
            if times:
                spans.append((min(times), max(times), f))
    spans.sort()
    offsets: dict[Path, tuple[float, float]] = {}  # file -> (its start, elapsed at its start)
    total = 0.0
    for start, end, f in spans:
        offsets[f] = (start, total)
        total += end - start

    merged: dict[str, dict[int, tuple[float, float, float]]] = {}
    for _, _, f in spans:  # in time order, so that a later point for the same step wins
        start, offset = offsets[f]
        for tag, points in per_file[f].items():
            by_step = merged.setdefault(tag, {})
            for step, wall, value in sorted(points, key=lambda p: p[1]):
                by_step[step] = (wall, offset + wall - start, value)

    scalars = {}
    for tag, by_step in merged.items():
        steps = np.array(sorted(by_step), dtype=np.int64)
        rows = [by_step[int(s)] for s in steps]
        scalars[tag] = Series(
            steps=steps,
            values=np.array([r[2] for r in rows], dtype=float),
            wall_time=np.array([r[0] for r in rows], dtype=float),
            elapsed=np.array([r[1] for r in rows], dtype=float),
        )
    config = _load_config([g.directory for g in chain], path)
    if tokens_per_step is None:
        tokens_per_step = infer_tokens_per_step(config)
    return Run(
        name=name or _run_name(path),
        path=path,
        scalars=scalars,
        config=config,
        tokens_per_step=tokens_per_step,
        versions=[_relative(g.directory, root) for g in chain],
        left_out=[_relative(g.directory, root) for g in left_out],
    )


def _versions(
    per_file: dict[Path, dict[str, list[tuple[int, float, float]]]],
) -> tuple[dict[Path, list[Path]], list[Version]]:
    """The event files by directory, and what each directory (one ``version_N``) logged, oldest
    first; directories without any point are dropped."""
    by_dir: dict[Path, list[Path]] = {}
    for f in per_file:
        by_dir.setdefault(f.parent, []).append(f)
    versions = []
    for directory, files in by_dir.items():
        points = [p for f in files for series in per_file[f].values() for p in series]
        if not points:
            continue
        steps = [step for step, _, _ in points]
        start = min(wall for _, wall, _ in points)
        versions.append(Version(directory, min(steps), max(steps), start))
    files_of = {d: sorted(files) for d, files in by_dir.items()}
    return files_of, in_time_order(versions)


def _left_out_message(path: Path, chain: list[Version], left_out: list[Version], root: Path) -> str:
    def steps(g: Version) -> str:
        return f"{_relative(g.directory, root)} (steps {g.first_step}-{g.last_step})"

    def why(g: Version) -> str:
        name = _relative(g.directory, root)
        if g.is_evaluation:
            return f"{name} (step {g.first_step} only: an evaluation, e.g. motlab validate)"
        return f"{steps(g)}: another run"

    return (
        f"{path}: read {', '.join(map(steps, chain))}, the newest run; left out "
        f"{'; '.join(map(why, left_out))}. A version resumes the one before it only when its "
        "steps go on past that one's last step (and its saved config.yaml, if any, has a "
        "ckpt_path). Read another with read_run(path, version=N)"
    )


def _relative(directory: Path, root: Path) -> str:
    try:
        return str(directory.relative_to(root))
    except ValueError:
        return str(directory)


def _run_name(path: Path) -> str:
    """A readable name: the directory name, with its parent for ``version_N`` directories."""
    if path.is_file():
        path = path.parent
    if is_version_dir(path) and path.parent.name:
        return f"{path.parent.name}/{path.name}"
    return path.name


def find_runs(root: str | Path) -> list[Path]:
    """Every directory under ``root`` (itself included) that directly holds event files."""
    root = Path(root)
    return sorted({f.parent for f in event_files(root)})


def as_run(run: Run | str | Path, **kwargs: Any) -> Run:
    """``run`` itself, or the run read from that path."""
    return run if isinstance(run, Run) else read_run(run, **kwargs)


def scalars_table(
    runs: Iterable[Run | str | Path], tags: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """All scalar points of ``runs`` as one long table, a dict per point.

    Columns: ``run``, ``tag``, ``step``, ``value``, ``wall_time``, ``elapsed`` and ``tokens``
    (None when the run's tokens per step are unknown). Pass ``tags`` to keep only those.
    """
    rows: list[dict[str, Any]] = []
    for run in map(as_run, runs):
        for tag in tags if tags is not None else run.tags:
            if tag not in run.scalars:
                continue
            s = run.scalars[tag]
            tokens = run.tokens_at(s.steps)
            for i in range(len(s)):
                rows.append(
                    {
                        "run": run.name,
                        "tag": tag,
                        "step": int(s.steps[i]),
                        "value": float(s.values[i]),
                        "wall_time": float(s.wall_time[i]),
                        "elapsed": float(s.elapsed[i]),
                        "tokens": None if tokens is None else float(tokens[i]),
                    }
                )
    return rows


def to_frame(rows: list[dict[str, Any]]) -> Any:
    """``rows`` as a pandas DataFrame (pandas is optional: ``pip install pandas``)."""
    try:
        import pandas as pd
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("to_frame needs pandas: pip install pandas") from err
    return pd.DataFrame(rows)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A plain-text table of ``rows`` (no dependencies), numbers formatted compactly."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())

    def fmt(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        if isinstance(v, float):
            if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-3):
                return f"{v:.3g}"
            return f"{v:.4g}" if abs(v) < 100 else f"{v:,.0f}"
        if isinstance(v, int) and abs(v) >= 10_000:
            return f"{v:,}"
        return str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[j]) for row in cells)) for j, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append(
            "  ".join(
                (cell.ljust(w) if j == 0 else cell.rjust(w))
                for j, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return "\n".join(lines)
