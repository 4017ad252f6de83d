"""Matplotlib figures for runs and routing (matplotlib is optional: ``pip install matplotlib``).

Every function draws into the axes it is given (or a new figure) and returns the figure, so
notebooks can arrange them and ``motlab compare`` can save them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from motlab.analysis.routing import LayerRouting, entropy_matrix, load_matrix
from motlab.analysis.runs import Run
from motlab.analysis.speedup import DEFAULT_TAG


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("plotting needs matplotlib: pip install matplotlib") from err
    return plt


def plot_loss_curves(
    runs: Sequence[Run],
    tag: str = DEFAULT_TAG,
    target: float | None = None,
    axes: Sequence[Any] | None = None,
) -> Any:
    """``tag`` against steps (left) and training tokens (right, when known) for every run."""
    plt = _pyplot()
    with_tokens = any(r.tokens_at(0.0) is not None for r in runs)
    if axes is None:
        ncols = 2 if with_tokens else 1
        fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 4), squeeze=False)
        axes = list(axes[0])
    fig = axes[0].figure
    for run in runs:
        if tag not in run.scalars:
            continue
        s = run.scalars[tag]
        axes[0].plot(s.steps, s.values, marker=".", label=run.name)
        if with_tokens and len(axes) > 1:
            tokens = run.tokens_at(s.steps)
            if tokens is not None:
                axes[1].plot(tokens, s.values, marker=".", label=run.name)
    xlabels = ["optimiser step", "training tokens"]
    for ax, xlabel in zip(axes, xlabels, strict=False):
        if target is not None:
            ax.axhline(target, color="grey", linestyle="--", linewidth=1, label="target")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(tag)
        ax.set_title(f"{tag} vs {xlabel.split()[-1]}")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def plot_merge_weights(
    layers: Sequence[LayerRouting], group: int = 0, position: int = -1, axes: Any = None
) -> Any:
    """Heat maps (G tokens × E experts) of every MoT layer's merge weights at one position."""
    plt = _pyplot()
    mot = [r for r in layers if "merge_weights" in r]
    if not mot:
        raise ValueError("no layer in this routing report has merge weights (MoT layers do)")
    if axes is None:
        fig, axes = plt.subplots(1, len(mot), figsize=(4 * len(mot), 3.6), squeeze=False)
        axes = list(axes[0])
    fig = axes[0].figure
    for ax, r in zip(axes, mot, strict=False):
        w_GE = r.merge_weights[group, :, position, :]
        im = ax.imshow(w_GE.numpy(), aspect="auto", cmap="viridis")  # colours span the data
        ax.set_xlabel("expert")
        ax.set_ylabel("token of the group (batch row)")
        ax.set_title(f"block {r.block}: merge weights")
        fig.colorbar(im, ax=ax, label="weight (sums to 1 over the group)")
    G = mot[0].merge_weights.shape[1]
    fig.suptitle(
        f"MoT merge weights, group {group}, position {position} (uniform mix = 1/G = {1 / G:.3g})"
    )
    fig.tight_layout()
    return fig


def plot_entropy(
    layers: Sequence[LayerRouting], ax: Any = None, vmin: float = 0.0, vmax: float = 1.0
) -> Any:
    """Heat map (MoT layer × expert) of the normalised merge-weight entropy.

    The colour scale is the full [0, 1] range by default; pass ``vmin``/``vmax`` (or None for
    the data's range) to see small differences.
    """
    plt = _pyplot()
    matrix, blocks = entropy_matrix(list(layers))
    if ax is None:
        fig, ax = plt.subplots(figsize=(8, 1.2 + 0.6 * len(blocks)))
    fig = ax.figure
    im = ax.imshow(matrix.numpy(), aspect="auto", cmap="magma", vmin=vmin, vmax=vmax)
    ax.set_yticks(range(len(blocks)), [f"block {b}" for b in blocks])
    ax.set_xlabel("expert")
    ax.set_ylabel("layer")
    ax.set_title("normalised merge entropy (1 = uniform mix, 0 = one token)")
    fig.colorbar(im, ax=ax, label="entropy / log G")
    fig.tight_layout()
    return fig


def plot_expert_load(layers: Sequence[LayerRouting], after_capacity: bool = True, ax: Any = None):
    """Heat map (token-choice layer × expert) of tokens per expert."""
    plt = _pyplot()
    matrix, blocks = load_matrix(list(layers), after_capacity=after_capacity)
    if ax is None:
        fig, ax = plt.subplots(figsize=(8, 1.2 + 0.6 * len(blocks)))
    fig = ax.figure
    im = ax.imshow(matrix.numpy(), aspect="auto", cmap="viridis")
    ax.set_yticks(range(len(blocks)), [f"block {b}" for b in blocks])
    ax.set_xlabel("expert")
    ax.set_ylabel("layer")
    when = "after capacity (kept)" if after_capacity else "requested (top-k, before capacity)"
    ax.set_title(f"token-choice load per expert, {when}")
    fig.colorbar(im, ax=ax, label="tokens")
    fig.tight_layout()
    return fig
