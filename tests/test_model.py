"""The GPT decoder's vocabulary padding: aligned shapes inside, the exact vocabulary outside."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from motlab.config import GPTConfig
from motlab.model import GPT

SMALL = dict(size=None, d_model=32, d_ff=64, n_layers=2, n_heads=2, vocab_size=1000, seq_len=16)


def test_rows_are_padded_and_logits_are_not() -> None:
    model = GPT(GPTConfig(**SMALL))
    assert model.cfg.padded_vocab_size == 1024
    assert model.tok_emb.weight.shape[0] == model.head.weight.shape[0] == 1024
    assert model(torch.randint(0, 1000, (2, 16))).shape == (2, 16, 1000)
    assert GPTConfig(**{**SMALL, "vocab_size": 50257}).padded_vocab_size == 50304
    assert GPTConfig(**{**SMALL, "pad_vocab_to_multiple_of": 1}).padded_vocab_size == 1000


def test_padding_changes_nothing_the_model_computes() -> None:
    torch.manual_seed(0)
    padded = GPT(GPTConfig(**SMALL))
    exact = GPT(GPTConfig(**SMALL, pad_vocab_to_multiple_of=1))
    state = {
        k: v[:1000] if k in ("tok_emb.weight", "head.weight") else v
        for k, v in padded.state_dict().items()
    }
    exact.load_state_dict(state)
    tokens = torch.randint(0, 1000, (4, 17))
    logits = padded(tokens[:, :-1])
    torch.testing.assert_close(logits, exact(tokens[:, :-1]))

    F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).backward()
    assert padded.head.weight.grad[1000:].abs().max() == 0  # padding rows take no probability
    assert padded.tok_emb.weight.grad[1000:].abs().max() == 0  # and are never looked up


def test_padding_multiple_must_be_positive() -> None:
    with pytest.raises(ValueError, match="pad_vocab_to_multiple_of"):
        GPTConfig(**SMALL, pad_vocab_to_multiple_of=0)
