"""A sweep's report: what its runs reached, as one table (:class:`SweepReport`).

``motlab sweep FILE --report`` and ``motlab compare --sweep DIR`` print it and write its CSV and
its figure (:mod:`.figure`) with :func:`motlab.sweep.command.write_report`.

Per run: its axis values, final validation loss, and the paper's speed-up — the baseline's
steps to its own final loss over the run's steps to that loss
(:func:`motlab.analysis.compare_runs`, interpolated between logged points). With several
baselines the first is the reference; every baseline is drawn in the figure.

The sweep's directory holds ``sweep.json`` (written at launch: axes, runs, baselines) and one
TensorBoard experiment per run; runs without logs yet are listed as missing, not failed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from motlab.analysis.runs import event_files, format_table, read_run
from motlab.analysis.speedup import DEFAULT_TAG, compare_runs
from motlab.rundir import experiment_dir
from motlab.sweep.spec import MANIFEST, SweepError

SPEEDUP_KEYS = (
    "target",
    "steps_to_target",
    "tokens_to_target",
    "seconds_to_target",
    "speedup_steps",
    "speedup_tokens",
    "speedup_wall_clock",
)


@dataclass
class SweepReport:
    name: str
    axes: list[dict[str, Any]]
    """``{"name", "keys", "values", "log_scale"}`` per axis, as in ``sweep.json``."""
    rows: list[dict[str, Any]]
    """One per run with logs: run, baseline, each axis' value, then compare_runs' columns."""
    reference: str | None
    """The baseline the speed-ups are measured against (None: no baseline has logs)."""
    baselines: list[str]
    missing: list[str]
    tag: str
    target_given: bool = False
    """The target loss was given, not the reference's final loss."""

    def table(self) -> str:
        columns = {"run": "run"}
        columns.update({a["name"]: a["name"] for a in self.axes})
        columns.update(
            final_step="final step",
            final_loss=f"final {self.tag}",
            steps_to_target="steps to target",
            speedup_steps="speed-up (steps)",
        )
        return format_table(
            [{label: row.get(key) for key, label in columns.items()} for row in self.rows]
        )


def read_manifest(save_dir: str | Path) -> dict[str, Any]:
    path = Path(save_dir) / MANIFEST
    if not path.is_file():
        raise SweepError(
            f"no {MANIFEST} in {save_dir}: not a sweep directory (motlab sweep FILE writes it "
            "when it launches; or run motlab sweep FILE --report)"
        )
    return json.loads(path.read_text())


def build_report(
    manifest: dict[str, Any],
    save_dir: str | Path,
    tag: str = DEFAULT_TAG,
    target: float | None = None,
) -> SweepReport:
    """Read every run of the sweep in ``save_dir`` and compare it with the first baseline.

    ``target``: the loss to reach (default: the reference baseline's final value of ``tag``).
    """
    save_dir = Path(save_dir)
    runs, missing = {}, []
    for spec in manifest["runs"]:
        run_dir = experiment_dir(save_dir, spec["name"])
        if not run_dir.is_dir() or not event_files(run_dir):
            missing.append(spec["name"])
            continue
        run = read_run(run_dir, name=spec["name"])
        if tag not in run.scalars:
            missing.append(spec["name"])
            continue
        runs[spec["name"]] = run
    if not runs:
        raise SweepError(
            f"no run of sweep {manifest['sweep']!r} in {save_dir} has logged {tag} yet"
        )
    reference = next((b for b in manifest["baselines"] if b in runs), None)
    ordered = list(runs.values())
    if reference is not None:
        ordered = [runs[reference], *(r for name, r in runs.items() if name != reference)]
    compared = {row["run"]: row for row in compare_runs(ordered, target=target, tag=tag)}
    rows = []
    for spec in manifest["runs"]:
        if spec["name"] not in compared:
            continue
        row: dict[str, Any] = {"run": spec["name"], "baseline": spec["baseline"]}
        for axis in manifest["axes"]:
            row[axis["name"]] = spec["values"].get(axis["name"])
        measured = dict(compared[spec["name"]])
        measured.pop("run")
        if reference is None:  # nothing to measure a speed-up against
            measured.update(dict.fromkeys(SPEEDUP_KEYS))
        row.update(measured)
        rows.append(row)
    return SweepReport(
        name=manifest["sweep"],
        axes=manifest["axes"],
        rows=rows,
        reference=reference,
        baselines=[b for b in manifest["baselines"] if b in runs],
        missing=missing,
        tag=tag,
        target_given=target is not None,
    )
