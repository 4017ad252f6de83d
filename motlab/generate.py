"""Sampling continuations, including from MoT models that need a batch to run.

A MoT model is given its real prompts inside a batch filled up to a multiple of the group size
with filler rows (random training windows or random tokens), as in the paper's evaluation; all
rows are decoded in lockstep and only the real rows are returned. Token-choice (e.g. after
transition tuning) and dense models run on the prompts alone, batch 1 included.
"""

from __future__ import annotations

import torch
from torch import Tensor

from motlab.filler import filler_rows
from motlab.model import GPT


@torch.no_grad()
def generate(
    model: GPT,
    prompt_BT: Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    filler_WT: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Prompts (B, T) → prompts and continuations (B, T + max_new_tokens).

    Greedy when ``temperature == 0``. The context is cut on the left to the model's ``seq_len``.
    For models with a group size G > 1, filler rows pad the batch to a multiple of G
    (``filler_WT`` if given, else random tokens) and are dropped from the result.
    """
    model.eval()
    G = model.cfg.group_size
    device = next(model.parameters()).device
    tokens_BT = prompt_BT.to(device)
    R = tokens_BT.shape[0]
    filler = None
    if R % G:
        # One filler block, long enough for the whole decode, fixed for every step so the
        # filler rows stay the same sequences as the real rows grow.
        total = tokens_BT.shape[1] + max_new_tokens
        n_fill = G - R % G
        filler = filler_rows(n_fill, total, filler_WT, generator, model.cfg.vocab_size)
        filler = filler.to(device)
    for _ in range(max_new_tokens):
        context_BT = tokens_BT[:, -model.cfg.seq_len :]
        if filler is not None:
            T = context_BT.shape[1]
            start = tokens_BT.shape[1] - T
            context_BT = torch.cat([context_BT, filler[:, start : start + T]])
        logits_V = model(context_BT)[:R, -1].float()
        next_B1 = _sample(logits_V, temperature, top_k, generator)
        tokens_BT = torch.cat([tokens_BT, next_B1], dim=1)
    return tokens_BT


def _sample(
    logits_BV: Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None
) -> Tensor:
    if temperature == 0:
        return logits_BV.argmax(dim=-1, keepdim=True)
    logits_BV = logits_BV / temperature
    if top_k is not None:
        kth = logits_BV.topk(min(top_k, logits_BV.shape[-1]), dim=-1).values[:, -1:]
        logits_BV = logits_BV.masked_fill(logits_BV < kth, float("-inf"))
    probs_BV = torch.softmax(logits_BV, dim=-1)
    return torch.multinomial(probs_BV.cpu(), 1, generator=generator).to(logits_BV.device)
