"""What the routed layers of a model do on one batch: merge weights, entropies, expert load.

Nothing here re-implements or even knows a layer. Forward hooks on every block's feed-forward
capture its input and the :class:`~motlab.layers.Aux` it returns during one ordinary forward
pass; each layer's own :meth:`~motlab.layers.FFNLayer.routing_report` then turns them into the
detail below (MoT: merge weights recomputed with its ``merge_weights``; token choice: the
router's top-k choices before capacity beside its own load statistics after it).

Shapes (legend in :mod:`motlab.shapes`): Q, G, T, E, L.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from motlab.model import GPT


@dataclass
class LayerRouting:
    """Routing of one block's feed-forward on one batch (CPU tensors)."""

    block: int
    variant: str
    merge_weights: Tensor | None = None
    """MoT: (Q, G, T, E) weights, summing to 1 over G for every expert and position."""
    entropy: Tensor | None = None
    """MoT: (Q, T, E) entropy of the merge weights over G, divided by log G (1 = uniform)."""
    requested_per_expert: Tensor | None = None
    """Token choice: (E,) top-k choices per expert, before capacity."""
    tokens_per_expert: Tensor | None = None
    """Token choice: (E,) tokens processed per expert, after capacity."""
    dropped_fraction: float | None = None
    """Token choice: fraction of routing assignments dropped for lack of capacity."""
    stats: dict[str, Tensor] | None = None
    """Everything the layer reported in its Aux stats."""

    @property
    def entropy_per_expert(self) -> Tensor | None:
        """MoT: (E,) mean normalised entropy over groups and positions."""
        return None if self.entropy is None else self.entropy.mean(dim=(0, 1))

    @property
    def entropy_per_position(self) -> Tensor | None:
        """MoT: (T,) mean normalised entropy over groups and experts."""
        return None if self.entropy is None else self.entropy.mean(dim=(0, 2))

    @property
    def load_fraction(self) -> Tensor | None:
        """Token choice: (E,) share of the requested assignments each expert received."""
        if self.requested_per_expert is None:
            return None
        return self.requested_per_expert / self.requested_per_expert.sum().clamp_min(1)


REPORT_FIELDS = {"merge_weights", "requested_per_expert", "tokens_per_expert", "dropped_fraction"}
"""The :class:`LayerRouting` fields a layer's ``routing_report`` may fill."""


def normalised_entropy(weights_QGTE: Tensor) -> Tensor:
    """Entropy over the group axis (dim 1) divided by log G: (Q, G, T, E) → (Q, T, E)."""
    G = weights_QGTE.shape[1]
    w = weights_QGTE.float()
    entropy = -(w * w.clamp_min(1e-20).log()).sum(dim=1)
    return entropy / (math.log(G) if G > 1 else 1.0)


@torch.no_grad()
def inspect_routing(model: GPT, tokens_BT: Tensor) -> list[LayerRouting]:
    """Run ``model`` on ``tokens_BT`` once and report every routed block's routing.

    The batch must be a multiple of the model's group size (see
    :func:`motlab.filler.pad_with_filler` to place fewer real rows among filler rows). Dense
    blocks are left out.
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
        info = LayerRouting(block=i, variant=model.cfg.block_ffn(i).variant, stats=stats)
        report = model.blocks[i].ffn.routing_report(x_BTD, aux)
        unknown = sorted(set(report) - REPORT_FIELDS)
        if unknown:
            raise KeyError(f"block {i}: routing_report keys {unknown} are not LayerRouting fields")
        for key, value in report.items():
            value = value.detach().cpu()
            setattr(info, key, float(value) if key == "dropped_fraction" else value)
        if info.merge_weights is not None:
            info.merge_weights = info.merge_weights.float()
            info.entropy = normalised_entropy(info.merge_weights)
        layers.append(info)
    return layers


def entropy_matrix(layers: list[LayerRouting]) -> tuple[Tensor, list[int]]:
    """(L, E) mean normalised merge entropy per MoT layer and expert, and the block indices."""
    mot = [r for r in layers if r.entropy is not None]
    if not mot:
        raise ValueError("no MoT layers in this routing report")
    return torch.stack([r.entropy_per_expert for r in mot]), [r.block for r in mot]  # type: ignore[misc]


def load_matrix(
    layers: list[LayerRouting], after_capacity: bool = True
) -> tuple[Tensor, list[int]]:
    """(L, E) tokens per expert of each token-choice layer (after or before capacity)."""
    tc = [r for r in layers if r.requested_per_expert is not None]
    if not tc:
        raise ValueError("no token-choice layers in this routing report")
    rows = [
        (r.tokens_per_expert if after_capacity else r.requested_per_expert).float()  # type: ignore[union-attr]
        for r in tc
    ]
    return torch.stack(rows), [r.block for r in tc]
