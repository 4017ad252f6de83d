"""What the routed layers of a model do on one batch: whatever each layer reports of its routing.

Nothing here re-implements or even knows a layer. Forward hooks on every routed block's
feed-forward capture its input and the :class:`~motlab.layers.Aux` it returns during one
ordinary forward pass; each layer's own :meth:`~motlab.layers.FFNLayer.routing_report` then
says what it chooses to show (MoT: merge weights and their entropy; token choice: the router's
top-k choices before capacity beside its own load statistics after it), kept as it reported it.

Shapes (legend in :mod:`motlab.shapes`): L, E.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from motlab.model import GPT


@dataclass
class LayerRouting:
    """Routing of one block's feed-forward on one batch (CPU tensors).

    Each entry of :attr:`report` is also an attribute: ``r.merge_weights`` is
    ``r.report["merge_weights"]``.
    """

    block: int
    variant: str
    report: dict[str, Any] = field(default_factory=dict)
    """What the layer's ``routing_report`` returned, by name: CPU tensors, 0-d ones as floats."""
    stats: dict[str, Tensor] = field(default_factory=dict)
    """Everything the layer reported in its Aux stats."""

    def __getattr__(self, name: str) -> Any:
        report = self.__dict__.get("report") or {}
        if name in report:
            return report[name]
        raise AttributeError(
            f"block {self.__dict__.get('block')} ({self.__dict__.get('variant')}) reported no "
            f"{name!r}; it reported: {', '.join(sorted(report)) or 'nothing'}"
        )

    def __contains__(self, name: str) -> bool:
        return name in self.report


@torch.no_grad()
def inspect_routing(model: GPT, tokens_BT: Tensor) -> list[LayerRouting]:
    """Run ``model`` on ``tokens_BT`` once and report every routed block's routing.

    The batch must be a multiple of the model's group size (rows of
    :func:`motlab.filler.filler_rows` can fill it up beside fewer real ones). Dense blocks are
    left out.
    """
    captured: dict[int, tuple[Tensor, object]] = {}
    handles = []

    def hook(index: int):
        def fn(module: nn.Module, inputs: tuple[Tensor, ...], output: tuple[Tensor, object]):
            captured[index] = (inputs[0].detach(), output[1])

        return fn

    routed = {i for i in model.cfg.routed_blocks() if model.cfg.block_ffn(i).variant != "dense"}
    for i, block in enumerate(model.blocks):
        if i in routed:
            handles.append(block.ffn.register_forward_hook(hook(i)))
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters()).device
        model(tokens_BT.to(device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    layers = []
    for i in sorted(captured):
        x_BTD, aux = captured[i]
        stats = {k: v.detach().cpu() for k, v in aux.stats.items()}  # type: ignore[attr-defined]
        report = model.blocks[i].ffn.routing_report(x_BTD, aux)
        variant = model.cfg.block_ffn(i).variant
        layers.append(LayerRouting(i, variant, {k: _cpu(v) for k, v in report.items()}, stats))
    return layers


def _cpu(value: Any) -> Any:
    """A reported tensor on the CPU, a 0-d one as a Python float."""
    if not isinstance(value, Tensor):
        return value
    value = value.detach().cpu()
    return float(value) if value.ndim == 0 else value


def report_matrix(layers: list[LayerRouting], name: str, what: str) -> tuple[Tensor, list[int]]:
    """(L, E) float matrix of the (E,) vector ``name`` of every layer that reported it, and those
    layers' block indices; ``what`` names the quantity in the error when none did."""
    rows = [(r.report[name].float(), r.block) for r in layers if name in r]
    if not rows:
        raise ValueError(f"no layer in this routing report has {name!r} ({what})")
    return torch.stack([row for row, _ in rows]), [block for _, block in rows]


def entropy_matrix(layers: list[LayerRouting]) -> tuple[Tensor, list[int]]:
    """(L, E) mean normalised merge entropy per expert of every layer that reports it (MoT's
    ``entropy_per_expert``), and the block indices."""
    return report_matrix(layers, "entropy_per_expert", "the merge entropy MoT layers report")


def load_matrix(
    layers: list[LayerRouting], after_capacity: bool = True
) -> tuple[Tensor, list[int]]:
    """(L, E) tokens per expert of every layer that reports its load (token choice's
    ``tokens_per_expert`` after capacity, ``requested_per_expert`` before it)."""
    name = "tokens_per_expert" if after_capacity else "requested_per_expert"
    return report_matrix(layers, name, "the expert load token-choice layers report")
