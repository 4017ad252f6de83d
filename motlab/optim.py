"""The optimiser recipe (METHOD.md §6): AdamW, linear warm-up, cosine decay to a floor.

Weight decay (a choice, documented here and in the README): decayed are the weight *matrices*
that multiply activations — attention projections, dense and expert ``w1``/``w2``, the routers
and the output head. Not decayed: the token and position embeddings (lookups: decay would pull
rare tokens' rows towards zero just for being rare), LayerNorm weights and biases, any bias, and
scalars such as MoT's learnable log-temperature. Rule: a parameter is decayed iff it has two or
more dimensions and does not belong to an ``nn.Embedding``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR


@dataclass
class OptimConfig:
    """AdamW and the learning-rate schedule (defaults: the paper's medium recipe)."""

    lr: float = 7e-4
    """Peak learning rate (paper: 7e-4 medium dense/MoT, 2e-4 base MoT, 4e-4 base dense)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW β1, β2."""
    eps: float = 1e-8
    """AdamW ε."""
    weight_decay: float = 0.1
    """Decoupled weight decay on weight matrices (not on embeddings, norms, biases, scalars)."""
    warmup_steps: int = 2500
    """Linear warm-up length in optimiser steps."""
    total_steps: int | None = None
    """Length of warm-up + cosine in optimiser steps; ``None`` = ``trainer.max_steps``."""
    min_lr_ratio: float = 0.1
    """The cosine ends at ``min_lr_ratio · lr`` (paper: 10 % of peak)."""
    fused: bool | None = None
    """Fused AdamW kernel; ``None`` = on when the parameters are on CUDA."""

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # YAML gives a list
        problems = []
        if not self.lr > 0:
            problems.append(f"model.optim.lr must be > 0, got {self.lr}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            problems.append(f"model.optim.betas must be two numbers in [0, 1), got {self.betas}")
        if not self.eps > 0:
            problems.append(f"model.optim.eps must be > 0, got {self.eps}")
        if self.weight_decay < 0:
            problems.append(f"model.optim.weight_decay must be >= 0, got {self.weight_decay}")
        if self.warmup_steps < 0:
            problems.append(f"model.optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.total_steps is not None and self.total_steps < 1:
            problems.append(
                f"model.optim.total_steps must be >= 1 (or null: trainer.max_steps), got "
                f"{self.total_steps}"
            )
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            problems.append(f"model.optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if problems:
            raise ValueError("; ".join(problems))


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups, ``decay`` and ``no_decay``, by the rule in the module docstring."""
    embedding_params = {
        id(p) for m in module.modules() if isinstance(m, nn.Embedding) for p in m.parameters()
    }
    decay, no_decay = [], []
    for p in module.parameters():
        if not p.requires_grad:
            continue
        if p.ndim >= 2 and id(p) not in embedding_params:
            decay.append(p)
        else:
            no_decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]


class WarmupCosine:
    """LR multiplier at optimiser step ``s`` (0-based: the factor used by the (s+1)-th update).

    Warm-up: ``(s + 1) / warmup_steps`` (so the first update is not wasted at lr 0), reaching 1
    at ``s = warmup_steps - 1``. Then a half cosine from 1 to ``min_ratio`` over the remaining
    ``total_steps - warmup_steps`` steps, and ``min_ratio`` after that (a run shorter than the
    warm-up never leaves it). A callable class rather
    than a lambda so the scheduler (and the checkpoint) can be pickled.
    """

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float) -> None:
        self.warmup_steps, self.total_steps, self.min_ratio = warmup_steps, total_steps, min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_ratio + (1.0 - self.min_ratio) * cosine


def build_optimizer(
    module: nn.Module, cfg: OptimConfig, total_steps: int
) -> tuple[torch.optim.AdamW, LambdaLR]:
    """AdamW over :func:`param_groups` and its per-step warm-up + cosine scheduler."""
    groups = param_groups(module, cfg.weight_decay)
    fused = cfg.fused
    if fused is None:
        fused = all(p.is_cuda for g in groups for p in g["params"])
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=fused)
    schedule = WarmupCosine(cfg.warmup_steps, total_steps, cfg.min_lr_ratio)
    return optimizer, LambdaLR(optimizer, schedule)
