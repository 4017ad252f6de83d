"""Router calibration when a MoT becomes token choice (transition tuning, METHOD.md §5).

Shapes (legend in :mod:`motlab.shapes`): B, T, D, E, N.

MoT softmaxes each expert's router logits over the tokens of a group, so a constant added to
one expert's logits changes nothing MoT computes: training leaves every expert's logit offset
and spread wherever they drift. Token choice takes the argmax of the same logits over experts,
so after the conversion those offsets decide the load: most tokens go to the few experts with
the largest offsets and are dropped at capacity.

Calibration runs the converted model on one batch of training data and, block by block in
order (each block sees the inputs that the calibrated blocks before it produce), moves each
expert's logits to mean 0 over the batch (``centre``) and also gives them all the same spread,
the root mean square of the experts' standard deviations (``standardise``), so that the
logits keep their overall size. Only the router tensor changes; the experts do not.

The router has no bias, so a per-expert shift must be folded into its weights. The layer's
input is the block's LayerNorm output ``z = γ ⊙ n + β`` with ``Σ_d n_d = 0`` for every token,
hence ``Σ_d z_d / γ_d = Σ_d β_d / γ_d = c`` is the same for every token: with
``w = (1 / γ) / c``, ``z · w = 1`` exactly, and the column ``r_e − μ_e · w`` gives expert e the
logits ``z · r_e − μ_e`` for every input, not only on the calibration batch. (A least-squares
fit of a constant on the batch finds this same direction; the formula needs no fit.) It needs
``c ≠ 0``: a trained LayerNorm bias. The realised ``max |z · w − 1|`` is reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from motlab.layers import TokenChoice
from motlab.model import GPT

Calibration = Literal["none", "centre", "standardise"]
CALIBRATIONS: tuple[str, ...] = ("none", "centre", "standardise")


@dataclass
class LayerCalibration:
    """What calibration did to one block's router (CPU tensors)."""

    block: int
    mean_E: Tensor
    """Each expert's logit mean on the batch before calibration (subtracted)."""
    std_E: Tensor
    """Each expert's logit standard deviation on the batch before calibration."""
    scale_E: Tensor
    """The factor each expert's centred logits were multiplied by (1 for ``centre``)."""
    fold_error: float
    """max |z · w − 1| over the batch: how exactly the shift was folded into the weights."""


@torch.no_grad()
def calibrate_routers(
    model: GPT,
    tokens_BT: Tensor,
    method: str,
    reduce_sum: Callable[[Tensor], Tensor] | None = None,
) -> list[LayerCalibration]:
    """Calibrate the router of every token-choice block of ``model`` in place, on the inputs
    the blocks get from ``tokens_BT`` (``method``: ``centre`` or ``standardise``; ``none`` does
    nothing). ``reduce_sum`` sums the batch statistics over processes (data parallel), so that
    every rank computes the same router."""
    if method not in CALIBRATIONS:
        raise ValueError(
            f"unknown router calibration {method!r}; valid: {', '.join(CALIBRATIONS)} "
            "(model.transition.calibration)"
        )
    if method == "none":
        return []
    blocks = [i for i, block in enumerate(model.blocks) if isinstance(block.ffn, TokenChoice)]
    if not blocks:
        raise ValueError("router calibration needs token-choice blocks: convert the MoT first")
    reports: list[LayerCalibration] = []

    def hook(index: int) -> Callable[[nn.Module, tuple[Tensor, ...]], None]:
        def fn(module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
            block = model.blocks[index]
            reports.append(_calibrate(block.ffn, block.ln_ffn, inputs[0], method, reduce_sum))
            reports[-1].block = index

        return fn

    handles = [model.blocks[i].ffn.register_forward_pre_hook(hook(i)) for i in blocks]
    was_training = model.training
    try:
        model.eval()
        model(tokens_BT)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return reports


def offset_direction(norm: nn.LayerNorm) -> Tensor:
    """``w`` (D,) with ``LayerNorm(x) · w = 1`` for every x (see the module docstring)."""
    if norm.weight is None or norm.bias is None:
        raise ValueError("router calibration needs the block's LayerNorm to have weight and bias")
    gamma_D, beta_D = norm.weight.double(), norm.bias.double()
    if not gamma_D.abs().min() > 0:
        raise ValueError("router calibration: a LayerNorm weight is 0, the shift cannot be folded")
    c = (beta_D / gamma_D).sum()
    if not c.abs() > 1e-6 * (beta_D / gamma_D).abs().sum().clamp_min(1e-30):
        raise ValueError(
            "router calibration: the LayerNorm before the routed layer has no usable bias "
            "(sum of bias / weight is 0, as in an untrained model), so a per-expert shift "
            "cannot be folded into the bias-free router; calibrate a trained model"
        )
    return (1.0 / gamma_D) / c


def _calibrate(
    layer: TokenChoice,
    norm: nn.LayerNorm,
    x_BTD: Tensor,
    method: str,
    reduce_sum: Callable[[Tensor], Tensor] | None,
) -> LayerCalibration:
    router = layer.experts.router  # (D, E)
    E = router.shape[1]
    z_ND = x_BTD.reshape(-1, x_BTD.shape[-1]).double()
    r_DE = router.double()
    logits_NE = z_ND @ r_DE
    sums = torch.cat(
        [
            logits_NE.sum(0),
            logits_NE.pow(2).sum(0),
            torch.tensor([logits_NE.shape[0]], dtype=torch.float64, device=z_ND.device),
        ]
    )
    if reduce_sum is not None:
        sums = reduce_sum(sums)
    n = sums[-1]
    mean_E = sums[:E] / n
    std_E = (sums[E : 2 * E] / n - mean_E.pow(2)).clamp_min(0).sqrt()
    w_D = offset_direction(norm)
    fold_error = (z_ND @ w_D - 1).abs().max().item()
    if method == "standardise":
        scale_E = std_E.pow(2).mean().sqrt() / std_E.clamp_min(1e-12)
    else:
        scale_E = torch.ones_like(std_E)
    router.copy_(((r_DE - w_D[:, None] * mean_E[None, :]) * scale_E[None, :]).to(router.dtype))
    return LayerCalibration(
        block=-1,
        mean_E=mean_E.float().cpu(),
        std_E=std_E.float().cpu(),
        scale_E=scale_E.float().cpu(),
        fold_error=fold_error,
    )
