"""Token-level scoring: filler draws, left truncation, the group protocol and its invariance.

Scores are checked against a direct computation: the request's own row (unpadded) stacked on
the filler rows its seed picks, through the model, log-softmax, summed over the continuation.
"""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
import torch

from motlab import GPT, GPTConfig
from motlab.eval import (
    ContinuationTooLongError,
    FillerPool,
    ScoreRequest,
    random_filler_pool,
    request_seed,
    score_requests,
)
from motlab.eval.scoring import real_rows_only
from motlab.inference import set_capacity

SEQ_LEN = 24
V = 50257
G = 4

VARIANTS = {
    "dense": {"variant": "dense"},
    "mot": {"variant": "mot", "group_size": G, "n_experts": G},
    "expert_choice": {"variant": "expert_choice", "group_size": G, "n_experts": G},
    # Dropless: with a capacity, token choice's drops depend on the batch's shape (as in
    # training), so no computation at another shape could be compared with it.
    "token_choice": {"variant": "token_choice", "n_experts": 4, "capacity_factor": None},
}


def model_of(variant: str) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(
        size=None, d_model=64, d_ff=256, n_layers=2, n_heads=2, vocab_size=V, seq_len=SEQ_LEN,
        ffn=VARIANTS[variant],
    )  # fmt: skip
    return GPT(cfg).eval()


def requests_of(n: int, seed: int = 0) -> list[ScoreRequest]:
    """Contexts of 1 to 40 tokens (some longer than seq_len), continuations of 1 to 6."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ctx = [rng.randrange(V) for _ in range(rng.randint(1, 40))]
        cont = [rng.randrange(V) for _ in range(rng.randint(1, 6))]
        out.append(ScoreRequest(ctx, cont, request_seed("loglikelihood", ctx)))
    return out


@torch.no_grad()
def direct(model: GPT, request: ScoreRequest, pool: FillerPool | None) -> float:
    ids = [*request.context, *request.continuation][-(SEQ_LEN + 1) :][:-1]
    rows_BT = torch.tensor([ids])
    if model.cfg.group_size > 1:
        rows_BT = torch.cat([rows_BT, pool.rows(request.seed, model.cfg.group_size - 1, len(ids))])
    logp_TV = torch.log_softmax(model(rows_BT)[0], dim=-1)
    n = len(request.continuation)
    return float(logp_TV[-n:].gather(-1, torch.tensor(request.continuation)[:, None]).sum())


def test_request_seed_is_a_content_hash():
    a = request_seed("loglikelihood", [1, 2, 3])
    assert a == request_seed("loglikelihood", [1, 2, 3]) and 0 <= a < 2**63
    others = {
        request_seed("loglikelihood", [1, 2, 4]),
        request_seed("loglikelihood", [1, 2], [3]),
        request_seed("rolling", [1, 2, 3]),
        request_seed("loglikelihood", [1, 2, 3], salt=1),
    }
    assert a not in others and len(others) == 4
    # Not Python's hash(), which is salted per process: another interpreter agrees.
    code = "from motlab.eval import request_seed; print(request_seed('loglikelihood', [1, 2, 3]))"
    env = {"PYTHONHASHSEED": "123", "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == str(a), out.stderr


def test_filler_rows_are_windows_and_prefixes_of_longer_rows():
    pool = FillerPool(torch.arange(40), window=8, source="test")  # 5 windows
    rows = pool.rows(seed=7, n=3, length=8)
    starts = rows[:, 0].tolist()
    assert len(set(starts)) == 3 and all(s % 8 == 0 for s in starts)
    assert torch.equal(rows, rows[:, :1] + torch.arange(8))  # whole windows of the stream
    long = pool.rows(seed=7, n=3, length=50)  # longer than the stream: it wraps around
    assert torch.equal(long[:, :8], rows)
    assert torch.equal(long, (long[:, :1] + torch.arange(50)) % 40)
    assert not torch.equal(pool.rows(seed=8, n=3, length=8), rows)
    with pytest.raises(ValueError, match="filler_pool=6 or more"):
        pool.rows(seed=0, n=6, length=8)
    random_pool = random_filler_pool(V, SEQ_LEN, windows=3, seed=0)
    assert random_pool.stream.shape == (3 * SEQ_LEN,) and random_pool.n_windows == 3


def test_long_contexts_are_cut_on_the_left_and_long_continuations_refused():
    model = model_of("dense")
    ctx = list(range(100, 140))  # 40 tokens > seq_len
    cont = [7, 8]
    (got, _), (kept, _) = score_requests(
        model, [ScoreRequest(ctx, cont), ScoreRequest(ctx[-(SEQ_LEN - 1) :], cont)]
    )
    assert got == kept  # only the last seq_len - 1 context tokens fit beside the continuation
    whole = [ScoreRequest([1], list(range(SEQ_LEN)))]  # seq_len tokens: scored whole
    assert score_requests(model, whole)[0][0] == pytest.approx(direct(model, whole[0], None))

    calls = []
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    too_long = ScoreRequest([1], list(range(SEQ_LEN + 1)))
    with pytest.raises(ContinuationTooLongError, match=f"seq_len={SEQ_LEN}"):
        score_requests(model, [ScoreRequest([1], [2]), too_long])
    assert not calls  # refused before any forward pass
    with pytest.raises(ValueError, match="empty continuation"):
        score_requests(model, [ScoreRequest([1], [])])
    with pytest.raises(ValueError, match="context token"):
        score_requests(model, [ScoreRequest([], [1])])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_scores_equal_a_direct_computation(variant):
    model = model_of(variant)
    pool = random_filler_pool(V, SEQ_LEN, windows=8) if model.cfg.group_size > 1 else None
    requests = requests_of(7)
    got = score_requests(model, requests, pool, batch_size=3)
    expected = [direct(model, r, pool) for r in requests]
    assert [ll for ll, _ in got] == pytest.approx(expected, abs=1e-4)

    # is_greedy: true exactly when every continuation token is the argmax.
    ctx = requests[0].context
    with torch.no_grad():
        rows = torch.tensor([ctx[-SEQ_LEN:]])
        if pool is not None:
            seed = request_seed("loglikelihood", ctx)
            rows = torch.cat([rows, pool.rows(seed, G - 1, rows.shape[1])])
        best = int(model(rows)[0, -1].argmax())
    seed = request_seed("loglikelihood", ctx)
    (_, greedy), (_, not_greedy) = score_requests(
        model, [ScoreRequest(ctx, [best], seed), ScoreRequest(ctx, [(best + 1) % V], seed)], pool
    )
    assert greedy and not not_greedy


@pytest.mark.parametrize("variant", ["mot", "expert_choice", "dense"])
def test_scores_do_not_depend_on_batch_size_order_or_other_requests(variant):
    model = model_of(variant)
    pool = random_filler_pool(V, SEQ_LEN, windows=8) if model.cfg.group_size > 1 else None
    requests = requests_of(20, seed=1)
    alone = score_requests(model, requests, pool, batch_size=1)
    assert score_requests(model, requests, pool, batch_size=8) == alone  # exactly
    perm = list(range(len(requests)))
    random.Random(2).shuffle(perm)
    shuffled = score_requests(model, [requests[i] for i in perm], pool, batch_size=8)
    assert [shuffled[perm.index(i)] for i in range(len(requests))] == alone
    with_others = score_requests(model, requests[:3] + requests_of(9, seed=3), pool, batch_size=8)
    assert with_others[:3] == alone[:3]


def test_token_choice_scores_do_not_depend_on_the_batch_when_dropless():
    """At its training capacity (1.25) token choice would drop tokens depending on the batch;
    loaded for inference (dropless) a request scores the same in any batch, to float rounding
    (few and many tokens take different dropless paths)."""
    torch.manual_seed(0)
    cfg = GPTConfig(
        size=None, d_model=64, d_ff=256, n_layers=2, n_heads=2, vocab_size=V, seq_len=SEQ_LEN,
        ffn={"variant": "token_choice", "n_experts": 4},
    )  # fmt: skip
    model = GPT(cfg).eval()
    set_capacity(model, "dropless")
    requests = requests_of(12, seed=4)
    alone = [ll for ll, _ in score_requests(model, requests, None, batch_size=1)]
    together = [ll for ll, _ in score_requests(model, requests, None, batch_size=8)]
    assert together == pytest.approx(alone, abs=1e-4)


def test_real_rows_only_keeps_the_logits_of_each_groups_first_row():
    model = model_of("mot")
    tokens_BT = torch.randint(V, (2 * G, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full_BTV = model(tokens_BT)
        with real_rows_only(model, G):
            real_RTV = model(tokens_BT)
        assert model(tokens_BT).shape == full_BTV.shape  # the hook is gone afterwards
    assert torch.allclose(real_RTV, full_BTV[::G], atol=1e-5)


def test_mot_needs_filler_and_really_mixes_it():
    model = model_of("mot")
    pool = random_filler_pool(V, SEQ_LEN, windows=8)
    request = requests_of(1)[0]
    with pytest.raises(ValueError, match="filler"):
        score_requests(model, [request])
    moved = ScoreRequest(request.context, request.continuation, request.seed + 1)
    a, b = score_requests(model, [request, moved], pool)
    assert a[0] != pytest.approx(b[0], abs=1e-6)  # other filler rows, another score
