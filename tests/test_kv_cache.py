"""The KV cache's bookkeeping: slots, per-row positions and the attention mask, by hand."""

from __future__ import annotations

import pytest
import torch

from motlab import GPT, GPTConfig
from motlab.kv_cache import KVCache, padded_step


def test_positions_and_mask_of_a_padded_prefill_then_a_step() -> None:
    cache = KVCache(n_layers=1, batch_size=2, n_heads=1, head_dim=2, slots=5)
    real_BT = torch.tensor([[True, True, True], [False, False, True]])
    step = cache.advance(3, real_BT)
    assert step.slots_T.tolist() == [0, 1, 2]
    assert step.positions_BT.tolist() == [[0, 1, 2], [0, 0, 0]]  # row 1's real token is at 0
    mask = step.mask_B1TX[:, 0].int().tolist()
    assert mask[0] == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]]
    # Padding sees only itself (a finite softmax); the real token sees no padding.
    assert mask[1] == [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0]]
    step = cache.advance(1)
    assert step.slots_T.tolist() == [3]
    assert step.positions_BT.tolist() == [[3], [1]]
    assert step.mask_B1TX[:, 0].int().tolist() == [[[1, 1, 1, 1, 0]], [[0, 0, 1, 1, 0]]]
    cache.reset()
    step = cache.advance(1)
    assert step.slots_T.tolist() == [0] and step.positions_BT.tolist() == [[0], [0]]


def test_uncached_padded_step_matches_the_cache() -> None:
    real_BT = torch.tensor([[False, True, True, True], [True, True, True, True]])
    cache = KVCache(n_layers=1, batch_size=2, n_heads=1, head_dim=2, slots=4)
    cached, uncached = cache.advance(4, real_BT), padded_step(real_BT)
    assert torch.equal(cached.positions_BT, uncached.positions_BT)
    assert torch.equal(cached.mask_B1TX, uncached.mask_B1TX)


def test_cache_keys_and_values_are_written_at_their_slots() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(size=None, d_model=8, d_ff=16, n_layers=2, n_heads=2, vocab_size=20,
                          seq_len=6))  # fmt: skip
    cache = model.new_cache(batch_size=1)
    assert cache.slots == 6 and len(cache.layers) == 2
    assert cache.layers[0].k_BHXA.shape == (1, 2, 6, 4)
    model(torch.tensor([[1, 2]]), cache=cache)
    assert cache.filled_1.tolist() == [2]
    written = cache.layers[1].k_BHXA[0, :, :2].clone()
    assert written.abs().sum() > 0 and cache.layers[1].k_BHXA[0, :, 2:].abs().sum() == 0
    model(torch.tensor([[3]]), cache=cache)
    assert torch.equal(cache.layers[1].k_BHXA[0, :, :2], written)  # earlier slots untouched
    assert cache.layers[1].k_BHXA[0, :, 2].abs().sum() > 0


def test_cache_sizes_and_batches_are_checked() -> None:
    model = GPT(GPTConfig(size=None, d_model=8, d_ff=16, n_layers=1, n_heads=2, vocab_size=20,
                          seq_len=6))  # fmt: skip
    with pytest.raises(ValueError, match="1 to seq_len=6 slots, got 7"):
        model.new_cache(1, slots=7)
    cache = model.new_cache(2, slots=4)
    with pytest.raises(ValueError, match="a cache for 2 rows got a batch of 1"):
        model(torch.tensor([[1]]), cache=cache)
    with pytest.raises(ValueError, match="exceeds model.net.seq_len=6"):
        model(torch.zeros(1, 7, dtype=torch.long), real_BT=torch.ones(1, 7, dtype=torch.bool))
