"""The decoding state of a GPT: a static, preallocated key/value cache and its bookkeeping.

Shapes (legend in :mod:`motlab.shapes`): B, T, H, A, X, L.

A :class:`KVCache` holds, for B rows and X slots, the keys and values of every attention layer
(one :class:`LayerKV` each), which slots hold a real token of each row (``real_BX``: left
padding does not), the position the next real token of each row takes, and how many slots are
filled. Everything is allocated once, as in gpt-fast's and litgpt's static caches: a forward
pass with the cache writes its T new tokens at the next T slots (``index_copy_``) and attends
to all X slots through a mask, so a one-token decoding step has the same shapes at every step
and compiles once (``torch.compile(fullgraph=True)``). The bookkeeping lives in tensors, not
Python numbers, for the same reason: a compiled step reads and advances it without a guard that
changes every step.

Transformers' ``StaticCache`` does the same job, but for its own models' layer and attention
interfaces; motlab's attention takes this cache directly.

The cache does not know the model's context limit: :class:`~motlab.decoding.Decoder` keeps a
row's positions below ``seq_len`` (learned positions stop there) and re-prefills when a window
is full.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn


class LayerKV(nn.Module):
    """Keys and values of one attention layer: (B, H, X, A) each, written slot by slot."""

    def __init__(
        self, batch_size: int, n_heads: int, slots: int, head_dim: int, dtype: torch.dtype,
        device: torch.device | str | None,
    ) -> None:  # fmt: skip
        super().__init__()
        shape = (batch_size, n_heads, slots, head_dim)
        self.register_buffer("k_BHXA", torch.zeros(shape, dtype=dtype, device=device), False)
        self.register_buffer("v_BHXA", torch.zeros(shape, dtype=dtype, device=device), False)

    def update(self, slots_T: Tensor, k_BHTA: Tensor, v_BHTA: Tensor) -> tuple[Tensor, Tensor]:
        """Write the new keys and values at ``slots_T``; return the whole cache (B, H, X, A)."""
        self.k_BHXA.index_copy_(2, slots_T, k_BHTA.to(self.k_BHXA.dtype))
        self.v_BHXA.index_copy_(2, slots_T, v_BHTA.to(self.v_BHXA.dtype))
        return self.k_BHXA, self.v_BHXA


class Step(NamedTuple):
    """Where the T tokens of one forward pass go, and what they may see."""

    slots_T: Tensor
    """Cache slots the tokens are written to."""
    positions_BT: Tensor
    """Position of each token in its own row (0 for padding, which no real token sees)."""
    mask_B1TX: Tensor
    """Bool: query t of row b may attend to slot x (earlier or its own, and not padding)."""


class KVCache(nn.Module):
    """The state of decoding B rows with up to X slots of context: made by
    :meth:`motlab.model.GPT.new_cache`, passed to ``GPT.forward_with_aux(..., cache=cache)``.

    Args:
        n_layers: Attention layers L (one :class:`LayerKV` each).
        batch_size: Rows B; fixed for the cache's life (finished rows keep their place).
        n_heads, head_dim: H and A of the attention layers.
        slots: X, the most tokens a row's context holds (at most the model's ``seq_len``).
        dtype, device: Of the keys and values (the model's parameters').
    """

    def __init__(
        self, n_layers: int, batch_size: int, n_heads: int, head_dim: int, slots: int,
        dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        if slots < 1 or batch_size < 1:
            raise ValueError(f"a KV cache needs >= 1 rows and slots, got {batch_size}, {slots}")
        self.batch_size, self.slots = batch_size, slots
        self.layers = nn.ModuleList(
            LayerKV(batch_size, n_heads, slots, head_dim, dtype, device) for _ in range(n_layers)
        )
        self.register_buffer("real_BX", torch.zeros(batch_size, slots, dtype=torch.bool,
                                                    device=device), False)  # fmt: skip
        self.register_buffer("next_position_B", torch.zeros(batch_size, dtype=torch.long,
                                                            device=device), False)  # fmt: skip
        self.register_buffer("filled_1", torch.zeros(1, dtype=torch.long, device=device), False)

    def reset(self) -> None:
        """Empty the cache (keys and values stay allocated; nothing attends to them)."""
        self.real_BX.zero_()
        self.next_position_B.zero_()
        self.filled_1.zero_()

    def advance(self, n_tokens: int, real_BT: Tensor | None = None) -> Step:
        """Claim the next ``n_tokens`` slots for a forward pass of (B, n_tokens) tokens.

        ``real_BT`` says which of the tokens are real (None: all); padding takes a slot but
        no position, and no token attends to it but itself (so its attention stays finite).
        Each real token takes its row's next position.
        """
        device = self.real_BX.device
        slots_T = self.filled_1 + torch.arange(n_tokens, device=device)
        if real_BT is None:
            real_BT = torch.ones(self.batch_size, n_tokens, dtype=torch.bool, device=device)
        self.real_BX.index_copy_(1, slots_T, real_BT)
        counts_BT = real_BT.long().cumsum(dim=1)
        positions_BT = (self.next_position_B[:, None] + counts_BT - 1).clamp_min(0)
        self.next_position_B.add_(counts_BT[:, -1])
        self.filled_1.add_(n_tokens)
        slot_X = torch.arange(self.slots, device=device)
        earlier_TX = slot_X[None, :] <= slots_T[:, None]
        own_TX = slot_X[None, :] == slots_T[:, None]
        mask_BTX = (earlier_TX[None] & self.real_BX[:, None, :]) | own_TX[None]
        return Step(slots_T, positions_BT, mask_BTX[:, None])


def padded_step(real_BT: Tensor) -> Step:
    """The :class:`Step` of an uncached forward pass over left-padded rows: positions counted
    over each row's real tokens, causal attention that never reaches padding."""
    B, T = real_BT.shape
    positions_BT = (real_BT.long().cumsum(dim=1) - 1).clamp_min(0)
    t_T = torch.arange(T, device=real_BT.device)
    earlier_TT = t_T[None, :] <= t_T[:, None]
    own_TT = t_T[None, :] == t_T[:, None]
    mask_BTT = (earlier_TT[None] & real_BT[:, None, :]) | own_TT[None]
    return Step(t_T, positions_BT, mask_BTT[:, None])
