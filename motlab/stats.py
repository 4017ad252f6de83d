"""Parameter and FLOP accounting per variant, for comparing models at equal compute.

Counts are analytic (from the config) and cross-checked against the real module in the tests.
"Active" parameters are those a token's computation is multiplied by: for token choice the
router plus its k experts; for MoT and expert choice, whose experts process mixtures or picks of
a group, the expert parameters in proportion to the compute one token costs (E·c / G experts'
worth, c = 1 mixed token for MoT). FLOPs are for training (forward + backward = 3 × forward,
2 FLOPs per multiply-add) and include attention scores (PaLM's 12·L·D·T convention, no causal
discount) and MoT's mixing matmuls. The embedding and the head count at the padded vocabulary
size (``GPTConfig.padded_vocab_size``): what is built and computed.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from motlab.config import GPTConfig
from motlab.layers import DenseConfig, ExpertChoiceConfig, FFNConfig, MoTConfig, TokenChoiceConfig


@dataclass(frozen=True)
class ModelStats:
    total_params: int
    active_params: int
    flops_per_token: float
    """Training FLOPs per token (forward + backward)."""


def _ffn_counts(cfg: FFNConfig, d_model: int, d_ff: int) -> tuple[int, float, float]:
    """(total params, active params, forward multiply-adds per token) of one feed-forward."""
    D = d_model
    if isinstance(cfg, DenseConfig):
        F = cfg.d_ff or d_ff
        return 2 * D * F, 2 * D * F, 2 * D * F
    if isinstance(cfg, MoTConfig):
        E, G, F = cfg.n_experts, cfg.group_size, cfg.expert_size(d_ff)
        expert_share = E * 2 * D * F / G  # every expert runs one mixed token per G tokens
        mixing = 3 * E * D  # router logits, merge and unmix
        return D * E + 2 * E * D * F, D * E + expert_share, expert_share + mixing
    if isinstance(cfg, TokenChoiceConfig):
        E, K, F = cfg.n_experts, cfg.top_k, cfg.expert_size(d_ff)
        active = D * E + K * 2 * D * F
        return D * E + 2 * E * D * F, active, active
    if isinstance(cfg, ExpertChoiceConfig):
        E, G, F = cfg.n_experts, cfg.group_size, cfg.expert_size(d_ff)
        c = cfg.tokens_per_expert()
        active = D * E + E * c * 2 * D * F / G
        norm = 2 * D if cfg.output_norm else 0
        return D * E + 2 * E * D * F + norm, active + norm, active
    raise TypeError(f"no FLOP accounting for {type(cfg).__name__}")


def model_stats(cfg: GPTConfig) -> ModelStats:
    """Total and active parameters and training FLOPs per token of the model ``cfg`` builds."""
    D, V, T, L = cfg.d_model, cfg.padded_vocab_size, cfg.seq_len, cfg.n_layers
    assert D and L and cfg.d_ff
    shared = (V * D + T * D) + D * V  # embeddings (lookups, no FLOPs) + untied head
    shared += L * (4 * D * D + 2 * 2 * D) + (2 * D if cfg.final_norm else 0)  # attention, norms
    total, active = shared, shared
    macs = D * V + L * (4 * D * D + 2 * T * D)  # head, projections, scores and values
    for i in range(L):
        ffn_total, ffn_active, ffn_macs = _ffn_counts(cfg.block_ffn(i), D, cfg.d_ff)
        total += ffn_total
        active += ffn_active
        macs += ffn_macs
    return ModelStats(int(total), int(round(active)), 6.0 * macs)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of a built module (to check :func:`model_stats` against)."""
    return sum(p.numel() for p in module.parameters())
