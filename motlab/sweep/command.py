"""``motlab sweep FILE [options] [-- FIT_FLAGS...]``: expand, check, launch and report a sweep."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from motlab.analysis.output import figure_backend, save_figure, write_csv
from motlab.analysis.speedup import DEFAULT_TAG
from motlab.sweep.report import SweepReport, build_report, read_manifest
from motlab.sweep.spec import SlurmSettings, Sweep, SweepError, load_sweep, write_manifest

SLURM_FLAGS = {
    "gpus": (int, "GPUs per node; one task per GPU (default: the sweep file's slurm.gpus, or 1)"),
    "nodes": (int, "nodes per job"),
    "time": (str, "time limit per job: minutes, HH:MM:SS or D-HH:MM:SS; requeued when reached"),
    "partition": (str, "SLURM partition"),
    "account": (str, "SLURM account"),
    "qos": (str, "SLURM quality of service"),
    "cpus_per_task": (int, "CPUs per task (data loading workers need them)"),
    "mem_gb": (float, "memory per node in GB"),
    "array_parallelism": (int, "most jobs of the array running at once"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="motlab sweep",
        usage="motlab sweep FILE [options] [-- MOTLAB_FIT_FLAGS ...]",
        description=(
            "Expand a sweep file (conf/sweeps/*.yaml) into named motlab fit runs, check every "
            "run's config before anything starts, launch them one after another (local) or as "
            "a SLURM job array (slurm), and report final loss and speed-up over the baseline. "
            "Launching again skips finished runs and resumes interrupted ones. Flags after "
            "'--' go to every motlab fit command."
        ),
        allow_abbrev=False,
    )
    parser.add_argument("file", metavar="FILE", help="the sweep file")
    parser.add_argument(
        "--dry-run", action="store_true", help="check and print the runs and their commands"
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="only write the report (table, CSV, figure) of the runs logged so far",
    )
    parser.add_argument("--launcher", choices=("local", "slurm"), default="local")
    parser.add_argument(
        "--overlay",
        action="append",
        default=[],
        metavar="CONFIG",
        help="a config file merged after each run's own, e.g. conf/tiny.yaml (repeatable)",
    )
    parser.add_argument(
        "--save-dir",
        default=None,
        help="the sweep's log directory (default: the file's save_dir, or runs/sweeps/NAME)",
    )
    report = parser.add_argument_group("report")
    report.add_argument("--tag", default=DEFAULT_TAG, help="scalar compared (%(default)s)")
    report.add_argument("--csv", default=None, help="CSV path (default: SAVE_DIR/report.csv)")
    report.add_argument("--plot", default=None, help="figure path (default: SAVE_DIR/report.png)")
    slurm = parser.add_argument_group("slurm launcher (defaults: the sweep file's slurm:)")
    for name, (kind, help_text) in SLURM_FLAGS.items():
        slurm.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, help=help_text)
    slurm.add_argument(
        "--cluster",
        choices=("slurm", "local"),
        default="slurm",
        help="'local': submitit's local executor, the same jobs as processes on this machine",
    )
    slurm.add_argument(
        "--wait", action="store_true", help="wait for every job and report (default: submit)"
    )
    return parser


def _split(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def _slurm_settings(sweep: Sweep, args: argparse.Namespace) -> SlurmSettings:
    given = {k: getattr(args, k) for k in SLURM_FLAGS if getattr(args, k) is not None}
    return dataclasses.replace(sweep.slurm, **given)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``motlab sweep``; returns the exit status."""
    own, fit_flags = _split(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(own)
    try:
        return _main(args, fit_flags)
    except SweepError as err:
        print(f"motlab sweep: error: {err}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace, fit_flags: list[str]) -> int:
    from motlab.sweep.check import check_runs
    from motlab.sweep.spec import relative_to_cwd

    sweep = load_sweep(args.file)
    for overlay in args.overlay:
        if not Path(overlay).is_file():
            raise SweepError(f"--overlay {overlay}: no such config file")
    overlays = [relative_to_cwd(o) for o in args.overlay]
    save_dir = args.save_dir or sweep.save_dir
    runs = sweep.runs(overlays, fit_flags, save_dir)

    if args.report:
        report = build_report(sweep.to_manifest(runs), save_dir, args.tag)
        return write_report(report, save_dir, args.csv, args.plot)

    checked = check_runs(runs)
    settings = _slurm_settings(sweep, args)
    if args.dry_run:
        return _dry_run(sweep, checked, args, settings, save_dir)

    write_manifest(sweep, runs, save_dir)
    if args.launcher == "local":
        from motlab.sweep.local import launch_local

        code = launch_local(checked)
    else:
        from motlab.sweep.slurm import launch_slurm

        code = launch_slurm(
            checked, settings, Path(save_dir) / ".submitit", sweep.name, args.cluster, args.wait
        )
        if not args.wait:
            return code
    if code == 0:
        try:
            report = build_report(sweep.to_manifest(runs), save_dir, args.tag)
        except SweepError as err:  # e.g. runs too short to have validated: still finished
            print(f"no report: {err}", flush=True)
            return code
        write_report(report, save_dir, args.csv, args.plot)
    return code


def _dry_run(
    sweep: Sweep,
    checked: Sequence,
    args: argparse.Namespace,
    settings: SlurmSettings,
    save_dir: str,
) -> int:
    from motlab.sweep.state import run_state

    axes = "; ".join(f"{a.name}: {', '.join(a.keys)}" for a in sweep.axes)
    print(f"sweep {sweep.name} ({sweep.path}): {len(checked)} runs into {save_dir}; axes {axes}")
    for i, c in enumerate(checked, 1):
        state = run_state(c)
        settings_text = ", ".join(f"{k}={v}" for k, v in c.run.settings.items()) or "-"
        kind = "baseline" if c.run.baseline else "run"
        print(f"[{i}/{len(checked)}] {kind} {c.run.name}: {settings_text}")
        print(f"  {state.describe(c.max_steps)}")
        if state.status != "finished":
            print(f"  {c.run.command(state.status == 'resume')}")
    if args.launcher == "slurm":
        from motlab.sweep.slurm import check_resources, parse_minutes

        check_resources(checked, settings)
        parse_minutes(settings.time)
        fields = {k: v for k, v in dataclasses.asdict(settings).items() if v not in (None, {})}
        print(
            f"slurm ({args.cluster}): one job array, "
            + ", ".join(f"{k}={v}" for k, v in fields.items())
        )
    print(f"all {len(checked)} runs are valid (dry run: nothing started)")
    return 0


# ---------------------------------------------------------------------------------- report


def write_report(
    report: SweepReport,
    save_dir: str | Path,
    csv_path: str | Path | None = None,
    plot_path: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> int:
    """Print the table; write the CSV and the figure (default: into the sweep's directory)."""
    save_dir = Path(save_dir)
    if report.reference is not None:
        target = report.rows[0]["target"]
        which = "given" if report.target_given else f"{report.reference}'s final"
        log(
            f"sweep {report.name}: target {report.tag} = {target:.4f} ({which}); speed-up = "
            f"steps of {report.reference} to the target / steps of the run"
        )
    else:
        log(f"sweep {report.name}: no baseline has logs yet, so no speed-ups")
    log(report.table())
    if report.missing:
        log(f"not run yet (no {report.tag} logged): {', '.join(report.missing)}")
    csv_path = write_csv(report.rows, csv_path or save_dir / "report.csv")
    log(f"wrote {csv_path}")
    if not figure_backend():
        log('no figure: it needs matplotlib (pip install "motlab[analysis]")')
        return 0
    from motlab.sweep.figure import plot_sweep

    plot_path = save_figure(plot_sweep(report), plot_path or save_dir / "report.png")
    log(f"wrote {plot_path}")
    return 0


def report_main(
    save_dir: str | Path,
    tag: str = DEFAULT_TAG,
    csv_path: str | Path | None = None,
    plot_path: str | Path | None = None,
    target: float | None = None,
) -> int:
    """``motlab compare --sweep DIR``."""
    report = build_report(read_manifest(save_dir), save_dir, tag, target)
    return write_report(report, save_dir, csv_path, plot_path)
