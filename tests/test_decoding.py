"""Lockstep decoding: finished rows keep their place, stop strings and budgets per row, streamed
text, the context cap, batch independence of dense and token choice, checked inputs.

(Cached against uncached, for every registered variant: tests/layers/test_cache_equivalence.py.)
"""

from __future__ import annotations

import pytest
import torch

import motlab
from motlab import GPT, GPTConfig, complete
from motlab.decoding import context_keep
from motlab.inference import capacity

V, SEQ = 60, 16


def model_of(ffn: dict, seq_len: int = SEQ, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    cfg = GPTConfig(size=None, d_model=32, d_ff=64, n_layers=2, n_heads=2, vocab_size=V,
                    seq_len=seq_len, moe_blocks="all", ffn=ffn)  # fmt: skip
    return GPT(cfg).eval()


MOT = {"variant": "mot", "group_size": 4, "n_experts": 4}
TOKEN_CHOICE = {"variant": "token_choice", "n_experts": 8}


def decode(ids: list[int]) -> str:
    """A toy tokenizer: one letter per token."""
    return "".join(chr(ord("a") + i % 26) for i in ids)


def prompts_of(*lengths: int, seed: int = 0) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, V, (n,), generator=gen).tolist() for n in lengths]


def test_a_finished_row_keeps_its_place_in_the_group() -> None:
    """Row 0 ends at end-of-text; the other rows of its MoT group decode exactly as if it had
    not (it keeps decoding in its place), and its own output stops there."""
    model = model_of(MOT)
    prompts, filler = prompts_of(5, 3, 5), torch.randint(0, V, (1, 40))

    def run(rows: list[list[int]], **kw) -> list[motlab.Completion]:
        generator = torch.Generator().manual_seed(0)  # the same draws every run
        return complete(model, rows, 10, filler_WT=filler, generator=generator, **kw)

    free = run(prompts)
    row0 = free[0].tokens
    k = next(i for i in range(2, 10) if row0[i] not in row0[:i])  # its first time
    eos = row0[k]
    ended = run(prompts, eos_id=eos)
    assert ended[0].tokens == row0[:k] and ended[0].finish_reason == "eos"
    for before, after in zip(free[1:], ended[1:], strict=True):
        cut = before.tokens.index(eos) if eos in before.tokens else 10
        assert after.tokens == before.tokens[:cut]
    # Had the row left the group, the others would have been mixed among other rows.
    alone = complete(model, prompts[1:], 10, temperature=0, filler_WT=filler)
    greedy = complete(model, prompts, 10, temperature=0, filler_WT=filler)
    assert [c.tokens for c in alone] != [c.tokens for c in greedy[1:]]


def test_stop_strings_and_budgets_per_row_and_streamed_text() -> None:
    model = model_of(TOKEN_CHOICE)
    prompts = prompts_of(4, 6, 2)
    free = complete(model, prompts, 12, temperature=0, decode=decode)
    texts = [c.text for c in free]
    assert all(t is not None and len(t) == 12 for t in texts)
    stops = [[texts[0][5:8], "no such stop"], [], ["zz", texts[2][3:5]]]
    streamed: dict[int, str] = {0: "", 1: "", 2: ""}

    def on_text(row: int, text: str) -> None:
        streamed[row] += text

    got = complete(model, prompts, [12, 7, 12], temperature=0, decode=decode, stop=stops,
                   on_text=on_text)  # fmt: skip
    assert got[0].finish_reason == "stop" and got[0].text == texts[0][: texts[0].index(stops[0][0])]
    assert got[0].tokens == free[0].tokens[: len(got[0].tokens)]
    assert len(got[0].tokens) == texts[0].index(stops[0][0]) + 3  # through the stop's last token
    assert got[1].finish_reason == "length" and got[1].tokens == free[1].tokens[:7]
    assert got[1].text == texts[1][:7]
    assert got[2].finish_reason == "stop" and got[2].text == texts[2][: texts[2].index(stops[2][1])]
    assert streamed == {r: got[r].text for r in range(3)}  # no stop string ever streamed


def test_streaming_holds_back_an_unfinished_character() -> None:
    model = model_of(TOKEN_CHOICE)
    pieces: list[str] = []

    def bytes_decode(ids: list[int]) -> str:  # two tokens make one character
        text = "".join("é" if i % 2 else "e" for i in ids[: len(ids) // 2 * 2 : 2])
        return text + ("\ufffd" if len(ids) % 2 else "")

    [done] = complete(model, prompts_of(3), 6, temperature=0, decode=bytes_decode,
                      on_text=lambda _r, t: pieces.append(t))  # fmt: skip
    assert all("\ufffd" not in p for p in pieces) and "".join(pieces) == done.text


def test_past_seq_len_the_oldest_half_is_dropped() -> None:
    """The cap, against a hand-written reference: whenever the context would pass seq_len,
    keep its newest seq_len // 2 tokens and go on; the cache and no cache agree with it."""
    model = model_of({"variant": "dense"})
    prompt, steps = prompts_of(5)[0], 3 * SEQ
    tokens, start = list(prompt), 0
    with torch.no_grad():
        for _ in range(steps):
            if len(tokens) - start > SEQ:
                start = len(tokens) - context_keep(SEQ)
            tokens.append(int(model(torch.tensor([tokens[start:]]))[0, -1].argmax()))
    for use_cache in (True, False):
        [done] = complete(model, [prompt], steps, temperature=0, use_cache=use_cache)
        assert done.tokens == tokens[len(prompt) :]
    # A prompt longer than seq_len is cut on the left.
    long = prompts_of(SEQ + 7)[0]
    [done] = complete(model, [long], 1, temperature=0)
    with torch.no_grad():
        assert done.tokens == [int(model(torch.tensor([long[-SEQ:]]))[0, -1].argmax())]


@pytest.mark.parametrize("ffn", [{"variant": "dense"}, TOKEN_CHOICE], ids=["dense", "tc"])
def test_a_row_decodes_alone_as_in_any_batch(ffn) -> None:
    """Dense and token choice (dropless): each prompt of a ragged batch of 8 gets the tokens it
    gets alone; its left padding changes nothing."""
    model = model_of(ffn)
    prompts = prompts_of(3, 7, 5, 1, 7, 2, 6, 4)
    together = complete(model, prompts, 10, temperature=0)
    for prompt, done in zip(prompts, together, strict=True):
        assert complete(model, [prompt], 10, temperature=0)[0].tokens == done.tokens


def test_token_choice_logits_do_not_depend_on_the_batch_at_inference() -> None:
    """Row 0 alone or among 8 rows: dropless, the same logits to float32 rounding; with the
    training capacity (one 16-token row: C = max(1, int(1.25 · 16 / 8)) = 2 slots per expert),
    tokens are dropped and the row's logits change with the batch."""
    model = model_of(TOKEN_CHOICE)
    tokens = torch.randint(0, V, (8, SEQ), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), capacity(model, "dropless"):
        alone, batch = model(tokens[:1]), model(tokens)
        dropped = model.forward_with_aux(tokens[:1])[1].stats["block0/dropped_fraction"]
    torch.testing.assert_close(alone[0], batch[0], rtol=0, atol=1e-5)
    assert dropped == 0
    with torch.no_grad(), capacity(model, "training"):
        alone, batch = model(tokens[:1]), model(tokens)
        dropped = model.forward_with_aux(tokens[:1])[1].stats["block0/dropped_fraction"]
    assert dropped > 0 and not torch.allclose(alone[0], batch[0], atol=1e-3)


def test_seeded_samples_are_reproducible() -> None:
    model = model_of(MOT)
    prompts = prompts_of(4, 2)

    def run(seed: int) -> list[list[int]]:
        done = complete(model, prompts, 8, temperature=1.0, top_k=20, top_p=0.9,
                        generator=torch.Generator().manual_seed(seed))  # fmt: skip
        return [c.tokens for c in done]

    assert run(0) == run(0) and run(0) != run(1)


def test_model_mode_and_capacity_are_restored() -> None:
    model = model_of(TOKEN_CHOICE).train()
    complete(model, prompts_of(3), 2)
    assert model.training and model.blocks[0].ffn.capacity_setting == "training"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: complete(m, [], 2), "no prompts"),
        (lambda m: complete(m, [[1], []], 2), "prompt 1 is empty"),
        (lambda m: complete(m, [[1, V + 3]], 2), r"outside the model's vocabulary of 60: \[63\]"),
        (lambda m: complete(m, [[1]], -1), "max_new_tokens must be whole numbers >= 0"),
        (lambda m: complete(m, [[1], [2]], [3]), "1 max_new_tokens for 2 prompts"),
        (lambda m: complete(m, [[1]], 2, stop=["x"]), "need decode="),
        (
            lambda m: complete(m, [[1], [2]], 2, stop=[["x"], ["y"], ["z"]], decode=decode),
            r"one list per prompt \(2\)",
        ),  # fmt: skip
        (lambda m: complete(m, [[1]], 2, eos_id=V), "eos_id=60 is not a token"),
        (lambda m: complete(m, [[1]], 2, top_p=2.0), "top_p must be in"),
        (lambda m: complete(m, [[1]], 2, capacity="lots"), "capacity must be 'dropless'"),
    ],
)
def test_inputs_are_checked_before_any_computation(call, message, monkeypatch) -> None:
    model = model_of(TOKEN_CHOICE)

    def no_forward(*args, **kwargs):
        raise AssertionError("the model ran before the inputs were checked")

    monkeypatch.setattr(model, "hidden_states", no_forward)
    with pytest.raises(ValueError, match=message):
        call(model)


def test_generate_returns_prompts_and_continuations() -> None:
    model = model_of(MOT)
    prompt, filler = torch.tensor(prompts_of(5, 5)), torch.randint(0, V, (2, 11))
    out = motlab.generate(model, prompt, 6, 0.0, None, filler)  # the positional interface
    assert out.shape == (2, 11) and torch.equal(out[:, :5], prompt)
    uncached = motlab.generate(model, prompt, 6, 0.0, None, filler, use_cache=False)
    assert torch.equal(out, uncached)
    eos = int(out[0, 7])
    ended = motlab.generate(model, prompt, 6, 0.0, None, filler, eos_id=eos)
    first = out[0, 5:].tolist().index(eos) + 5
    assert ended[0, :first].tolist() == out[0, :first].tolist()
    assert (ended[0, first:] == eos).all()
