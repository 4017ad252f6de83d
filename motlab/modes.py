"""Routing modes of a model: the routing it runs now, and the extra evaluation modes its layers
declare (:attr:`motlab.layers.FFNLayer.EVAL_MODES`; MoT's ``discrete`` argmax routing is one).

Nothing here knows a variant: training logs validation per routing mode (``val/mot/loss``,
``val/token_choice/loss`` after an in-run switch, ``val/mot_discrete/loss``), and validates in
an extra mode only where the model's layers declare it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from torch import nn

from motlab.layers import FFNLayer


def routed_layers(model: nn.Module) -> list[FFNLayer]:
    """The feed-forward layers of ``model``'s routed blocks (``model.cfg.routed_blocks()``)."""
    cfg = getattr(model, "cfg", None)
    blocks = getattr(model, "blocks", None)
    if cfg is None or blocks is None:
        return [m for m in model.modules() if isinstance(m, FFNLayer)]
    return [blocks[i].ffn for i in cfg.routed_blocks()]


def routing_mode(model: nn.Module) -> str:
    """``"mot"``, ``"mot_discrete"``, ``"token_choice"``, ... — the routing the model uses now:
    its routed layers' variant, joined with the evaluation mode they run in, if any; ``"dense"``
    without routed blocks."""
    layers = routed_layers(model)
    if not layers:
        return "dense"
    modes = sorted({layer.mode for layer in layers if layer.mode is not None})
    return "_".join([layers[0].cfg.variant, *modes])


def available_modes(model: nn.Module) -> list[str]:
    """The extra evaluation modes ``model``'s routed layers declare and do not run in already."""
    layers = routed_layers(model)
    declared = {mode for layer in layers for mode in layer.EVAL_MODES}
    running = {layer.mode for layer in layers}
    return sorted(declared - running)


@contextmanager
def evaluating_in(model: nn.Module, mode: str) -> Iterator[None]:
    """Every routed layer of ``model`` that declares ``mode`` runs in it inside the ``with``
    block; each layer's mode before it is restored after."""
    with ExitStack() as stack:
        for layer in routed_layers(model):
            if mode in layer.EVAL_MODES:
                stack.enter_context(layer.in_mode(mode))
        yield
