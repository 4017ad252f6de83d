"""Sampling continuations of a batch of prompts, including from MoT models that need a batch.

:func:`generate` is the tensor interface: prompts (B, T) in, prompts and continuations out.
It decodes through :func:`motlab.decoding.complete`, which also takes prompts of different
lengths, stop strings and a per-prompt token budget, and returns each continuation trimmed.

A MoT (or expert-choice) model is given its real prompts inside a batch filled up to a multiple
of the group size with filler rows (random training windows or random tokens), as in the
paper's evaluation; all rows are decoded in lockstep with a KV cache and only the real rows are
returned. Token-choice (e.g. after transition tuning) and dense models run on the prompts alone,
batch 1 included; token choice runs dropless (:mod:`motlab.inference`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from motlab.decoding import complete
from motlab.layers.registry import Capacity
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
    *,
    top_p: float | None = None,
    eos_id: int | None = None,
    use_cache: bool = True,
    compile: bool = False,
    capacity: Capacity = "dropless",
) -> Tensor:
    """Prompts (B, T) → prompts and continuations (B, T + max_new_tokens), on the model's device.

    Greedy when ``temperature == 0``; ``top_k`` / ``top_p`` filter the distribution; draws come
    from ``generator`` (seed it for reproducible samples). A row that samples ``eos_id`` ends
    there: the end-of-text token and then ``eos_id`` again fill the rest of its row. Past the
    model's ``seq_len`` the oldest half of the context is dropped (:mod:`motlab.decoding`).
    For models with a group size G > 1, filler rows pad the batch to a multiple of G
    (``filler_WT`` if given, else random tokens) and are dropped from the result.
    ``use_cache=False`` recomputes the whole context at every step (same function, slower).
    """
    device = next(model.parameters()).device
    prompts = prompt_BT.tolist()
    done = complete(
        model, prompts, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
        eos_id=eos_id, filler_WT=filler_WT, generator=generator, use_cache=use_cache,
        compile=compile, capacity=capacity,
    )  # fmt: skip
    fill = 0 if eos_id is None else eos_id
    rows = []
    for prompt, completion in zip(prompts, done, strict=True):
        new = completion.tokens + [fill] * (max_new_tokens - len(completion.tokens))
        rows.append(prompt + new)
    return torch.tensor(rows, dtype=torch.long, device=device)
