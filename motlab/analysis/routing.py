"""What the routed layers of a model do on one batch: merge weights, entropies, expert load.

Nothing here re-implements a layer. Forward hooks on every block's feed-forward capture its
input and the :class:`~motlab.layers.Aux` it returns during one ordinary forward pass; MoT merge
weights are then recomputed from the captured input with the layer's own
:meth:`~motlab.layers.MoT.merge_weights`, and token-choice load is read from the layer's own
statistics (``tokens_per_expert`` after capacity, ``dropped_fraction``) plus the router's top-k
choice (before capacity) from ``experts.router_logits``.

Shape legend: n groups (B / G), G group size, T position, E experts, L routed layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from motlab.layers import MoT, TokenChoice
from motlab.model import GPT


@dataclass
class LayerRouting:
    """Routing of one block's feed-forward on one batch (CPU tensors)."""

    block: int
    variant: str
    merge_weights: Tensor | None = None
    """MoT: (n, G, T, E) weights, summing to 1 over G for every expert and position."""
    entropy: Tensor | None = None
    """MoT: (n, T, E) entropy of the merge weights over G, divided by log G (1 = uniform)."""
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


def normalised_entropy(weights_nGTE: Tensor) -> Tensor:
    """Entropy over the group axis (dim 1) divided by log G: (n, G, T, E) → (n, T, E)."""
    G = weights_nGTE.shape[1]
    w = weights_nGTE.float()
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
        ffn = model.blocks[i].ffn
        x_BTD, aux = captured[i]
        stats = {k: v.detach().cpu() for k, v in aux.stats.items()}  # type: ignore[attr-defined]
        info = LayerRouting(block=i, variant=model.cfg.block_ffn(i).variant, stats=stats)
        if isinstance(ffn, MoT):
            B, T, _ = x_BTD.shape
            G = ffn.group_size
            weights_MGE, _ = ffn.merge_weights(ffn.groups(x_BTD))
            # Group t·n + i holds examples i·G … at position t: report (n, G, T, E).
            weights_nGTE = weights_MGE.view(T, B // G, G, -1).permute(1, 2, 0, 3)
            info.merge_weights = weights_nGTE.float().cpu()
            info.entropy = normalised_entropy(info.merge_weights)
        elif isinstance(ffn, TokenChoice):
            E, K = ffn.experts.n_experts, ffn.cfg.top_k
            logits_NE = ffn.experts.router_logits(x_BTD.reshape(-1, x_BTD.shape[-1]))
            choice_NK = logits_NE.topk(K, dim=-1).indices  # softmax keeps the order
            info.requested_per_expert = torch.bincount(choice_NK.reshape(-1), minlength=E).cpu()
            info.tokens_per_expert = stats.get("tokens_per_expert")
            dropped = stats.get("dropped_fraction")
            info.dropped_fraction = None if dropped is None else float(dropped)
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
