"""Mixture of Tokens (METHOD.md §2): experts see weighted mixtures of tokens from a group.

Shapes (legend in :mod:`motlab.shapes`): B, T, D, E, F, G, Q, R.

A group is G examples of the batch at one position (never several positions: that would leak
the future). For every expert the router's logits are softmaxed *over the group*, each expert
processes one mixed token per group and position, and the same weights scatter its output back.
With G = E = 1 the layer is exactly the dense FFN.

Left padding (prompts of different lengths decoded together, :meth:`MoT.forward_masked`) is
masked out of the group: a padded row gets weight 0 in every expert's softmax, so each expert
mixes the group's real rows at that position only, and padding gets a zero output. A group
whose rows are all padding at a position mixes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from motlab.layers.aux import Aux
from motlab.layers.experts import Experts
from motlab.layers.registry import (
    FFNConfig,
    FFNLayer,
    LayerCost,
    check_group_multiple,
    register_variant,
)


@dataclass
class MoTConfig(FFNConfig):
    """Mixture of Tokens. Named MoT-{size}/{G}E/{k}: G = group_size, E = G·k, F = d_ff / k."""

    variant: Literal["mot"] = "mot"
    """Registry name of this variant."""
    group_size: int = 32
    """G: examples mixed together at one position. The per-device batch must be a multiple."""
    n_experts: int = 32
    """E: number of experts."""
    d_expert: int | None = None
    """F: expert hidden size. ``None`` = FLOP-matched to the dense layer: G·d_ff / E."""
    temperature: float = 1.0
    """Softmax temperature τ of the merge weights (1.0 in the paper)."""
    learnable_temperature: bool = False
    """Learn τ (parametrised as log τ so it stays positive)."""
    discrete: bool = False
    """Argmax routing (τ → 0): each expert takes exactly one token of its group, weight 1."""

    def validate(self, d_ff: int) -> None:
        """Raise early, at config time, if the sizes don't fit together."""
        if self.group_size < 1 or self.n_experts < 1:
            raise ValueError(
                "MoT needs model.net.ffn.group_size >= 1 and model.net.ffn.n_experts >= 1, got "
                f"{self.group_size} and {self.n_experts}"
            )
        if self.temperature <= 0:
            raise ValueError(f"model.net.ffn.temperature must be > 0, got {self.temperature}")
        self.expert_size(d_ff)

    def expert_size(self, d_ff: int) -> int:
        if self.d_expert is not None:
            return self.d_expert
        if (self.group_size * d_ff) % self.n_experts:
            raise ValueError(
                f"MoT FLOP matching needs n_experts ({self.n_experts}) to divide "
                f"group_size * d_ff ({self.group_size} * {d_ff}); set ffn.d_expert explicitly "
                "or choose n_experts among the divisors"
            )
        return self.group_size * d_ff // self.n_experts


class MoT(FFNLayer):
    """Mixture of Tokens feed-forward layer: x (B, T, D) → (B, T, D).

    Evaluation mode ``discrete``: argmax routing (each expert takes exactly one token of its
    group, weight 1), the τ → 0 diagnostic; ``MoTConfig.discrete`` trains in it.
    """

    cfg: MoTConfig
    EVAL_MODES = ("discrete",)

    def __init__(self, d_model: int, d_ff: int, cfg: MoTConfig) -> None:
        super().__init__(d_model, d_ff, cfg)
        cfg.validate(d_ff)
        self.group_size = cfg.group_size
        self.discrete = cfg.discrete
        self.experts = Experts(d_model, cfg.n_experts, cfg.expert_size(d_ff))
        log_tau = torch.tensor(math.log(cfg.temperature))
        if cfg.learnable_temperature:
            self.log_temperature = nn.Parameter(log_tau)
        else:
            self.register_buffer("log_temperature", log_tau)

    @property
    def mode(self) -> str | None:
        return "discrete" if self.discrete else None

    def set_mode(self, mode: str | None) -> None:
        if mode not in (None, *self.EVAL_MODES):
            raise self._unknown_mode(mode)
        self.discrete = mode == "discrete"

    def groups(self, x_BTD: Tensor) -> Tensor:
        """(B, T, D) → (R, G, D): group t·Q + i is examples i·G … i·G + G − 1 at position t.

        Position-major, and a copy: every group becomes one contiguous block, so mix, experts
        and unmix are batched matmuls reading each other's outputs through strided views.
        Grouping the (B, T, D) layout in place would instead cost copies of the mixed tensor
        (E/G times the size of x) both ways.
        """
        B, T, D = x_BTD.shape
        G = self.group_size
        hint = ", or fill the batch up with filler rows (motlab.generate does)"
        check_group_multiple(B, G, "MoT", hint=hint)
        return x_BTD.transpose(0, 1).reshape(T * (B // G), G, D)

    def merge_weights(self, x_RGD: Tensor, real_RG: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Weights (R, G, E) that sum to 1 over each group's G tokens, and the fp32 logits.

        R indexes groups as :meth:`groups` lays them out. With ``real_RG`` (False = padding)
        the weights sum to 1 over the real tokens and are 0 for padding (all 0 in a group
        of padding only).
        """
        logits_RGE = self.experts.router_logits(x_RGD)
        masked_RGE = logits_RGE
        if real_RG is not None:
            masked_RGE = logits_RGE.masked_fill(~real_RG[..., None], float("-inf"))
        if self.discrete:
            winner_RE = masked_RGE.argmax(dim=1)
            weights_RGE = F.one_hot(winner_RE, self.group_size).transpose(1, 2)
            weights_RGE = weights_RGE.to(logits_RGE.dtype)
        else:
            temperature = self.log_temperature.float().exp()
            weights_RGE = torch.softmax(masked_RGE / temperature, dim=1)
        if real_RG is not None:  # also clears the NaN of a softmax over padding only
            weights_RGE = torch.where(real_RG[..., None], weights_RGE, 0.0)
        return weights_RGE, logits_RGE

    def forward(self, x_BTD: Tensor) -> tuple[Tensor, Aux]:
        return self._mix(x_BTD, None)

    def forward_masked(self, x_BTD: Tensor, real_BT: Tensor) -> tuple[Tensor, Aux]:
        """Padding (``real_BT`` False) takes no part in its group (module docstring)."""
        return self._mix(x_BTD, real_BT)

    def _mix(self, x_BTD: Tensor, real_BT: Tensor | None) -> tuple[Tensor, Aux]:
        B, T, D = x_BTD.shape
        x_RGD = self.groups(x_BTD)
        real_RG = None if real_BT is None else real_BT.transpose(0, 1).reshape(x_RGD.shape[:2])
        weights_RGE, logits_RGE = self.merge_weights(x_RGD, real_RG)
        w_RGE = weights_RGE.to(x_BTD.dtype)

        # Mix: every expert gets one weighted sum of its group's G tokens.
        mixed_RED = torch.bmm(w_RGE.transpose(1, 2), x_RGD)
        y_ERD = self.experts(mixed_RED.transpose(0, 1))
        # Unmix with the same weights: token g gets Σ_e w[g, e] · y[e].
        out_RGD = torch.bmm(w_RGE, y_ERD.transpose(0, 1))
        # A (B, T, D) view of position-major memory: the residual add that follows (x + out)
        # writes in x's layout, so no copy is needed here.
        out_BTD = out_RGD.view(T, B, D).transpose(0, 1)
        return out_BTD, Aux(stats=self._stats(weights_RGE, logits_RGE))

    @torch.no_grad()
    def _stats(self, weights_RGE: Tensor, logits_RGE: Tensor) -> dict[str, Tensor]:
        """Merge-weight entropy normalised by log G (1 = uniform mix, 0 = one token), logits."""
        entropy_RE = group_entropy(weights_RGE.detach(), dim=1)
        logits = logits_RGE.detach()
        return {
            "merge_entropy": entropy_RE.mean() / entropy_norm(self.group_size),
            "router_logits_mean": logits.mean(),
            "router_logits_std": logits.std(),
            "temperature": self.log_temperature.detach().float().exp(),
        }

    def cost(self) -> LayerCost:
        """Every expert runs one mixed token per G tokens: E·2·D·F / G per token, plus the
        router logits, the merge and the unmix (E·D each)."""
        E, G, D, F = self.experts.n_experts, self.group_size, self.d_model, self.experts.d_expert
        expert_share = E * 2 * D * F / G
        return LayerCost(active_params=D * E + expert_share, forward_macs=expert_share + 3 * E * D)

    @torch.no_grad()
    def routing_report(self, x_BTD: Tensor, aux: Aux) -> dict[str, Tensor]:
        """The merge weights and their entropy, recomputed from the layer's input with
        :meth:`merge_weights`:

        * ``merge_weights`` (Q, G, T, E), float32: the weight of example i·G + g at position t
          for expert e; they sum to 1 over G;
        * ``entropy`` (Q, T, E): their entropy over G divided by log G (1 = uniform mix, 0 =
          one token; its mean is the ``merge_entropy`` the layer logs);
        * ``entropy_per_expert`` (E,) and ``entropy_per_position`` (T,): its means.
        """
        B, T, _ = x_BTD.shape
        G = self.group_size
        weights_RGE, _ = self.merge_weights(self.groups(x_BTD))
        # Group t·Q + i holds examples i·G … at position t.
        weights_QGTE = weights_RGE.float().view(T, B // G, G, -1).permute(1, 2, 0, 3)
        entropy_QTE = group_entropy(weights_QGTE, dim=1) / entropy_norm(G)
        return {
            "merge_weights": weights_QGTE,
            "entropy": entropy_QTE,
            "entropy_per_expert": entropy_QTE.mean(dim=(0, 1)),
            "entropy_per_position": entropy_QTE.mean(dim=(0, 2)),
        }


def group_entropy(weights: Tensor, dim: int) -> Tensor:
    """Entropy (nats, float32) of merge weights over the group axis ``dim``."""
    w = weights.float()
    return -(w * w.clamp_min(1e-20).log()).sum(dim=dim)


def entropy_norm(group_size: int) -> float:
    """log G, the entropy of a uniform mix of G tokens (1 for G = 1): entropy over it is in
    [0, 1]."""
    return math.log(group_size) if group_size > 1 else 1.0


register_variant("mot", MoTConfig, MoT)
