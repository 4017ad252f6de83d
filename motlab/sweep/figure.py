"""The sweep figure: per axis, final loss (left) and speed-up over the baseline (right).

Axes whose values are positive and span 8× or more (counts of experts, granularity) are drawn
on a log₂ scale with a tick at every swept value. Baselines are horizontal dashed lines: their
final loss on the left, the reference's speed-up of 1 on the right; runs that never reached the
target loss are crosses along the bottom of the right panel. With several axes, each
combination of the other axes' values is its own line.
"""

from __future__ import annotations

from typing import Any

from motlab.sweep.report import SweepReport

BASELINE_COLOURS = ("black", "tab:grey", "tab:brown", "tab:olive")


def _positions(values: list[Any]) -> tuple[list[float], bool]:
    """x positions of axis values: the numbers themselves, or 0, 1, ... for other values."""
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric:
        return [float(v) for v in values], True
    return [float(i) for i in range(len(values))], False


def _axis_label(name: str, values: list[Any], keys: dict[str, list[Any]]) -> str:
    """``E = model.net.ffn.n_experts = model.net.ffn.group_size``, ``k (sets ...n_experts)``."""
    same = [k for k, v in keys.items() if list(v) == values and k != name]
    other = [k for k, v in keys.items() if list(v) != values]
    label = " = ".join([name, *same])
    return f"{label}  (sets {', '.join(other)})" if other else label


def plot_sweep(report: SweepReport) -> Any:
    """One row of two panels per swept axis; returns the matplotlib figure."""
    import matplotlib.pyplot as plt  # optional dependency: the caller checked for it
    from matplotlib.transforms import blended_transform_factory

    n = len(report.axes)
    fig, grid = plt.subplots(n, 2, figsize=(12, 4.2 * n), squeeze=False)
    sweep_rows = [r for r in report.rows if not r["baseline"]]
    baseline_rows = [r for r in report.rows if r["baseline"]]
    target = (
        "the target loss" if report.target_given else f"{report.reference}'s final {report.tag}"
    )
    for (ax_loss, ax_speed), axis in zip(grid, report.axes, strict=True):
        name, values = axis["name"], list(axis["values"])
        xs, numeric = _positions(values)
        x_of = dict(zip(map(str, values), xs, strict=True))
        others = [a["name"] for a in report.axes if a["name"] != name]
        groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for row in sweep_rows:
            groups.setdefault(tuple(row[o] for o in others), []).append(row)
        unreached: list[float] = []
        for key, rows in groups.items():
            rows = sorted(rows, key=lambda r: x_of[str(r[name])])
            label = ", ".join(f"{o}={v}" for o, v in zip(others, key, strict=True)) or report.name
            x = [x_of[str(r[name])] for r in rows]
            ax_loss.plot(x, [r["final_loss"] for r in rows], marker="o", label=label)
            reached = [(xi, r["speedup_steps"]) for xi, r in zip(x, rows, strict=True)
                       if r["speedup_steps"] is not None]  # fmt: skip
            unreached += [xi for xi, r in zip(x, rows, strict=True) if r["speedup_steps"] is None]
            if reached:
                ax_speed.plot(*zip(*reached, strict=True), marker="o", label=label)
        for j, row in enumerate(baseline_rows):
            colour = BASELINE_COLOURS[j % len(BASELINE_COLOURS)]
            ax_loss.axhline(
                row["final_loss"], color=colour, linestyle="--", linewidth=1.2,
                label=f"{row['run']} (baseline): {row['final_loss']:.3f}",
            )  # fmt: skip
        xlabel = _axis_label(name, values, axis["keys"])
        for ax in (ax_loss, ax_speed):
            if numeric and axis.get("log_scale"):
                ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [str(v) for v in values])
            ax.minorticks_off()
            ax.set_xlabel(xlabel)
            ax.grid(alpha=0.3)
        ax_loss.set_ylabel(f"final {report.tag}")
        ax_loss.set_title(f"{report.name}: final {report.tag} vs {name}")
        if report.reference is None:
            ax_speed.set_title("no baseline logged: no speed-up")
        else:
            ax_speed.axhline(
                1.0, color=BASELINE_COLOURS[0], linestyle="--", linewidth=1.2,
                label=f"{report.reference} (baseline) = 1",
            )  # fmt: skip
            if unreached:
                bottom = blended_transform_factory(ax_speed.transData, ax_speed.transAxes)
                ax_speed.plot(
                    unreached, [0.04] * len(unreached), transform=bottom, linestyle="none",
                    marker="x", markersize=9, color="tab:red", label=f"never reached {target}",
                )  # fmt: skip
            # A ratio: from 0, with room above the highest point (and the baseline's 1).
            highest = max([1.0, *(r["speedup_steps"] or 0.0 for r in sweep_rows)])
            ax_speed.set_ylim(0, highest * 1.2)
            ax_speed.set_ylabel(f"speed-up over {report.reference} (steps, ×)")
            ax_speed.set_title(f"{report.name}: speed-up in steps to {target}")
        for ax in (ax_loss, ax_speed):
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
