"""Decoding a batch of prompts in lockstep: prefill, cached one-token steps, the context cap.

Shapes (legend in :mod:`motlab.shapes`): B, T, V, W.

**Rows.** The R prompts become the first R rows of a batch, left-padded to the longest; a model
with group size G > 1 (MoT, expert choice) gets filler rows after them up to a multiple of G
(:func:`motlab.filler.filler_rows`: given windows such as C4 text, or random tokens). Every row
decodes at every step: filler rows are fed their own next filler token, and a real row that has
finished (end-of-text, a stop string, its token budget) keeps its place and keeps decoding
until all real rows are done, so the groups the other rows are mixed in never change; its
extra tokens are cut from what :func:`complete` returns. Each row has its own slots in the KV
cache (:class:`~motlab.kv_cache.KVCache`): MoT and expert choice mix only one position across
the rows of a group, so they carry no state over time and need no cache of their own.

**Padding.** A row's left padding takes no position (its first real token is at position 0),
no real token attends to it, and it takes no part in the groups of MoT and expert choice
(masked out of the merge softmax, never picked with a nonzero gate;
:meth:`~motlab.layers.FFNLayer.forward_masked`). So the logits of a row of a dense or
token-choice model (dropless) do not depend on how much padding it gets from the other rows,
and those of any model do not change when every row gets more padding.

**Context cap.** Learned positions end at ``seq_len``. A prompt longer than that is cut on the
left. When the context of the rows would grow past ``seq_len`` slots, the oldest tokens are
dropped: the newest ``seq_len // 2`` (:func:`context_keep`) are prefilled again at positions
0 … and decoding goes on from there. Past ``seq_len``, a new token thus sees between
``seq_len / 2`` and ``seq_len`` tokens of context (exactly ``seq_len`` would need a full
forward pass for every token). Uncached decoding (``use_cache=False``) drops the same tokens at
the same steps, so both compute the same function.

**Capacity.** Token choice runs dropless for the call unless asked otherwise
(:mod:`motlab.inference`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from motlab.filler import filler_rows
from motlab.inference import capacity as inference_capacity
from motlab.kv_cache import KVCache
from motlab.layers.registry import Capacity, FFNLayer
from motlab.model import GPT
from motlab.sampling import Sampling, sample


def context_keep(seq_len: int) -> int:
    """Tokens kept when the context is full: the newest half."""
    return max(1, seq_len // 2)


def _decode_step(model: GPT, cache: KVCache, tokens_B1: Tensor, n_real: int) -> Tensor:
    """One cached step: the next token of every row in, the real rows' logits (R, V) out."""
    h_BTD, _ = model.hidden_states(tokens_B1, cache)
    return model.logits(h_BTD[:n_real, -1])


@functools.cache
def _compiled_decode_step() -> Callable[..., Tensor]:
    # Fixed shapes at every step (the cache's slots, one token per row): compiled once.
    return torch.compile(_decode_step, fullgraph=True)


class Decoder:
    """The rows of one batch, decoded together (module docstring).

    ``start()`` prefills the prompts and returns the logits (R, V) of the real rows' first new
    token; ``push(next_R)`` appends the real rows' next tokens (filler rows take their own) and
    returns the logits of the token after them.

    Args:
        model: The GPT (in eval mode; its capacity as the caller set it).
        prompts: R lists of token ids, each at least one token.
        max_new_tokens: The most tokens that will be pushed plus one (sizes the buffers).
        filler_WT: Filler rows for a group-mixing model (taken in order, aligned with the
            longest prompt's first token); None = random tokens from ``generator``.
        generator: For random filler.
        use_cache: Decode with the KV cache (else a full forward pass over the context at
            every step: the reference, and the benchmark's baseline).
        compile: Compile the cached decoding step (``torch.compile(fullgraph=True)``).
    """

    def __init__(
        self,
        model: GPT,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        filler_WT: Tensor | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        compile: bool = False,
    ) -> None:
        cfg = model.cfg
        self.model, self.seq_len = model, cfg.seq_len
        self.keep = context_keep(cfg.seq_len)
        device = next(model.parameters()).device
        G, R = cfg.group_size, len(prompts)
        B = -(-R // G) * G
        T0 = max(len(p) for p in prompts)
        total = T0 + max(max_new_tokens, 1)
        tokens_BT = torch.zeros(B, total, dtype=torch.long)
        real_BT = torch.zeros(B, total, dtype=torch.bool)
        for r, prompt in enumerate(prompts):
            tokens_BT[r, T0 - len(prompt) : T0] = torch.tensor(list(prompt), dtype=torch.long)
            real_BT[r, T0 - len(prompt) :] = True
        if B > R:
            tokens_BT[R:] = filler_rows(B - R, total, filler_WT, generator, cfg.vocab_size).cpu()
            real_BT[R:] = True
        self.tokens_BT, self.real_BT = tokens_BT.to(device), real_BT.to(device)
        self.n_real = R
        self.padding_ends = T0 - min(len(p) for p in prompts)
        """Slots before this one may hold padding; the others hold real tokens in every row."""
        if self.padding_ends:  # before any computation
            for layer in model.modules():
                if isinstance(layer, FFNLayer):
                    layer.check_padding()
        self.filled = T0
        """Slots of the buffer holding tokens (prompts and the tokens pushed so far)."""
        self.window_start = max(0, T0 - cfg.seq_len)
        """First slot of the context the model sees."""
        self.cache: KVCache | None = None
        if use_cache:
            slots = min(cfg.seq_len, T0 - self.window_start + max_new_tokens)
            self.cache = model.new_cache(B, slots)
        self._step = _compiled_decode_step() if compile else _decode_step

    def start(self) -> Tensor:
        """Prefill the prompts; the logits (R, V) of the first new token."""
        return self._window()

    def push(self, next_R: Tensor) -> Tensor:
        """Append the real rows' next tokens; the logits (R, V) of the token after them."""
        n = self.filled
        if n >= self.tokens_BT.shape[1]:
            raise ValueError(f"the decoder was sized for {self.tokens_BT.shape[1]} tokens")
        self.tokens_BT[: self.n_real, n] = next_R.to(self.tokens_BT.device)
        self.filled = n + 1
        if self.filled - self.window_start > self.seq_len:  # the context cap
            self.window_start = self.filled - self.keep
            return self._window()
        if self.cache is None:
            return self._window()
        return self._step(self.model, self.cache, self.tokens_BT[:, n : n + 1], self.n_real)

    def _window(self) -> Tensor:
        """A forward pass over the whole context (prefill, or the uncached step)."""
        lo, hi = self.window_start, self.filled
        real_BT = self.real_BT[:, lo:hi] if lo < self.padding_ends else None
        if self.cache is not None:
            self.cache.reset()
        h_BTD, _ = self.model.hidden_states(self.tokens_BT[:, lo:hi], self.cache, real_BT)
        return self.model.logits(h_BTD[: self.n_real, -1])


FinishReason = Literal["eos", "stop", "length"]


@dataclass
class Completion:
    """What one prompt got."""

    tokens: list[int]
    """The new tokens: without the end-of-text token; with a stop string, up to the token that
    completed it."""
    text: str | None
    """The new tokens decoded and cut before the stop string (None without ``decode``)."""
    finish_reason: FinishReason
    """``eos`` (end-of-text), ``stop`` (a stop string) or ``length`` (its token budget)."""


@torch.no_grad()
def complete(
    model: GPT,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int | Sequence[int],
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    stop: Sequence[str] | Sequence[Sequence[str]] | None = None,
    decode: Callable[[list[int]], str] | None = None,
    filler_WT: Tensor | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    compile: bool = False,
    capacity: Capacity = "dropless",
    on_text: Callable[[int, str], None] | None = None,
) -> list[Completion]:
    """Continue every prompt (lists of token ids, any lengths) in one lockstep batch.

    Args:
        max_new_tokens: Token budget, for all prompts or one per prompt.
        temperature, top_k, top_p: :class:`~motlab.sampling.Sampling` (``temperature=0`` is
            greedy).
        eos_id: End-of-text: a row that samples it is finished (the token is not returned).
        stop: Stop strings, for all prompts (strings) or one list per prompt; a row whose
            decoded text contains one is finished and its text cut before it. Needs ``decode``.
        decode: Token ids → text (the tokenizer's decode), for stop strings and ``text``.
        filler_WT, generator, use_cache, compile: :class:`Decoder`; ``generator`` also draws
            the samples (seed it for reproducible samples).
        capacity: Of token-choice layers for the call (:mod:`motlab.inference`).
        on_text: Called as ``on_text(row, new_text)`` as each row's text grows (text that a
            later token could still turn into a stop string, or an unfinished UTF-8 character,
            waits), for streaming. Needs ``decode``.

    Every argument is checked before any computation.
    """
    sampling = Sampling(temperature, top_k, top_p)
    prompts = _checked_prompts(prompts, model.cfg.vocab_size)
    R = len(prompts)
    budgets = _per_row(max_new_tokens, R)
    stops = _per_row_stops(stop, R)
    if decode is None and (any(stops) or on_text is not None):
        raise ValueError("stop strings and on_text need decode= (the tokenizer's decode)")
    if eos_id is not None and not 0 <= eos_id < model.cfg.vocab_size:
        raise ValueError(f"eos_id={eos_id} is not a token of the model's vocabulary")
    rows = [_Row(budget, row_stops, decode, on_text, r)
            for r, (budget, row_stops) in enumerate(zip(budgets, stops, strict=True))]  # fmt: skip
    steps = max(budgets)
    if steps == 0:
        return [row.result() for row in rows]
    was_training = model.training
    model.eval()
    try:
        with inference_capacity(model, capacity):
            decoder = Decoder(model, prompts, steps, filler_WT, generator, use_cache, compile)
            logits_RV = decoder.start()
            for step in range(steps):
                next_R = sample(logits_RV, sampling, generator)
                for row, token in zip(rows, next_R.tolist(), strict=True):
                    row.add(token, eos_id)
                if all(row.finish_reason is not None for row in rows) or step == steps - 1:
                    break
                logits_RV = decoder.push(next_R)
    finally:
        model.train(was_training)
    return [row.result() for row in rows]


class _Row:
    """One prompt's continuation as it grows: finishing, stop strings, streamed text."""

    def __init__(
        self,
        budget: int,
        stops: list[str],
        decode: Callable[[list[int]], str] | None,
        on_text: Callable[[int, str], None] | None,
        index: int,
    ) -> None:
        self.budget, self.stops, self.decode, self.on_text, self.index = (
            budget, stops, decode, on_text, index,
        )  # fmt: skip
        self.tokens: list[int] = []
        self.text: str | None = "" if decode is not None else None
        self.finish_reason: FinishReason | None = "length" if budget == 0 else None
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.streamed = ""

    def add(self, token: int, eos_id: int | None) -> None:
        if self.finish_reason is not None:
            return  # finished: keeps its place in the batch, its tokens are not kept
        if token == eos_id:
            self._finish("eos")
            return
        self.tokens.append(token)
        if self.decode is not None and (self.stops or self.on_text is not None):
            self.text = self.decode(self.tokens)
            cut = min((i for i in (self.text.find(s) for s in self.stops) if i >= 0), default=-1)
            if cut >= 0:
                self.text = self.text[:cut]
                self._finish("stop")
                return
        if len(self.tokens) >= self.budget:
            self._finish("length")
        else:
            self._stream(final=False)

    def _finish(self, reason: FinishReason) -> None:
        self.finish_reason = reason
        self._stream(final=True)

    def _stream(self, final: bool) -> None:
        if self.on_text is None or self.text is None:
            return
        ready = self.text
        if not final:
            ready = ready[: len(ready) - self.hold].rstrip("\ufffd")  # an unfinished character
        if len(ready) > len(self.streamed) and ready.startswith(self.streamed):
            self.on_text(self.index, ready[len(self.streamed) :])
            self.streamed = ready

    def result(self) -> Completion:
        assert self.finish_reason is not None
        if self.decode is not None and self.finish_reason != "stop":
            self.text = self.decode(self.tokens)  # (decoded as it grew only when needed)
        return Completion(self.tokens, self.text, self.finish_reason)


def _checked_prompts(prompts: Sequence[Sequence[int]], vocab_size: int) -> list[list[int]]:
    if isinstance(prompts, Tensor):
        prompts = prompts.tolist()
    out = [[int(t) for t in p] for p in prompts]
    if not out:
        raise ValueError("no prompts: give at least one prompt of at least one token")
    for r, prompt in enumerate(out):
        if not prompt:
            raise ValueError(f"prompt {r} is empty: a prompt needs at least one token")
        bad = [t for t in prompt if not 0 <= t < vocab_size]
        if bad:
            raise ValueError(
                f"prompt {r} has token ids outside the model's vocabulary of {vocab_size}: "
                f"{bad[:5]} (a tokenizer other than the model's?)"
            )
    return out


def _per_row(max_new_tokens: int | Sequence[int], n_rows: int) -> list[int]:
    budgets = [max_new_tokens] * n_rows if isinstance(max_new_tokens, int) else max_new_tokens
    budgets = list(budgets)
    if len(budgets) != n_rows:
        raise ValueError(f"{len(budgets)} max_new_tokens for {n_rows} prompts")
    if any(isinstance(b, bool) or not isinstance(b, int) or b < 0 for b in budgets):
        raise ValueError(f"max_new_tokens must be whole numbers >= 0, got {max_new_tokens!r}")
    return budgets


def _per_row_stops(
    stop: Sequence[str] | Sequence[Sequence[str]] | None, n_rows: int
) -> list[list[str]]:
    if stop is None or isinstance(stop, str):
        shared = [] if stop is None else [stop]
        return [list(shared) for _ in range(n_rows)]
    stop = list(stop)
    if all(isinstance(s, str) for s in stop):
        rows = [list(stop) for _ in range(n_rows)]  # type: ignore[arg-type]
    elif len(stop) == n_rows:
        rows = [[s] if isinstance(s, str) else list(s) for s in stop]
    else:
        raise ValueError(
            f"stop: give stop strings for all prompts, or one list per prompt ({n_rows}), got "
            f"{len(stop)} lists"
        )
    if any(not isinstance(s, str) or not s for row in rows for s in row):
        raise ValueError(f"stop strings must be non-empty strings, got {stop!r}")
    return rows
