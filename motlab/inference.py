"""The inference switch: the capacity that capacity-limited layers (token choice) run at.

Why not ``model.eval()``: Lightning puts the module in eval mode for in-training validation,
whose loss must track the training objective, so it keeps the training capacity. Inference
asks explicitly instead: :func:`motlab.generate` and :func:`motlab.decoding.complete` for the
call, :func:`motlab.load_model` for the model it returns, and the lm-eval backend through
``load_model``. Their default is ``"dropless"`` (every token gets its k experts, so a row's
output does not depend on the rest of the batch); ``"training"`` or a capacity factor gives the
training behaviour. Layers without a capacity ignore the setting
(:meth:`motlab.layers.FFNLayer.set_capacity`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from motlab.layers import FFNLayer
from motlab.layers.registry import Capacity, check_capacity


def set_capacity(model: nn.Module, capacity: Capacity = "dropless") -> dict[FFNLayer, Capacity]:
    """Set every feed-forward layer of ``model`` to ``capacity``; return each one's previous
    setting (for :func:`restore_capacity`)."""
    capacity = check_capacity(capacity)
    return {m: m.set_capacity(capacity) for m in model.modules() if isinstance(m, FFNLayer)}


def restore_capacity(previous: dict[FFNLayer, Capacity]) -> None:
    """Put back what :func:`set_capacity` returned."""
    for layer, setting in previous.items():
        layer.set_capacity(setting)


@contextmanager
def capacity(model: nn.Module, capacity: Capacity = "dropless") -> Iterator[nn.Module]:
    """Within the block, ``model``'s layers run at ``capacity``; afterwards as before."""
    previous = set_capacity(model, capacity)
    try:
        yield model
    finally:
        restore_capacity(previous)
