"""The GPT decoder: embeddings, pre-norm blocks, and a head (METHOD.md §1).

Shapes (legend in :mod:`motlab.shapes`): B, T, D, V, P.

Training concerns (losses, optimisers, logging) live in ``motlab.lit``; this file only maps
tokens to logits and hands back what the feed-forward layers report.

Inference (:mod:`motlab.decoding`) uses two optional arguments of the forward pass, and
training neither (its computation is unchanged by them):

* ``real_BT``: which tokens are real and which are left padding of shorter prompts. Each real
  token's position counts its row's real tokens only; no token attends to padding; and
  padding takes no part in the groups of MoT and expert choice
  (:meth:`~motlab.layers.FFNLayer.forward_masked`).
* ``cache``: a :class:`~motlab.kv_cache.KVCache` (:meth:`GPT.new_cache`). The tokens are the
  next ones of each row after those already cached; their keys and values are added to it.
  Feed-forward layers see one position at a time in a decoding step, which every variant
  allows: they mix rows at one position, never positions (the causality and
  cache-equivalence tests check both for every registered variant).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from motlab.config import GPTConfig
from motlab.kv_cache import KVCache, LayerKV, Step, padded_step
from motlab.layers import Aux, DenseFFN, Experts, build_ffn
from motlab.layers.attention import CausalSelfAttention
from motlab.layers.init import InitConfig, rescale_, trunc_normal_fan_in_


class Block(nn.Module):
    """x + attn(LN(x)), then + ffn(LN(x))."""

    def __init__(self, cfg: GPTConfig, index: int) -> None:
        super().__init__()
        assert cfg.d_model and cfg.d_ff and cfg.n_heads
        self.ln_attn = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg.d_model, cfg.n_heads)
        self.ln_ffn = nn.LayerNorm(cfg.d_model)
        self.ffn = build_ffn(cfg.d_model, cfg.d_ff, cfg.block_ffn(index))

    def forward(
        self,
        x_BTD: Tensor,
        step: Step | None = None,
        kv: LayerKV | None = None,
        real_BT: Tensor | None = None,
    ) -> tuple[Tensor, Aux]:
        """Training passes ``x_BTD`` alone; inference may add the step's mask and slots, this
        block's cache and the padding mask (see the module docstring)."""
        if step is None:
            x_BTD = x_BTD + self.attn(self.ln_attn(x_BTD))
        else:
            x_BTD = x_BTD + self.attn(self.ln_attn(x_BTD), step.mask_B1TX, kv, step.slots_T)
        h_BTD = self.ln_ffn(x_BTD)
        y_BTD, aux = self.ffn(h_BTD) if real_BT is None else self.ffn.forward_masked(h_BTD, real_BT)
        # x first: the sum takes x's batch-major layout even when the FFN returns a view of
        # position-major memory (MoT does).
        return x_BTD + y_BTD, aux


class GPT(nn.Module):
    """Decoder-only language model: tokens (B, T) → logits (B, T, V)."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        assert cfg.d_model and cfg.n_layers
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.padded_vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model) if cfg.final_norm else nn.Identity()
        self.head = nn.Linear(cfg.d_model, cfg.padded_vocab_size, bias=False)  # untied from tok_emb
        # Embeddings: N(0, 0.02) as GPT-2 (a choice; the fan-in rule has no meaning for lookups).
        nn.init.normal_(self.tok_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        trunc_normal_fan_in_(self.head.weight, fan_in=cfg.d_model)
        self._scale_init(cfg.init)

    @torch.no_grad()
    def _scale_init(self, init: InitConfig) -> None:
        """Give each part its ``model.net.init`` scale. Layers draw with the paper's scale;
        rescaling afterwards (rather than passing scales into every layer) keeps the layer
        constructors' contract and the random numbers drawn the same for every setting."""
        for module in self.modules():
            if isinstance(module, Experts):
                rescale_(module.router, init.router)
                rescale_(module.w1, init.experts)
                rescale_(module.w2, init.experts)
            elif isinstance(module, DenseFFN):
                rescale_(module.w1, init.dense)
                rescale_(module.w2, init.dense)
            elif isinstance(module, CausalSelfAttention):
                rescale_(module.qkv.weight, init.attention)
                rescale_(module.proj.weight, init.attention)
        rescale_(self.head.weight, init.head)

    def forward_with_aux(
        self, tokens_BT: Tensor, cache: KVCache | None = None, real_BT: Tensor | None = None
    ) -> tuple[Tensor, Aux]:
        """Logits and the auxiliary losses/statistics of every block, named ``block{i}/…``.

        ``cache`` and ``real_BT`` are for inference (module docstring).
        """
        h_BTD, aux = self.hidden_states(tokens_BT, cache, real_BT)
        return self.logits(h_BTD), aux

    def hidden_states(
        self, tokens_BT: Tensor, cache: KVCache | None = None, real_BT: Tensor | None = None
    ) -> tuple[Tensor, Aux]:
        """The final hidden states (B, T, D), before the head, and the blocks' Aux.

        Decoding asks for the logits of a few positions only (:meth:`logits`): the head is
        the largest matmul of a small model.
        """
        B, T = tokens_BT.shape
        aux = Aux()
        if cache is None and real_BT is None:  # training, and plain inference
            if T > self.cfg.seq_len:
                raise ValueError(
                    f"sequence of {T} tokens exceeds model.net.seq_len={self.cfg.seq_len}"
                )
            positions_T = torch.arange(T, device=tokens_BT.device)
            x_BTD = self.tok_emb(tokens_BT) + self.pos_emb(positions_T)
            for i, block in enumerate(self.blocks):
                x_BTD, block_aux = block(x_BTD)
                aux.add(f"block{i}/", block_aux)
            return self.ln_f(x_BTD), aux
        if cache is None:
            if T > self.cfg.seq_len:
                raise ValueError(
                    f"sequence of {T} tokens exceeds model.net.seq_len={self.cfg.seq_len}"
                )
            assert real_BT is not None
            step = padded_step(real_BT)
        else:
            if cache.batch_size != B:
                raise ValueError(f"a cache for {cache.batch_size} rows got a batch of {B}")
            step = cache.advance(T, real_BT)
        x_BTD = self.tok_emb(tokens_BT) + self.pos_emb(step.positions_BT)
        for i, block in enumerate(self.blocks):
            kv = cache.layers[i] if cache is not None else None
            x_BTD, block_aux = block(x_BTD, step, kv, real_BT)
            aux.add(f"block{i}/", block_aux)
        return self.ln_f(x_BTD), aux

    def new_cache(self, batch_size: int, slots: int | None = None) -> KVCache:
        """An empty :class:`~motlab.kv_cache.KVCache` for ``batch_size`` rows and ``slots``
        tokens of context (default and at most ``seq_len``), on the model's device and dtype."""
        slots = self.cfg.seq_len if slots is None else slots
        if not 1 <= slots <= self.cfg.seq_len:
            raise ValueError(f"a cache holds 1 to seq_len={self.cfg.seq_len} slots, got {slots}")
        weight = self.pos_emb.weight
        H = self.cfg.n_heads
        assert H and self.cfg.d_model and self.cfg.n_layers
        return KVCache(
            self.cfg.n_layers, batch_size, H, self.cfg.d_model // H, slots,
            dtype=weight.dtype, device=weight.device,
        )  # fmt: skip

    def logits(self, x_BTD: Tensor) -> Tensor:
        """Logits over the real vocabulary: the padding rows never take probability.

        Compiled, the head multiplies by all P rows (aligned shapes) and the compiler fuses the
        cut into the loss. Eager, cutting (B, T, P) logits would cost copies of the largest
        tensor of the step, so only the V real rows of the weight are used.
        """
        V = self.cfg.vocab_size
        if torch.compiler.is_compiling():
            return self.head(x_BTD)[..., :V]
        return F.linear(x_BTD, self.head.weight[:V])

    def forward(
        self, tokens_BT: Tensor, cache: KVCache | None = None, real_BT: Tensor | None = None
    ) -> Tensor:
        """Logits only: the public inference API (``motlab.load_model(path)(tokens)``)."""
        return self.forward_with_aux(tokens_BT, cache, real_BT)[0]
