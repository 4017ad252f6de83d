"""Scoring multiple-choice examples by continuation log-likelihood (METHOD.md §7).

A choice is scored by the sum of the log-probabilities of its tokens given the context (context
and choice tokenized separately and concatenated; the window is cut on the left to the model's
``seq_len``). The prediction is the choice with the highest score (``acc``) or with the highest
score divided by the choice's length **in characters** (``acc_norm``, as lm-evaluation-harness
does).

MoT models mix the rows of a group, so a query never runs alone: it is placed in a batch of
exactly one group (G rows) whose other G - 1 rows are random C4 training windows (cut to the
query's length), as in the paper. The filler rows are drawn once per example, so all choices of
an example see the same filler. Expert choice groups the batch the same way and is treated
alike. Dense and token-choice models score plain batches of queries (right-padded; causal
attention keeps the padding out of the scores). Token choice computes its expert capacity over
the whole batch, as in training, so its scores depend a little on which queries share a batch;
``--batch-size 1`` scores every query alone.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from motlab.filler import pad_with_filler
from motlab.model import GPT
from motlab.zeroshot.tasks import MCExample


def window(
    context_ids: Sequence[int], choice_ids: Sequence[int], seq_len: int
) -> tuple[list[int], int]:
    """Model input for scoring a choice, cut on the left to ``seq_len``, and the number of
    scored positions (the last ``n`` positions predict the choice's tokens)."""
    if not choice_ids:
        raise ValueError("a choice tokenized to nothing")
    full = list(context_ids) + list(choice_ids)
    full = full[-(seq_len + 1) :]
    inputs = full[:-1]
    return inputs, min(len(choice_ids), len(inputs))


@torch.no_grad()
def score_rows(
    model: GPT,
    rows: Sequence[tuple[Sequence[int], Sequence[int]]],
    filler_FT: Tensor | None = None,
    pad_id: int = 0,
) -> list[float]:
    """Sum of log p(choice | context) for each (context_ids, choice_ids) row, in one batch.

    Rows are right-padded to the longest. For a model with group size G > 1 the batch is
    completed to a multiple of G with ``filler_FT`` rows (cut to the batch's length); the scores
    of the real rows only are returned.
    """
    device = next(model.parameters()).device
    seq_len = model.cfg.seq_len
    windows = [window(c, x, seq_len) for c, x in rows]
    L = max(len(w) for w, _ in windows)
    batch_RL = torch.full((len(rows), L), pad_id, dtype=torch.long)
    for r, (ids, _) in enumerate(windows):
        batch_RL[r, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    G = model.cfg.group_size
    if G > 1 or filler_FT is not None:
        if G > 1 and filler_FT is None:
            raise ValueError(f"a model with group size {G} needs filler rows (filler_FT)")
        batch_BL, _ = pad_with_filler(batch_RL, G, filler_WT=filler_FT)
    else:
        batch_BL = batch_RL
    logits = model(batch_BL.to(device))[: len(rows)].float()
    logprobs_RLV = F.log_softmax(logits, dim=-1)
    scores = []
    for r, ((ids, n), (_, choice)) in enumerate(zip(windows, rows, strict=True)):
        end = len(ids)
        targets = torch.tensor(list(choice)[-n:], device=device)
        picked = logprobs_RLV[r, end - n : end].gather(-1, targets[:, None])
        scores.append(float(picked.sum()))
    return scores


@dataclass
class ZeroShotResult:
    task: str
    n: int
    acc: float
    acc_norm: float
    """Accuracy with scores divided by the choice's length in characters."""
    group_size: int
    filler: str
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text).ids)


def evaluate(
    model: GPT,
    tokenizer: Any,
    examples: Sequence[MCExample],
    filler_pool_PT: Tensor | None = None,
    batch_size: int = 32,
    seed: int = 0,
    task: str = "task",
    eot_id: int | None = None,
    progress: bool = False,
) -> ZeroShotResult:
    """Accuracy and length-normalised accuracy of ``model`` on ``examples``.

    MoT (group size G > 1): each example's G - 1 filler rows are drawn without replacement from
    ``filler_pool_PT`` (P ≥ G - 1 windows of at least ``seq_len`` tokens) with a generator seeded
    by ``seed``; each (example, choice) is then scored alone in one group. Other models score
    ``batch_size`` queries per batch.
    """
    model.eval()
    G = model.cfg.group_size
    if G > 1:
        if filler_pool_PT is None:
            raise ValueError(
                f"this model mixes groups of {G} sequences: give filler windows (C4 training "
                "data) to place each query among"
            )
        if filler_pool_PT.shape[0] < G - 1:
            raise ValueError(f"need at least {G - 1} filler windows, got {filler_pool_PT.shape[0]}")
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    context_prefix = [] if eot_id is None else [eot_id]

    requests: list[tuple[int, list[int], list[int]]] = []  # (example, context ids, choice ids)
    for i, ex in enumerate(examples):
        ctx = _encode(tokenizer, ex.context) if ex.context else context_prefix
        if not ctx:
            raise ValueError(f"example {i} has an empty context and no end-of-text token given")
        for choice in ex.choices:
            requests.append((i, ctx, _encode(tokenizer, choice)))

    scores: list[float] = []
    if G > 1:
        assert filler_pool_PT is not None
        fillers: dict[int, Tensor] = {}
        for n, (i, ctx, choice) in enumerate(requests):
            if i not in fillers:
                fillers.clear()
                idx = torch.randperm(filler_pool_PT.shape[0], generator=generator)[: G - 1]
                fillers[i] = filler_pool_PT[idx]
            scores += score_rows(model, [(ctx, choice)], filler_FT=fillers[i])
            if progress and n % 200 == 0:
                print(f"  {n}/{len(requests)} queries", file=sys.stderr)
    else:
        for b in range(0, len(requests), batch_size):
            chunk = requests[b : b + batch_size]
            scores += score_rows(model, [(c, x) for _, c, x in chunk])
            if progress and (b // batch_size) % 20 == 0:
                print(f"  {b}/{len(requests)} queries", file=sys.stderr)

    correct = correct_norm = 0
    k = 0
    for ex in examples:
        ll = scores[k : k + len(ex.choices)]
        k += len(ex.choices)
        norm = [s / max(len(c), 1) for s, c in zip(ll, ex.choices, strict=True)]
        correct += int(max(range(len(ll)), key=ll.__getitem__) == ex.label)
        correct_norm += int(max(range(len(norm)), key=norm.__getitem__) == ex.label)
    n = len(examples)
    return ZeroShotResult(
        task=task,
        n=n,
        acc=correct / n,
        acc_norm=correct_norm / n,
        group_size=G,
        filler="c4" if G > 1 else "none",
        seconds=time.perf_counter() - start,
    )


def c4_filler_windows(
    data: str | None, tokenizer: str, seq_len: int, n: int = 512, seed: int = 1234
) -> Tensor:
    """``n`` random training windows (n, seq_len) from C4: a local copy in C4's layout
    (``data``) or, when ``data`` is None, streamed from the hub — through the training data
    pipeline (:class:`motlab.data.C4DataModule`), shuffled."""
    from motlab.data.module import C4DataModule

    dm = C4DataModule(
        path=data,
        tokenizer=tokenizer,
        seq_len=seq_len,
        batch_size=min(n, 64),
        num_workers=0,
        shuffle_buffer=256,
        seed=seed,
        val_batches=0,
    )
    dm.setup("fit")
    windows: list[Tensor] = []
    got = 0
    for batch in dm.train_dataloader():
        windows.append(batch[:, :seq_len])
        got += batch.shape[0]
        if got >= n:
            break
    return torch.cat(windows)[:n]
