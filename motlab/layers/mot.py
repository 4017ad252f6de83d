"""Mixture of Tokens (METHOD.md §2): experts see weighted mixtures of tokens from a group.

Shape legend: B batch, T position, D d_model, E experts, F expert hidden size, G group size,
n = B / G groups per position, M = T · n groups in all.

A group is G examples of the batch at one position (never several positions: that would leak
the future). For every expert the router's logits are softmaxed *over the group*, each expert
processes one mixed token per group and position, and the same weights scatter its output back.
With G = E = 1 the layer is exactly the dense FFN.
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


@dataclass
class MoTConfig:
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


class MoT(nn.Module):
    """Mixture of Tokens feed-forward layer: x (B, T, D) → (B, T, D)."""

    def __init__(self, d_model: int, d_ff: int, cfg: MoTConfig) -> None:
        super().__init__()
        if cfg.group_size < 1 or cfg.n_experts < 1:
            raise ValueError("MoT needs group_size >= 1 and n_experts >= 1")
        if cfg.temperature <= 0:
            raise ValueError(f"MoT temperature must be > 0, got {cfg.temperature}")
        self.cfg = cfg
        self.group_size = cfg.group_size
        self.discrete = cfg.discrete
        self.experts = Experts(d_model, cfg.n_experts, cfg.expert_size(d_ff))
        log_tau = torch.tensor(math.log(cfg.temperature))
        if cfg.learnable_temperature:
            self.log_temperature = nn.Parameter(log_tau)
        else:
            self.register_buffer("log_temperature", log_tau)

    def groups(self, x_BTD: Tensor) -> Tensor:
        """(B, T, D) → (M, G, D): group t·n + i is examples i·G … i·G + G − 1 at position t.

        Position-major, and a copy: every group becomes one contiguous block, so mix, experts
        and unmix are batched matmuls reading each other's outputs through strided views.
        Grouping the (B, T, D) layout in place would instead cost copies of the mixed tensor
        (E/G times the size of x) both ways.
        """
        B, T, D = x_BTD.shape
        G = self.group_size
        if B % G:
            raise ValueError(
                f"MoT groups the batch in groups of group_size={G}, but got a batch of {B}: "
                f"use a batch size that is a multiple of {G} (data.batch_size), or pad the batch "
                "with filler sequences (motlab.generate does this)"
            )
        return x_BTD.transpose(0, 1).reshape(T * (B // G), G, D)

    def merge_weights(self, x_MGD: Tensor) -> tuple[Tensor, Tensor]:
        """Weights (M, G, E) that sum to 1 over each group's G tokens, and the fp32 logits.

        M indexes groups as :meth:`groups` lays them out.
        """
        logits_MGE = self.experts.router_logits(x_MGD)
        if self.discrete:
            winner_ME = logits_MGE.argmax(dim=1)
            weights_MGE = F.one_hot(winner_ME, self.group_size).transpose(1, 2)
            return weights_MGE.to(logits_MGE.dtype), logits_MGE
        temperature = self.log_temperature.float().exp()
        return torch.softmax(logits_MGE / temperature, dim=1), logits_MGE

    def forward(self, x_BTD: Tensor) -> tuple[Tensor, Aux]:
        B, T, D = x_BTD.shape
        x_MGD = self.groups(x_BTD)
        weights_MGE, logits_MGE = self.merge_weights(x_MGD)
        w_MGE = weights_MGE.to(x_BTD.dtype)

        # Mix: every expert gets one weighted sum of its group's G tokens.
        mixed_MED = torch.bmm(w_MGE.transpose(1, 2), x_MGD)
        y_EMD = self.experts(mixed_MED.transpose(0, 1))
        # Unmix with the same weights: token g gets Σ_e w[g, e] · y[e].
        out_MGD = torch.bmm(w_MGE, y_EMD.transpose(0, 1))
        # A (B, T, D) view of position-major memory: the residual add that follows (x + out)
        # writes in x's layout, so no copy is needed here.
        out_BTD = out_MGD.view(T, B, D).transpose(0, 1)
        return out_BTD, Aux(stats=self._stats(weights_MGE, logits_MGE))

    @torch.no_grad()
    def _stats(self, weights_MGE: Tensor, logits_MGE: Tensor) -> dict[str, Tensor]:
        """Merge-weight entropy normalised by log G (1 = uniform mix, 0 = one token), logits."""
        w = weights_MGE.detach().float()
        entropy_ME = -(w * w.clamp_min(1e-20).log()).sum(dim=1)
        norm = math.log(self.group_size) if self.group_size > 1 else 1.0
        logits = logits_MGE.detach()
        return {
            "merge_entropy": entropy_ME.mean() / norm,
            "router_logits_mean": logits.mean(),
            "router_logits_std": logits.std(),
            "temperature": self.log_temperature.detach().float().exp(),
        }
