"""Writing a comparison out: its table as CSV and its figure as an image file.

Shared by ``motlab compare`` and the sweep report, so that both write the same CSV (a header
from the first row's keys) and select matplotlib's file backend the same way.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

FIGURE_DPI = 120


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """``rows`` (dicts with the same keys) as a CSV file, columns in the first row's order."""
    path = Path(path)
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

    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    return Path(path)
