"""Expert choice made causal (METHOD.md §4): experts pick tokens within a MoT-style group.

Shape legend: B batch, T position, D d_model, E experts, F expert hidden size, G group size,
n = B / G groups, c tokens each expert picks per group and position.

Standard expert choice lets an expert pick its top tokens across a whole sequence, so whether
position t is processed depends on later positions — a leak in a decoder. Here, as in MoT, a
group is G examples at one position, and each expert picks its top-c tokens within it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from motlab.layers.aux import Aux
from motlab.layers.experts import Experts, top_k_expert_size


@dataclass
class ExpertChoiceConfig:
    """Causal expert choice; c = group_size · top_k / n_experts tokens per expert and group."""

    variant: Literal["expert_choice"] = "expert_choice"
    """Registry name of this variant."""
    group_size: int = 32
    """G: examples grouped at one position. The per-device batch must be a multiple."""
    n_experts: int = 32
    """E: number of experts."""
    top_k: int = 1
    """Average experts per token k; each expert takes c = G·k / E tokens per group."""
    d_expert: int | None = None
    """F: expert hidden size; ``None`` = d_ff / top_k (FLOP-matched)."""
    output_norm: bool = True
    """LayerNorm(D) on the layer output, as in the paper's config."""

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


class ExpertChoice(nn.Module):
    """Causal expert-choice layer: x (B, T, D) → (B, T, D)."""

    def __init__(self, d_model: int, d_ff: int, cfg: ExpertChoiceConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.group_size = cfg.group_size
        self.c = cfg.tokens_per_expert()
        self.experts = Experts(d_model, cfg.n_experts, cfg.expert_size(d_ff))
        self.norm = nn.LayerNorm(d_model) if cfg.output_norm else nn.Identity()

    def forward(self, x_BTD: Tensor) -> tuple[Tensor, Aux]:
        B, T, D = x_BTD.shape
        G, E, c = self.group_size, self.experts.n_experts, self.c
        if B % G:
            raise ValueError(
                f"expert choice groups the batch in groups of group_size={G}, but got a batch "
                f"of {B}: use a batch size that is a multiple of {G} (data.batch_size)"
            )
        n = B // G
        x_nGTD = x_BTD.view(n, G, T, D)
        scores_nGTE = torch.softmax(self.experts.router_logits(x_nGTD), dim=-1)  # over experts

        # Each expert picks its top-c tokens of the group, separately at every position.
        gate_ncTE, pick_ncTE = scores_nGTE.topk(c, dim=1)
        # Row of each pick in x viewed as (n·G·T, D): (n·G + g)·T + t, laid out (E, n, c, T).
        n_idx = torch.arange(n, device=x_BTD.device).view(1, n, 1, 1)
        t_idx = torch.arange(T, device=x_BTD.device).view(1, 1, 1, T)
        rows_EncT = (n_idx * G + pick_ncTE.permute(3, 0, 1, 2)) * T + t_idx
        rows_M = rows_EncT.reshape(-1)
        x_MD = x_nGTD.reshape(n * G * T, D)
        y_EMD = self.experts(x_MD[rows_M].view(E, n * c * T, D))

        gate_M = gate_ncTE.permute(3, 0, 1, 2).reshape(-1).to(y_EMD.dtype)
        out_MD = torch.zeros(n * G * T, D, dtype=y_EMD.dtype, device=x_BTD.device)
        out_MD = out_MD.index_add(0, rows_M, y_EMD.reshape(-1, D) * gate_M[:, None])
        out_BTD = self.norm(out_MD.view(B, T, D).to(x_BTD.dtype))
        return out_BTD, Aux(stats=self._stats(gate_M, rows_M, B * T))

    @torch.no_grad()
    def _stats(self, gate_M: Tensor, rows_M: Tensor, n_tokens: int) -> dict[str, Tensor]:
        ones_M = torch.ones_like(rows_M, dtype=torch.float)
        experts_per_token = torch.zeros(n_tokens, device=rows_M.device).index_add(0, rows_M, ones_M)
        return {
            "gate_mean": gate_M.float().mean(),
            "gate_std": gate_M.float().std(),
            "unrouted_fraction": (experts_per_token == 0).float().mean(),
            "max_experts_per_token": experts_per_token.max(),
        }
