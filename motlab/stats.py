"""Parameter and FLOP accounting, for comparing models at equal compute.

The model is built on the meta device (no memory, no arithmetic) and counted: total parameters
exactly, and for every feed-forward layer its own :meth:`~motlab.layers.FFNLayer.cost` —
active parameters and multiply-adds per token, as the variant defines them in its file. Nothing
here knows a variant. "Active" parameters are those a token's computation is multiplied by:
for token choice the router plus its k experts; for MoT and expert choice, whose experts process
mixtures or picks of a group, the expert parameters in proportion to the compute one token costs.
FLOPs are for training (forward + backward = 3 × forward, 2 FLOPs per multiply-add) and include
attention scores (PaLM's 12·L·D·T convention, no causal discount) and MoT's mixing matmuls. The
embedding and the head count at the padded vocabulary size (``GPTConfig.padded_vocab_size``):
what is built and computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from motlab.config import GPTConfig
from motlab.model import GPT


@dataclass(frozen=True)
class ModelStats:
    total_params: int
    active_params: int
    flops_per_token: float
    """Training FLOPs per token (forward + backward)."""


def model_stats(cfg: GPTConfig) -> ModelStats:
    """Total and active parameters and training FLOPs per token of the model ``cfg`` builds."""
    with torch.device("meta"):
        model = GPT(cfg)
    D, P, T, L = cfg.d_model, cfg.padded_vocab_size, cfg.seq_len, cfg.n_layers
    assert D and L
    total = count_parameters(model)
    active = float(total)
    macs = D * P + L * (4 * D * D + 2 * T * D)  # head, attention projections, scores and values
    for block in model.blocks:
        cost = block.ffn.cost()
        active += cost.active_params - count_parameters(block.ffn)
        macs += cost.forward_macs
    return ModelStats(total, int(round(active)), 6.0 * macs)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of a built module."""
    return sum(p.numel() for p in module.parameters())
