"""The matplotlib figures draw the data they are given, with titles and labelled axes (Agg
backend, no display)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

from motlab import GPT, GPTConfig  # noqa: E402
from motlab.analysis import inspect_routing, read_run  # noqa: E402
from motlab.analysis.plots import (  # noqa: E402
    plot_entropy,
    plot_expert_load,
    plot_loss_curves,
    plot_merge_weights,
)
from motlab.transition import convert_model  # noqa: E402


def labelled(fig) -> bool:
    return all(
        ax.get_xlabel() and ax.get_title() for ax in fig.axes if ax.get_label() != "<colorbar>"
    )


def image(ax) -> np.ndarray:
    """The array an ``imshow`` drew into ``ax``."""
    (drawn,) = ax.get_images()
    return np.asarray(drawn.get_array())


def panels(fig) -> list:
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def test_loss_curves(two_runs):
    runs = [read_run(p) for p in two_runs]
    fig = plot_loss_curves(runs, target=3.0)
    assert len(fig.axes) == 2 and labelled(fig)
    assert fig.axes[1].get_xlabel() == "training tokens"
    for ax, x_of in zip(fig.axes, ("steps", "tokens"), strict=True):
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert set(lines) == {run.name for run in runs} | {"target"}
        for run in runs:
            s = run["val/loss"]
            x = s.steps if x_of == "steps" else run.tokens_at(s.steps)
            np.testing.assert_array_equal(lines[run.name].get_xdata(), x)
            np.testing.assert_array_equal(lines[run.name].get_ydata(), s.values)
        assert list(lines["target"].get_ydata()) == [3.0, 3.0]


def test_routing_figures():
    torch.manual_seed(0)
    cfg = GPTConfig(
        size=None,
        d_model=16,
        d_ff=32,
        n_layers=2,
        n_heads=2,
        vocab_size=64,
        seq_len=8,
        ffn={"variant": "mot", "group_size": 4, "n_experts": 4},
        moe_blocks="all",
    )
    model = GPT(cfg).eval()
    tokens = torch.randint(64, (4, 8))
    layers = inspect_routing(model, tokens)
    weights = plot_merge_weights(layers, group=0, position=3)
    assert labelled(weights) and len(panels(weights)) == 2
    for ax, r in zip(panels(weights), layers, strict=True):
        np.testing.assert_array_equal(image(ax), r.merge_weights[0, :, 3, :].numpy())
        assert ax.get_title() == f"block {r.block}: merge weights"
    entropy = plot_entropy(layers, vmin=None, vmax=None)
    assert labelled(entropy)
    (ax,) = panels(entropy)
    expected = torch.stack([r.entropy.mean(dim=(0, 1)) for r in layers]).numpy()
    np.testing.assert_array_equal(image(ax), expected)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["block 0", "block 1"]
    tc_layers = inspect_routing(convert_model(model).eval(), tokens)
    for after, name in ((False, "requested_per_expert"), (True, "tokens_per_expert")):
        load = plot_expert_load(tc_layers, after_capacity=after)
        assert labelled(load)
        expected = torch.stack([r.report[name].float() for r in tc_layers]).numpy()
        np.testing.assert_array_equal(image(panels(load)[0]), expected)
    with pytest.raises(ValueError, match="MoT"):
        plot_merge_weights(tc_layers)
