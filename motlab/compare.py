"""``motlab compare RUN_DIR... [--target-loss X] [--plot out.png]``: runs side by side.

Prints one row per run — final validation loss, steps/tokens/wall-clock to the target loss and
the speed-up against the first run (the paper's metric: steps_first / steps_run at the first
run's final loss unless ``--target-loss`` is given) — and optionally writes a figure of the
validation loss against steps and against training tokens.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from motlab.analysis.output import figure_backend, save_figure, write_csv
from motlab.analysis.runs import SeparateRunsWarning, format_table, read_run
from motlab.analysis.speedup import DEFAULT_TAG, compare_runs

COLUMNS = {
    "run": "run",
    "final_step": "final step",
    "final_loss": "final loss",
    "steps_to_target": "steps to target",
    "tokens_to_target": "tokens to target",
    "seconds_to_target": "seconds to target",
    "speedup_steps": "speed-up (steps)",
    "speedup_tokens": "speed-up (tokens)",
    "speedup_wall_clock": "speed-up (wall)",
}


def _fmt(key: str, value: object) -> object:
    """Readable cells: losses to 4 decimals, speed-ups to 2, counts with separators."""
    if value is None or not isinstance(value, float):
        return value
    if key == "final_loss":
        return f"{value:.4f}"
    if key.startswith("speedup"):
        return f"{value:.2f}"
    if key == "seconds_to_target":
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="motlab compare",
        description=(
            "Compare training runs (TensorBoard log directories): final validation loss, "
            "steps/tokens/wall-clock to a target loss and the speed-up over the first run."
        ),
    )
    parser.add_argument(
        "runs",
        nargs="*",
        metavar="RUN_DIR",
        help="run directories (e.g. runs/dense runs/mot) or version directories "
        "(runs/mot/version_1); the first is the baseline. Of several version_N "
        "sub-directories, the newest run is read (with the versions it resumes) and the "
        "others are named as left out",
    )
    parser.add_argument(
        "--target-loss",
        type=float,
        default=None,
        help="loss to reach (default: the first run's final value of --tag)",
    )
    parser.add_argument(
        "--tag", default=DEFAULT_TAG, help="scalar to compare (default: %(default)s)"
    )
    parser.add_argument(
        "--tokens-per-step",
        type=float,
        default=None,
        help="training tokens per optimiser step, for runs whose saved config does not tell",
    )
    parser.add_argument("--plot", metavar="OUT.png", default=None, help="write a figure here")
    parser.add_argument("--csv", metavar="OUT.csv", default=None, help="write the table as CSV")
    parser.add_argument(
        "--sweep",
        metavar="DIR",
        default=None,
        help="instead of RUN_DIRs: a motlab sweep directory; loss and speed-up over its baseline "
        "against each swept axis (CSV and figure default to DIR/report.csv, DIR/report.png)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``motlab compare``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.sweep is not None or not args.runs:
        return _compare_sweep(parser, args)
    try:
        with warnings.catch_warnings():
            # Said below, in one line per run, beside the table it concerns.
            warnings.simplefilter("ignore", SeparateRunsWarning)
            runs = [read_run(path, tokens_per_step=args.tokens_per_step) for path in args.runs]
        names = [r.name for r in runs]
        if len(set(names)) < len(names):  # e.g. a/version_0 and b/version_0: use the paths
            for run, path in zip(runs, args.runs, strict=True):
                run.name = str(path)
        rows = compare_runs(runs, target=args.target_loss, tag=args.tag)
    except (FileNotFoundError, KeyError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"motlab compare: error: {message}", file=sys.stderr)
        return 2

    for run, path in zip(runs, args.runs, strict=True):
        if run.left_out:
            print(
                f"{path}: read {', '.join(run.versions)}; left out {', '.join(run.left_out)} "
                f"(other runs, or evaluations, not part of the newest run; compare one by "
                f"naming its directory, e.g. {path.rstrip('/')}/{run.left_out[-1]})"
            )
    target = rows[0]["target"]
    print(
        f"target {args.tag} = {target:.4f}"
        + (" (first run's final)" if args.target_loss is None else "")
    )
    table = [{COLUMNS[k]: _fmt(k, row[k]) for k in COLUMNS} for row in rows]
    print(format_table(table))
    if any(r.tokens_at(0.0) is None for r in runs):
        print("(tokens unknown for some runs: pass --tokens-per-step)")

    if args.csv:
        write_csv(rows, args.csv)
        print(f"wrote {args.csv}")
    if args.plot:
        if not figure_backend():
            print(
                "motlab compare: error: --plot needs matplotlib (pip install matplotlib)",
                file=sys.stderr,
            )
            return 2
        from motlab.analysis.plots import plot_loss_curves

        fig = plot_loss_curves(runs, tag=args.tag, target=target)
        save_figure(fig, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _compare_sweep(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.sweep is None or args.runs:
        parser.error("give RUN_DIRs or --sweep DIR" + (", not both" if args.runs else ""))
    from motlab.sweep.command import report_main
    from motlab.sweep.spec import SweepError

    try:
        return report_main(args.sweep, args.tag, args.csv, args.plot, args.target_loss)
    except (FileNotFoundError, KeyError, ValueError, SweepError) as err:
        print(f"motlab compare: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
