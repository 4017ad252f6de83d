"""Mixture of Tokens (METHOD.md §2): experts see weighted mixtures of tokens from a group.

Shape legend: B batch, T position, D d_model, E experts, F expert hidden size, G group size,
n = B / G groups.

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

    def merge_weights(self, x_nGTD: Tensor) -> tuple[Tensor, Tensor]:
        """Weights (n, G, T, E) that sum to 1 over G, and the fp32 router logits."""
        logits_nGTE = self.experts.router_logits(x_nGTD)
        if self.discrete:
            winner_nTE = logits_nGTE.argmax(dim=1)
            weights_nGTE = F.one_hot(winner_nTE, self.group_size).permute(0, 3, 1, 2)
            return weights_nGTE.to(logits_nGTE.dtype), logits_nGTE
        temperature = self.log_temperature.float().exp()
        return torch.softmax(logits_nGTE / temperature, dim=1), logits_nGTE

    def forward(self, x_BTD: Tensor) -> tuple[Tensor, Aux]:
        B, T, D = x_BTD.shape
        G, E = self.group_size, self.experts.n_experts
        if B % G:
            raise ValueError(
                f"MoT groups the batch in groups of group_size={G}, but got a batch of {B}: "
                f"use a batch size that is a multiple of {G} (data.batch_size), or pad the batch "
                "with filler sequences (motlab.generate does this)"
            )
        x_nGTD = x_BTD.view(B // G, G, T, D)
        weights_nGTE, logits_nGTE = self.merge_weights(x_nGTD)
        w_nGTE = weights_nGTE.to(x_BTD.dtype)

        # Mix: every expert gets one weighted sum of the G tokens of its group, per position.
        mixed_nTED = torch.einsum("ngte,ngtd->nted", w_nGTE, x_nGTD)
        n = B // G
        mixed_EMD = mixed_nTED.permute(2, 0, 1, 3).reshape(E, n * T, D)
        y_EMD = self.experts(mixed_EMD)
        y_nTED = y_EMD.view(E, n, T, D).permute(1, 2, 0, 3)

        # Unmix with the same weights: token g gets Σ_e w[g, e] · y[e].
        out_nGTD = torch.einsum("ngte,nted->ngtd", w_nGTE, y_nTED)
        return out_nGTD.reshape(B, T, D), Aux(stats=self._stats(weights_nGTE, logits_nGTE))

    @torch.no_grad()
    def _stats(self, weights_nGTE: Tensor, logits_nGTE: Tensor) -> dict[str, Tensor]:
        """Merge-weight entropy normalised by log G (1 = uniform mix, 0 = one token), logits."""
        w = weights_nGTE.detach().float()
        entropy_nTE = -(w * w.clamp_min(1e-20).log()).sum(dim=1)
        norm = math.log(self.group_size) if self.group_size > 1 else 1.0
        logits = logits_nGTE.detach()
        return {
            "merge_entropy": entropy_nTE.mean() / norm,
            "router_logits_mean": logits.mean(),
            "router_logits_std": logits.std(),
            "temperature": self.log_temperature.detach().float().exp(),
        }
