"""Expert choice made causal (METHOD.md §4): experts pick tokens within a MoT-style group.

Shapes (legend in :mod:`motlab.shapes`): B, T, D, E, F, G, Q, C, N, M.

Standard expert choice lets an expert pick its top tokens across a whole sequence, so whether
position t is processed depends on later positions — a leak in a decoder. Here, as in MoT, a
group is G examples at one position, and each expert picks its top-C tokens within it.

**The output LayerNorm** (``output_norm``, on by default as in the paper's config) changes what
the layer computes in two ways worth knowing when reading results:

* a token that no expert picks gets ``LayerNorm(0) = β``, the norm's learned bias — the same
  vector for every such token — not "nothing";
* LayerNorm is invariant to the scale of its input, so for a token picked by exactly one expert
  ``LN(gate · y) = LN(y)``: the gate value cancels, and the router receives almost no gradient
  from such tokens (only through the norm's ε). The router learns from tokens picked by two or
  more experts, whose gates set the mix.

``output_norm: false`` drops the norm: unpicked tokens then add exactly zero and the gate
scales the output as in MoT and token choice.

Left padding (prompts of different lengths decoded together, :meth:`ExpertChoice.forward_masked`)
is masked out of the group: each expert picks its C tokens among the group's real rows at that
position first, and a pick that has to fall on padding (fewer than C real rows) carries gate 0.
A real token's output therefore depends on the real rows of its group only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from motlab.layers.aux import Aux
from motlab.layers.experts import Experts, top_k_expert_size
from motlab.layers.registry import (
    FFNConfig,
    FFNLayer,
    LayerCost,
    check_group_multiple,
    register_variant,
)


@dataclass
class ExpertChoiceConfig(FFNConfig):
    """Causal expert choice; C = group_size · top_k / n_experts tokens per expert and group."""

    variant: Literal["expert_choice"] = "expert_choice"
    """Registry name of this variant."""
    group_size: int = 32
    """G: examples grouped at one position. The per-device batch must be a multiple."""
    n_experts: int = 32
    """E: number of experts."""
    top_k: int = 1
    """Average experts per token k; each expert takes C = G·k / E tokens per group."""
    d_expert: int | None = None
    """F: expert hidden size; ``None`` = d_ff / top_k (FLOP-matched)."""
    output_norm: bool = True
    """LayerNorm(D) on the layer output, as in the paper's config. An unpicked token then gets
    the norm's bias β, and a token picked by one expert loses its gate's gradient (the norm
    undoes the scaling); false = no norm."""

    def tokens_per_expert(self) -> int:
        c, rem = divmod(self.group_size * self.top_k, self.n_experts)
        if rem or c < 1:
            raise ValueError(
                f"expert choice needs n_experts ({self.n_experts}) to divide group_size * top_k "
                f"({self.group_size} * {self.top_k}) so every expert picks a whole number of "
                "tokens per group"
            )
        return c

    def validate(self, d_ff: int) -> None:
        """Raise early, at config time, if the sizes don't fit together."""
        self.tokens_per_expert()
        self.expert_size(d_ff)

    def expert_size(self, d_ff: int) -> int:
        return top_k_expert_size(d_ff, self.top_k, self.d_expert, "expert choice")


class ExpertChoice(FFNLayer):
    """Causal expert-choice layer: x (B, T, D) → (B, T, D)."""

    cfg: ExpertChoiceConfig

    def __init__(self, d_model: int, d_ff: int, cfg: ExpertChoiceConfig) -> None:
        super().__init__(d_model, d_ff, cfg)
        self.group_size = cfg.group_size
        self.c = cfg.tokens_per_expert()
        self.experts = Experts(d_model, cfg.n_experts, cfg.expert_size(d_ff))
        self.norm = nn.LayerNorm(d_model) if cfg.output_norm else nn.Identity()

    def forward(self, x_BTD: Tensor) -> tuple[Tensor, Aux]:
        return self._pick(x_BTD, None)

    def forward_masked(self, x_BTD: Tensor, real_BT: Tensor) -> tuple[Tensor, Aux]:
        """Padding (``real_BT`` False) takes no part in its group (module docstring)."""
        return self._pick(x_BTD, real_BT)

    def _pick(self, x_BTD: Tensor, real_BT: Tensor | None) -> tuple[Tensor, Aux]:
        B, T, D = x_BTD.shape
        G, E, C = self.group_size, self.experts.n_experts, self.c
        check_group_multiple(B, G, "expert choice")
        Q = B // G
        x_QGTD = x_BTD.view(Q, G, T, D)
        scores_QGTE = torch.softmax(self.experts.router_logits(x_QGTD), dim=-1)  # over experts
        if real_BT is not None:  # padding ranks below every real score (>= 0): picked last
            scores_QGTE = scores_QGTE.masked_fill(~real_BT.view(Q, G, T, 1), -1.0)

        # Each expert picks its top-C tokens of the group, separately at every position.
        gate_QCTE, pick_QCTE = scores_QGTE.topk(C, dim=1)
        if real_BT is not None:
            gate_QCTE = gate_QCTE.clamp_min(0.0)  # a pick of padding adds nothing
        # Row of each pick in x viewed as (N, D): (q·G + g)·T + t; each expert's M = Q·C·T
        # picks laid out (Q, C, T).
        q_idx = torch.arange(Q, device=x_BTD.device).view(1, Q, 1, 1)
        t_idx = torch.arange(T, device=x_BTD.device).view(1, 1, 1, T)
        rows_EM = ((q_idx * G + pick_QCTE.permute(3, 0, 1, 2)) * T + t_idx).reshape(E, -1)
        x_ND = x_BTD.reshape(B * T, D)
        y_EMD = self.experts(x_ND[rows_EM])

        gate_EM = gate_QCTE.permute(3, 0, 1, 2).reshape(E, -1).to(y_EMD.dtype)
        out_ND = torch.zeros(B * T, D, dtype=y_EMD.dtype, device=x_BTD.device)
        out_ND = out_ND.index_add(0, rows_EM.reshape(-1), (y_EMD * gate_EM[..., None]).view(-1, D))
        out_BTD = self.norm(out_ND.view(B, T, D).to(x_BTD.dtype))
        return out_BTD, Aux(stats=self._stats(gate_EM, rows_EM, B * T))

    @torch.no_grad()
    def _stats(self, gate_EM: Tensor, rows_EM: Tensor, n_tokens: int) -> dict[str, Tensor]:
        rows = rows_EM.reshape(-1)
        ones = torch.ones_like(rows, dtype=torch.float32)
        experts_per_token_N = torch.zeros(n_tokens, dtype=torch.float32, device=rows.device)
        experts_per_token_N = experts_per_token_N.index_add(0, rows, ones)
        return {
            "gate_mean": gate_EM.float().mean(),
            "gate_std": gate_EM.float().std(),
            "unrouted_fraction": (experts_per_token_N == 0).float().mean(),
            "max_experts_per_token": experts_per_token_N.max(),
        }

    def cost(self) -> LayerCost:
        """The router, plus every expert's C picks per G tokens of a group (and the norm's
        weight and bias, which every token uses)."""
        D, E, G, F = self.d_model, self.experts.n_experts, self.group_size, self.experts.d_expert
        macs = D * E + E * self.c * 2 * D * F / G
        norm = 2 * D if self.cfg.output_norm else 0
        return LayerCost(active_params=macs + norm, forward_macs=macs)


register_variant("expert_choice", ExpertChoiceConfig, ExpertChoice)
