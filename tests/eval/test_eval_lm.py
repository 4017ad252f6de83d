"""The harness backend on a trained MoT checkpoint (group size 32): a local task through
``lm_eval.simple_evaluate``, the invariance of its scores, rolling log-likelihoods, generation.

Every score is compared with a direct computation: the request's row stacked on the C4 filler
rows its seed picks from a pool built here independently, through the model.
"""

from __future__ import annotations

import random
from pathlib import Path

import lm_eval
import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval.api.registry import get_model, model_registry
from lm_eval.tasks import TaskManager
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from motlab import complete, load_model
from motlab.eval import ContinuationTooLongError, MotlabLM, c4_filler_pool, request_seed

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
POOL = 40  # filler windows: a small pool keeps the tests fast (a group needs 31)


@pytest.fixture(scope="module")
def model(mot_checkpoint):
    return load_model(mot_checkpoint)


@pytest.fixture(scope="module")
def pool(model, c4_dir, tokenizer_path):
    """The pool the backend reads by default (the checkpoint's data and tokenizer, seed 0)."""
    return c4_filler_pool(str(c4_dir), str(tokenizer_path), model.cfg.seq_len, POOL, seed=0)


@pytest.fixture(scope="module")
def lm(mot_checkpoint) -> MotlabLM:
    return MotlabLM(checkpoint=str(mot_checkpoint), filler_pool=POOL, batch_size=8, device="cpu")


def ll_instances(pairs):
    return [
        Instance("loglikelihood", doc={}, arguments=pair, idx=i) for i, pair in enumerate(pairs)
    ]


@torch.no_grad()
def direct(model, pool, ctx_ids, cont_ids, seed):
    """log p(cont | ctx) with the request alone in its group (C4 filler from ``seed``)."""
    ids = [*ctx_ids, *cont_ids][-(model.cfg.seq_len + 1) :][:-1]
    G = model.cfg.group_size
    rows_BT = torch.cat([torch.tensor([ids]), pool.rows(seed, G - 1, len(ids))])
    logp_TV = torch.log_softmax(model(rows_BT)[0], dim=-1)
    n = len(cont_ids)
    return float(logp_TV[-n:].gather(-1, torch.tensor(cont_ids)[:, None]).sum())


def encode_pair(tokenizer, ctx, cont):
    """The harness's split for causal models: tokenize the whole, the context's ids first."""
    ctx_ids = tokenizer.encode(ctx).ids
    return ctx_ids, tokenizer.encode(ctx + cont).ids[len(ctx_ids) :]


def test_registered_beside_the_harness_backends(lm):
    assert lm.group_size == 32 and lm.filler_kind == "c4"
    assert get_model("motlab") is MotlabLM
    # Registering first must not hide the harness's own table (its lookup fills the registry
    # only while it is empty).
    assert "hf" in model_registry and get_model("dummy").__name__ == "DummyLM"


def test_local_task_through_the_harness_equals_direct_computation(
    monkeypatch, mot_checkpoint, model, pool, tokenizer
):
    monkeypatch.chdir(REPO)  # the task YAML names its data file relative to the repository
    results = lm_eval.simple_evaluate(
        model="motlab",
        model_args={"checkpoint": str(mot_checkpoint), "filler_pool": POOL},
        tasks=["mc_yes"],
        batch_size=4,
        device="cpu",
        task_manager=TaskManager(include_path=str(FIXTURES / "tasks"), include_defaults=False),
        log_samples=True,
    )
    samples = results["samples"]["mc_yes"]
    assert len(samples) == 5
    correct = 0
    for sample in samples:
        lls = []
        for (ctx, cont), [(ll, _)] in zip(sample["arguments"], sample["resps"], strict=True):
            ctx_ids, cont_ids = encode_pair(tokenizer, ctx, cont)
            seed = request_seed("loglikelihood", ctx_ids)
            assert ll == pytest.approx(direct(model, pool, ctx_ids, cont_ids, seed), abs=1e-4)
            lls.append(ll)
        correct += max(range(len(lls)), key=lls.__getitem__) == sample["target"]
    assert results["results"]["mc_yes"]["acc,none"] == correct / 5


def test_mot_scores_are_identical_for_any_batch_size_and_order(mot_checkpoint, lm, tokenizer):
    texts = [
        ("Question: Is the sky blue on a clear day?\nAnswer:", " yes"),
        ("Question: Is the sky blue on a clear day?\nAnswer:", " no"),
        ("The capital of France is", " Paris, a city on the Seine."),
        ("A" + " very" * 40 + " long context, longer than seq_len,", " is cut on the left"),
        ("", "An empty context is conditioned on end-of-text."),
        ("Numbers:", " 1 2 3"),
        ("Roof shingle removal: A man is sitting on a roof. He", " starts pulling up roofing."),
        ("Water boils at", " 100 degrees"),
        ("Cats and dogs", " are pets"),
        ("Once upon a time", " there was a model"),
    ]
    one = MotlabLM(checkpoint=str(mot_checkpoint), filler_pool=POOL, batch_size=1, device="cpu")
    alone = one.loglikelihood(ll_instances(texts), disable_tqdm=True)
    eight = lm.loglikelihood(ll_instances(texts), disable_tqdm=True)
    assert eight == alone  # exactly, not approximately
    perm = list(range(len(texts)))
    random.Random(0).shuffle(perm)
    shuffled = lm.loglikelihood(ll_instances([texts[i] for i in perm]), disable_tqdm=True)
    assert [shuffled[perm.index(i)] for i in range(len(texts))] == alone
    assert lm.loglikelihood(ll_instances(texts[3:5]), disable_tqdm=True) == alone[3:5]
    # The filler matters (MoT really mixes): another seed, other filler, other scores.
    other = MotlabLM(checkpoint=str(mot_checkpoint), filler_pool=POOL, seed=1, device="cpu")
    assert other.loglikelihood(ll_instances(texts[:2]), disable_tqdm=True) != alone[:2]


def test_continuation_longer_than_seq_len_fails_clearly(lm):
    with pytest.raises(ContinuationTooLongError, match="seq_len=32"):
        lm.loglikelihood(ll_instances([("Say:", " word" * 40)]), disable_tqdm=True)


def test_loglikelihood_rolling_scores_every_token_once(lm, model, pool, tokenizer):
    text = " ".join(f"word{i}" for i in range(40))  # 80 tokens: three windows of seq_len 32
    tokens = tokenizer.encode(text).ids
    windows = list(
        map(
            make_disjoint_window,
            get_rolling_token_windows(tokens, lm.eot_token_id, model.cfg.seq_len, 1),
        )
    )
    assert len(windows) >= 3 and sum(len(cont) for _, cont in windows) == len(tokens)
    expected = sum(
        direct(model, pool, ctx, cont, request_seed("rolling", tokens, [k]))
        for k, (ctx, cont) in enumerate(windows)
    )
    req = Instance("loglikelihood_rolling", doc={}, arguments=(text,), idx=0)
    [got] = lm.loglikelihood_rolling([req], disable_tqdm=True)
    assert got == pytest.approx(expected, abs=1e-3)


def test_generate_until_is_one_cached_group_of_the_batch_among_its_filler(
    lm, model, pool, tokenizer
):
    """A batch of requests decodes as one group (rows 0 … 2 the requests, longest first, the
    rest C4 filler drawn with the batch's seed): each text is what uncached decoding of the
    same group gives that row, cut at its own stop string, end-of-text or budget."""
    contexts = ["Once upon a time, in a land far away,", "The weather today is", "Tomorrow it"]
    prompts = [tokenizer.encode(c).ids for c in contexts]
    assert len(prompts[0]) > len(prompts[1]) > len(prompts[2])  # left padding in the group
    n_new = 30
    T0 = max(map(len, prompts))
    filler = pool.rows(request_seed("generate", *prompts), 29, T0 + n_new)
    # The reference: every row decoded in full, uncached.

    full = complete(
        model, prompts, n_new, temperature=0, filler_WT=filler, use_cache=False,
        decode=tokenizer.decode,
    )  # fmt: skip
    eot = "<|endoftext|>"
    texts = [c.text[: c.text.index(eot)] if eot in c.text else c.text for c in full]
    stop = texts[1][5:8]
    requests = [
        Instance(
            "generate_until", {}, (contexts[0], {"until": ["\n\n\n\n"], "max_gen_toks": n_new}), 0
        ),
        Instance("generate_until", {}, (contexts[1], {"until": [stop], "max_gen_toks": n_new}), 1),
        Instance("generate_until", {}, (contexts[2], {"until": [], "max_gen_toks": 7}), 2),
    ]
    short = tokenizer.decode(full[2].tokens[:7])
    expected = [
        texts[0],
        texts[1][: texts[1].index(stop)],
        short[: short.index(eot)] if eot in short else short,
    ]
    assert lm.generate_until(requests, disable_tqdm=True) == expected
    # The order the harness gives them in does not matter: the batch is sorted by length.
    assert lm.generate_until(requests[::-1], disable_tqdm=True) == expected[::-1]


def test_bad_model_args_fail_before_any_work(mot_checkpoint, tmp_path):
    ckpt = str(mot_checkpoint)
    with pytest.raises(ValueError, match="unknown model_args for the motlab backend: pretrained"):
        MotlabLM(checkpoint=ckpt, pretrained="gpt2")
    with pytest.raises(ValueError) as unknown:
        MotlabLM(checkpoint=ckpt, pretrained="gpt2")
    named = str(unknown.value).split("; valid: ")[1].split(", ")
    assert named == [
        "checkpoint", "tokenizer", "data", "filler", "filler_pool", "seed", "batch_size",
        "max_batch_size", "device", "eot_token", "capacity",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="unknown filler 'noise'; valid: c4, random"):
        MotlabLM(checkpoint=ckpt, filler="noise")
    with pytest.raises(ValueError, match="'auto' is not supported"):
        MotlabLM(checkpoint=ckpt, batch_size="auto")
    with pytest.raises(ValueError, match="capacity must be 'dropless', 'training' or"):
        MotlabLM(checkpoint=ckpt, capacity="lots")
    with pytest.raises(ValueError, match="filler_pool >= 31"):
        MotlabLM(checkpoint=ckpt, filler_pool=8, device="cpu")
    with pytest.raises(FileNotFoundError, match="no model checkpoint"):
        MotlabLM(checkpoint=str(tmp_path / "missing.ckpt"))
    with pytest.raises(FileNotFoundError):
        MotlabLM(checkpoint=ckpt, data=str(tmp_path / "no_c4"), device="cpu")
