"""Zero-shot multiple choice: task formats, continuation scoring, the MoT filler path, the CLI.

The scorer is checked on a model whose answer is known by construction: every block is zeroed
and the position embedding holds a constant feature that the head maps to one token (" yes"),
so at every position the model puts almost all its probability on " yes". On the fixture, the
right choice is always the one made of " yes" tokens only: accuracy 1.0, and 0.0 with the labels
moved to another choice.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

from motlab import GPT, GPTConfig, save_model
from motlab.zeroshot import (
    MCExample,
    TaskUnavailableError,
    c4_filler_windows,
    evaluate,
    load_task,
    main,
    normalise,
    score_rows,
    window,
)

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "mc_yes.jsonl"
YES = 3763  # GPT-2's " yes"
SEQ_LEN = 24


def tiny_cfg(ffn: dict) -> GPTConfig:
    return GPTConfig(
        size=None,
        d_model=8,
        d_ff=16,
        n_layers=2,
        n_heads=2,
        vocab_size=50257,
        seq_len=SEQ_LEN,
        ffn=ffn,
        moe_blocks="all",
    )


def yes_model(ffn: dict) -> GPT:
    """A model whose next-token distribution is the same everywhere and favours " yes"."""
    model = GPT(tiny_cfg(ffn))
    with torch.no_grad():
        for p in model.blocks.parameters():
            p.zero_()
        model.tok_emb.weight.zero_()
        model.pos_emb.weight.zero_()
        model.pos_emb.weight[:, 0] = 1.0
        model.head.weight.zero_()
        model.head.weight[YES, 0] = 10.0
    return model.eval()


@pytest.fixture(scope="module")
def tokenizer(tokenizer_path) -> Tokenizer:
    return Tokenizer.from_file(str(tokenizer_path))


@pytest.fixture(scope="module")
def examples() -> list[MCExample]:
    return load_task(str(FIXTURE))


def swapped(examples: list[MCExample]) -> list[MCExample]:
    return [MCExample(e.context, e.choices, (e.label + 1) % len(e.choices)) for e in examples]


def test_formats_are_normalised(examples):
    assert len(examples) == 5
    piqa, arc, hella = examples[2], examples[3], examples[4]
    assert piqa.context == "Question: How do you boil water?\nAnswer:"
    assert piqa.choices == [" Put it in a freezer.", " yes yes"] and piqa.label == 1
    assert arc.choices[3] == " yes" and arc.label == 3
    assert hella.context == "Roof shingle removal: A man is sitting on a roof. He"
    assert hella.choices[1] == " yes" and hella.label == 1
    assert hella.choices[3] == " lies down. on the roof."
    assert load_task(str(FIXTURE), limit=2) == examples[:2]
    with pytest.raises(ValueError, match="unrecognised record"):
        normalise({"text": "x"})
    with pytest.raises(ValueError, match="label 5"):
        normalise({"context": "a", "choices": ["b", "c"], "label": 5})


def test_unknown_task_and_offline_hub():
    with pytest.raises(TaskUnavailableError, match="unknown task 'nope'"):
        load_task("nope")
    with pytest.raises(TaskUnavailableError, match="no task file"):
        load_task("missing/file.jsonl")
    # conftest switches the hub off: a clear, fast error that tells to pass a local file.
    with pytest.raises(TaskUnavailableError, match="--task PATH.jsonl"):
        load_task("piqa")


def test_window_truncates_on_the_left():
    inputs, n = window(list(range(30)), [100, 101], seq_len=8)
    assert inputs == [23, 24, 25, 26, 27, 28, 29, 100] and n == 2
    inputs, n = window([1], list(range(50, 70)), seq_len=8)
    assert len(inputs) == 8 and n == 8  # a choice longer than the window: its tail is scored


def test_dense_accuracy_is_one_and_zero_swapped(tokenizer, examples):
    model = yes_model({"variant": "dense"})
    right = evaluate(model, tokenizer, examples, batch_size=3)
    assert (right.acc, right.acc_norm, right.n) == (1.0, 1.0, 5)
    wrong = evaluate(model, tokenizer, swapped(examples))
    assert (wrong.acc, wrong.acc_norm) == (0.0, 0.0)


def test_scores_match_a_hand_computed_log_likelihood(tokenizer):
    torch.manual_seed(0)
    model = GPT(tiny_cfg({"variant": "dense"})).eval()
    ctx, choice = [11, 12, 13, 14, 15], [16, 17]
    other = ([3, 4], [5, 6, 7, 8])  # a longer row in the same batch: right padding
    got = score_rows(model, [(ctx, choice), other])
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ctx + choice[:-1]])), dim=-1)[0]
    expected = logp[4, 16] + logp[5, 17]
    assert got[0] == pytest.approx(float(expected), abs=1e-5)


def test_mot_filler_path_equals_a_hand_built_group(tokenizer, c4_dir, tokenizer_path):
    G = 4
    torch.manual_seed(0)
    model = GPT(tiny_cfg({"variant": "mot", "group_size": G, "n_experts": 4})).eval()
    pool = c4_filler_windows(str(c4_dir), str(tokenizer_path), SEQ_LEN, n=G - 1)
    assert pool.shape == (G - 1, SEQ_LEN)
    ex = MCExample("Question: Is the sky blue?\nAnswer:", [" yes", " no"], 0)
    ctx = tokenizer.encode(ex.context).ids
    by_hand = []
    for choice in ex.choices:
        ids = tokenizer.encode(choice).ids
        row = ctx + ids[:-1]
        group = torch.cat([torch.tensor([row]), pool[:, : len(row)]])  # the query + G-1 windows
        with torch.no_grad():
            logp = torch.log_softmax(model(group)[0], dim=-1)
        picked = logp[len(ctx) - 1 :].gather(-1, torch.tensor(ids)[:, None])
        by_hand.append(float(picked.sum()))
    via_scorer = [
        score_rows(model, [(ctx, tokenizer.encode(c).ids)], filler_FT=pool)[0] for c in ex.choices
    ]
    assert via_scorer == pytest.approx(by_hand, abs=1e-5)
    # The filler matters: MoT really mixes the query with the other rows of its group.
    other_fill = torch.randint(50257, pool.shape, generator=torch.Generator().manual_seed(1))
    moved = score_rows(model, [(ctx, tokenizer.encode(" yes").ids)], filler_FT=other_fill)[0]
    assert moved != pytest.approx(by_hand[0], abs=1e-6)
    with pytest.raises(ValueError, match="filler"):
        score_rows(model, [(ctx, [1])])


def test_mot_accuracy_through_the_filler_path(tokenizer, examples):
    model = yes_model({"variant": "mot", "group_size": 4, "n_experts": 4})
    pool = torch.randint(50257, (16, SEQ_LEN), generator=torch.Generator().manual_seed(0))
    right = evaluate(model, tokenizer, examples, filler_pool_PT=pool)
    assert (right.acc, right.acc_norm, right.group_size, right.filler) == (1.0, 1.0, 4, "c4")
    assert evaluate(model, tokenizer, swapped(examples), filler_pool_PT=pool).acc == 0.0
    with pytest.raises(ValueError, match="filler"):
        evaluate(model, tokenizer, examples)


def test_command(tmp_path, tokenizer_path, c4_dir, capsys):
    ckpt = tmp_path / "mot.pt"
    save_model(yes_model({"variant": "mot", "group_size": 4, "n_experts": 4}), ckpt)
    out = tmp_path / "result.json"
    argv = ["--checkpoint", str(ckpt), "--task", str(FIXTURE), "--tokenizer", str(tokenizer_path)]
    argv += ["--data", str(c4_dir), "--filler-pool", "8", "--device", "cpu", "--output", str(out)]
    assert main(argv) == 0
    assert "acc=1.0000  acc_norm=1.0000" in capsys.readouterr().out
    assert json.loads(out.read_text())["n"] == 5
    # Hub task while offline: exit 2 with a hint, no traceback.
    assert main(["--checkpoint", str(ckpt), "--task", "hellaswag"]) == 2
    assert "--task PATH.jsonl" in capsys.readouterr().err
