"""Writing results out: a comparison's table as CSV and its figure as an image file, and the
place of any output file a command is asked to write.

Shared by ``motlab compare``, the sweep report and ``motlab zeroshot --output``, so that all
write the same CSV (a header from the first row's keys), select matplotlib's file backend the
same way, and create the directories of an output path that do not exist yet.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

FIGURE_DPI = 120


def output_path(path: str | Path) -> Path:
    """``path``, with the directories it is to be written into created (``figs/x.png``); a
    path whose directory cannot be made (a file in its place) is an ``OSError`` naming it."""
    path = Path(path).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        raise NotADirectoryError(
            f"cannot write {path}: {e.filename or path.parent} is a file, not a directory"
        ) from e
    return path


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """``rows`` (dicts with the same keys) as a CSV file, columns in the first row's order."""
    path = output_path(path)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def figure_backend() -> bool:
    """Select matplotlib's file backend (Agg: figures go to files, no window opens); False when
    matplotlib is not installed (``pip install "motlab[analysis]"``)."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    return True


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write a matplotlib figure to ``path`` (format from its suffix) and close it."""
    import matplotlib.pyplot as plt

    path = output_path(path)
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    return path
