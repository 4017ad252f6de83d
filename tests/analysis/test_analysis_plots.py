"""The matplotlib figures build, with titles and labelled axes (Agg backend, no display)."""

from __future__ import annotations

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


def test_loss_curves(two_runs):
    fig = plot_loss_curves([read_run(p) for p in two_runs], target=3.0)
    assert len(fig.axes) == 2 and labelled(fig)
    assert fig.axes[1].get_xlabel() == "training tokens"


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
    assert labelled(plot_merge_weights(layers, group=0, position=3))
    assert labelled(plot_entropy(layers, vmin=None, vmax=None))
    tc_layers = inspect_routing(convert_model(model).eval(), tokens)
    assert labelled(plot_expert_load(tc_layers, after_capacity=False))
    with pytest.raises(ValueError, match="MoT"):
        plot_merge_weights(tc_layers)
