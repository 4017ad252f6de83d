"""Token-choice (Switch-style) mixture of experts (METHOD.md §3).

Shapes (legend in :mod:`motlab.shapes`): B, T, D, E, F, K, N, C, S.

Each token picks its top-k experts; each expert takes at most C assignments; the rest are dropped
(the token keeps only its residual). Capacity is filled **position-major**: all assignments at
position 0 (every sequence), then position 1, and so on. In the usual batch-major order a late
position of one sequence can take the slot of an early position of another — a causality leak
(its output would change when a future token changes). Position-major order makes an
assignment's fate depend only on positions ≤ its own.

Slots come from a stable sort by expert (no one-hot cumulative sum over all tokens); dispatch
and combine are gathers around one batched matmul over the padded (E, C, D) buffer: no loop over
experts, no scatter-add in the forward pass, and x itself is never transposed.

**Capacity at inference.** Capacity is shared by all tokens of a forward pass, so with it a
token's output depends on the other rows of the batch, and short inputs lose many tokens (one
32-token sequence with E = 32: C = 1, 37.5 % dropped). Training and in-training validation use
the configured ``capacity_factor`` (``val/loss`` tracks the training objective; Lightning's eval
mode changes nothing here). Inference — :func:`motlab.generate`, :func:`motlab.load_model`,
the lm-eval backend — sets the layer **dropless** through :meth:`TokenChoice.set_capacity`
(:func:`motlab.inference.capacity`): every token gets its k experts, so a row's logits are the
same alone or in any batch, as serving systems run MoE. ``"training"`` or a factor there brings
capacity back. Dropless sorts the assignments by expert and runs each expert on its own
(:meth:`~motlab.layers.experts.Experts.each`: exact compute, one host sync); compiled, each
assignment gathers its expert's weights instead (static shapes, for a decoding step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from motlab.layers.aux import Aux
from motlab.layers.experts import Experts, top_k_expert_size
from motlab.layers.registry import (
    Capacity,
    FFNConfig,
    FFNLayer,
    LayerCost,
    check_capacity,
    register_variant,
)


@dataclass
class TokenChoiceConfig(FFNConfig):
    """Token choice with capacity. FLOP-matched top-1 uses expert size F = d_ff."""

    variant: Literal["token_choice"] = "token_choice"
    """Registry name of this variant."""
    n_experts: int = 32
    """E: number of experts."""
    top_k: int = 1
    """K: experts per token (1 in the paper)."""
    capacity_factor: float | None = 1.25
    """C = int(capacity_factor · N · K / E) for the N tokens of a forward pass, in training and
    in-training validation; ``None`` = no capacity limit (nothing dropped). Inference runs
    dropless unless asked for ``capacity="training"`` or a factor (README, "Generating text")."""
    d_expert: int | None = None
    """F: expert hidden size; ``None`` = d_ff / top_k (FLOP-matched)."""
    load_balancing_weight: float = 0.01
    """α of the Switch load-balancing loss (counts all K choices of every token)."""
    z_loss_weight: float = 0.0
    """Weight of the router z-loss mean(logsumexp(logits)²); 0 = off (the paper's setting)."""

    def validate(self, d_ff: int) -> None:
        """Raise early, at config time, if the sizes don't fit together."""
        if not 1 <= self.top_k <= self.n_experts:
            raise ValueError(
                f"token choice needs 1 <= model.net.ffn.top_k <= n_experts ({self.n_experts}), "
                f"got {self.top_k}"
            )
        self.expert_size(d_ff)

    def expert_size(self, d_ff: int) -> int:
        return top_k_expert_size(d_ff, self.top_k, self.d_expert, "token choice")


class TokenChoice(FFNLayer):
    """Top-k token-choice routing with capacity: x (B, T, D) → (B, T, D)."""

    cfg: TokenChoiceConfig

    def __init__(self, d_model: int, d_ff: int, cfg: TokenChoiceConfig) -> None:
        super().__init__(d_model, d_ff, cfg)
        cfg.validate(d_ff)
        self.experts = Experts(d_model, cfg.n_experts, cfg.expert_size(d_ff))
        self.capacity_setting: Capacity = "training"
        """The capacity in use: the configured one (``"training"``) until inference sets it."""

    def set_capacity(self, capacity: Capacity) -> Capacity:
        """``"dropless"``, ``"training"`` (``cfg.capacity_factor``) or a capacity factor;
        returns the previous setting (module docstring)."""
        previous, self.capacity_setting = self.capacity_setting, check_capacity(capacity)
        return previous

    def capacity(self, n_tokens: int) -> int:
        E, K = self.experts.n_experts, self.cfg.top_k
        factor = self.capacity_setting
        if factor == "training":
            factor = self.cfg.capacity_factor
        if factor is None or factor == "dropless":
            return n_tokens * K
        return max(1, int(factor * n_tokens * K / E))

    def forward(self, x_BTD: Tensor) -> tuple[Tensor, Aux]:
        if self.capacity_setting == "dropless":
            return self._dropless(x_BTD)
        return self._with_capacity(x_BTD, None)

    def forward_masked(self, x_BTD: Tensor, real_BT: Tensor) -> tuple[Tensor, Aux]:
        """Dropless, every token is computed on its own; with capacity, padding (``real_BT``
        False) takes none: it is ranked apart, and C counts the real tokens only."""
        if self.capacity_setting == "dropless":
            return self._dropless(x_BTD)
        return self._with_capacity(x_BTD, real_BT)

    def _with_capacity(self, x_BTD: Tensor, real_BT: Tensor | None) -> tuple[Tensor, Aux]:
        B, T, D = x_BTD.shape
        E, K = self.experts.n_experts, self.cfg.top_k
        N = B * T
        C = self.capacity(N if real_BT is None else int(real_BT.sum()))
        x_ND = x_BTD.reshape(N, D)  # token b·T + t

        logits_NE = self.experts.router_logits(x_ND)  # fp32
        probs_NE = torch.softmax(logits_NE, dim=-1)
        gate_NK, expert_NK = probs_NE.topk(K, dim=-1)

        # Rank assignments in fill order (t, b, k); only these small index tensors are
        # transposed, never x.
        expert_S = expert_NK.view(B, T, K).transpose(0, 1).reshape(-1)
        if real_BT is None:
            slot_S, kept_S = _slots_in_fill_order(expert_S, E, C)
        else:
            # Padding is ranked in a bucket of its own (expert E) and never kept.
            real_S = real_BT.transpose(0, 1)[..., None].expand(T, B, K).reshape(-1)
            slot_S, kept_S = _slots_in_fill_order(torch.where(real_S, expert_S, E), E + 1, C)
            kept_S, slot_S = kept_S & real_S, torch.where(real_S, slot_S, 0)
        slot_NK = slot_S.view(T, B, K).transpose(0, 1).reshape(N, K)
        kept_NK = kept_S.view(T, B, K).transpose(0, 1).reshape(N, K)

        # Dispatch by gathering each of the E·C slots' token; empty slots read some token and
        # their outputs are never read back.
        x_ECD = x_ND[_token_of_slot(slot_NK, kept_NK, E * C)].view(E, C, D)
        y_ECD = self.experts(x_ECD)

        # Combine by gathering each assignment's slot; a dropped one reads its full expert's
        # last slot and is masked out (the token keeps only its residual).
        y_NKD = y_ECD.view(E * C, D)[slot_NK]
        gated_NKD = torch.where(kept_NK[..., None], y_NKD * gate_NK[..., None].to(y_NKD.dtype), 0)
        out_BTD = gated_NKD.sum(dim=1).view(B, T, D).to(x_BTD.dtype)
        real_N = None if real_BT is None else real_BT.reshape(N)
        return out_BTD, self._aux(logits_NE, probs_NE, expert_NK, kept_NK, real_N)

    def _dropless(self, x_BTD: Tensor) -> tuple[Tensor, Aux]:
        """Every token through its K experts: no capacity, so no token depends on another.

        Inference only: its Aux reports the load per expert (and nothing dropped), not the
        training losses (load balancing, z-loss)."""
        B, T, D = x_BTD.shape
        K, N = self.cfg.top_k, B * T
        x_ND = x_BTD.reshape(N, D)
        probs_NE = torch.softmax(self.experts.router_logits(x_ND), dim=-1)  # fp32
        gate_NK, expert_NK = probs_NE.topk(K, dim=-1)
        expert_S = expert_NK.reshape(-1)  # assignment n·K + k
        x_SD = x_ND[:, None].expand(N, K, D).reshape(N * K, D)
        y_NKD = self.experts.each(x_SD, expert_S).view(N, K, D)
        out_BTD = (y_NKD * gate_NK[..., None].to(y_NKD.dtype)).sum(dim=1).view(B, T, D)
        # Inference: the load (what routing analysis reads), not the training losses.
        stats = {
            "dropped_fraction": torch.zeros((), device=x_BTD.device),
            "tokens_per_expert": _count(expert_S, self.experts.n_experts),
        }
        return out_BTD.to(x_BTD.dtype), Aux(stats=stats)

    def _aux(
        self,
        logits_NE: Tensor,
        probs_NE: Tensor,
        expert_NK: Tensor,
        kept_NK: Tensor,
        real_N: Tensor | None = None,
    ) -> Aux:
        E = self.experts.n_experts
        # Switch load balancing: E · Σ_e mean_t p[t, e] · frac_e, frac_e counted before drops
        # over all K choices of every token (normalised by K, as GShard does; K = 1 is Switch).
        frac_E = _count(expert_NK.reshape(-1), E) / expert_NK.numel()
        lb_loss = E * (probs_NE.mean(dim=0) * frac_E).sum()
        z_loss = torch.logsumexp(logits_NE, dim=-1).pow(2).mean()
        losses = {"load_balancing_loss": self.cfg.load_balancing_weight * lb_loss}
        if self.cfg.z_loss_weight > 0:
            losses["z_loss"] = self.cfg.z_loss_weight * z_loss
        kept_E = torch.zeros(E, dtype=torch.float32, device=kept_NK.device).index_add(
            0, expert_NK.reshape(-1), kept_NK.reshape(-1).float()
        )
        if real_N is None:
            dropped = 1.0 - kept_NK.float().mean()
        else:  # of the real tokens' assignments
            dropped = 1.0 - kept_NK.float().sum() / (real_N.float().sum() * kept_NK.shape[1])
        stats = {
            "load_balancing": lb_loss.detach(),
            "z_loss": z_loss.detach(),
            "dropped_fraction": dropped,
            "tokens_per_expert": kept_E,
        }
        return Aux(losses=losses, stats=stats)

    def cost(self) -> LayerCost:
        """The router plus the K experts a token is sent to (the paper's convention: padded
        capacity slots are not a token's compute)."""
        D, E, K, F = self.d_model, self.experts.n_experts, self.cfg.top_k, self.experts.d_expert
        active = D * E + K * 2 * D * F
        return LayerCost(active_params=active, forward_macs=active)

    @torch.no_grad()
    def routing_report(self, x_BTD: Tensor, aux: Aux) -> dict[str, Tensor]:
        """``requested_per_expert`` (E,): the router's top-k choices before capacity, and
        ``load_fraction`` (E,), each expert's share of them; beside ``tokens_per_expert`` and
        ``dropped_fraction`` after capacity (the layer's own statistics)."""
        E, K = self.experts.n_experts, self.cfg.top_k
        logits_NE = self.experts.router_logits(x_BTD.reshape(-1, x_BTD.shape[-1]))
        choice_NK = logits_NE.topk(K, dim=-1).indices  # softmax keeps the order
        requested_E = torch.bincount(choice_NK.reshape(-1), minlength=E)
        return {
            "requested_per_expert": requested_E,
            "load_fraction": requested_E / requested_E.sum().clamp_min(1),
            "tokens_per_expert": aux.stats["tokens_per_expert"],
            "dropped_fraction": aux.stats["dropped_fraction"],
        }


def _slots_in_fill_order(expert_S: Tensor, n_experts: int, capacity: int) -> tuple[Tensor, Tensor]:
    """Slot of each assignment in the (E·C) expert buffer, and whether it was kept.

    The i-th assignment routed to expert e (in the given order) gets rank i within e; ranks
    below ``capacity`` are kept in slot ``e · C + rank``. A dropped assignment points at its
    expert's last slot (full, as the expert overflowed), which keeps every index in range and
    spreads the dropped ones over the experts. A stable sort by expert gives the ranks without
    a one-hot (S, E) cumulative sum.
    """
    S = expert_S.shape[0]
    sorted_expert_S, order_S = torch.sort(expert_S, stable=True)
    count_E = _count(expert_S, n_experts).long()
    start_E = torch.cumsum(count_E, dim=0) - count_E
    rank_sorted_S = torch.arange(S, device=expert_S.device) - start_E[sorted_expert_S]
    rank_S = torch.empty_like(rank_sorted_S).scatter_(0, order_S, rank_sorted_S)
    kept_S = rank_S < capacity
    slot_S = expert_S * capacity + rank_S.clamp(max=capacity - 1)
    return slot_S, kept_S


def _token_of_slot(slot_NK: Tensor, kept_NK: Tensor, n_slots: int) -> Tensor:
    """Which token (row of x) fills each of the ``n_slots`` slots: (N, K) → (n_slots,).

    Kept assignments own unique slots. Dropped ones are scattered to scratch entries past the
    end so that every scatter index is unique (deterministic). Empty slots keep a spread of
    token indices whose outputs are never read (their gradient is zero).
    """
    N, K = slot_NK.shape
    S, device = N * K, slot_NK.device
    target_S = torch.where(
        kept_NK.reshape(-1), slot_NK.reshape(-1), n_slots + torch.arange(S, device=device)
    )
    token_S = torch.arange(N, device=device).repeat_interleave(K)
    filler = torch.arange(n_slots + S, device=device) % N
    return filler.scatter(0, target_S, token_S)[:n_slots]


def _count(index_S: Tensor, n: int) -> Tensor:
    """How often each of 0..n-1 occurs in ``index_S`` (a fixed-size bincount, compile-friendly)."""
    return torch.zeros(n, dtype=torch.float32, device=index_S.device).index_add(
        0, index_S, torch.ones_like(index_S, dtype=torch.float32)
    )


register_variant("token_choice", TokenChoiceConfig, TokenChoice)
