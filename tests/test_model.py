"""The GPT decoder: vocabulary padding (aligned shapes inside, the exact vocabulary outside)
and the layout of the residual stream."""

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


def test_residual_stream_stays_batch_major_after_a_mot_block() -> None:
    """MoT returns a (B, T, D) view of position-major memory; the block's residual add must
    write in x's layout, or every later layer would pay for a transposed input."""
    ffn = {"variant": "mot", "group_size": 4, "n_experts": 4}
    model = GPT(GPTConfig(**{**SMALL, "moe_blocks": "all"}, ffn=ffn))
    outputs = []
    for block in model.blocks:
        block.register_forward_hook(lambda module, args, out: outputs.append(out[0]))
    model(torch.randint(0, 1000, (8, 16)))
    assert outputs and all(x.is_contiguous() for x in outputs)
