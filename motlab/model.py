"""The GPT decoder: embeddings, pre-norm blocks, and a head (METHOD.md §1).

Shapes (legend in :mod:`motlab.shapes`): B, T, D, V, P.

Training concerns (losses, optimisers, logging) live in ``motlab.lit``; this file only maps
tokens to logits and hands back what the feed-forward layers report.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from motlab.config import GPTConfig
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

    def forward(self, x_BTD: Tensor) -> tuple[Tensor, Aux]:
        x_BTD = x_BTD + self.attn(self.ln_attn(x_BTD))
        y_BTD, aux = self.ffn(self.ln_ffn(x_BTD))
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

    def forward_with_aux(self, tokens_BT: Tensor) -> tuple[Tensor, Aux]:
        """Logits and the auxiliary losses/statistics of every block, named ``block{i}/…``."""
        B, T = tokens_BT.shape
        if T > self.cfg.seq_len:
            raise ValueError(f"sequence of {T} tokens exceeds model.net.seq_len={self.cfg.seq_len}")
        positions_T = torch.arange(T, device=tokens_BT.device)
        x_BTD = self.tok_emb(tokens_BT) + self.pos_emb(positions_T)
        aux = Aux()
        for i, block in enumerate(self.blocks):
            x_BTD, block_aux = block(x_BTD)
            aux.add(f"block{i}/", block_aux)
        return self._logits(self.ln_f(x_BTD)), aux

    def _logits(self, x_BTD: Tensor) -> Tensor:
        """Logits over the real vocabulary: the padding rows never take probability.

        Compiled, the head multiplies by all P rows (aligned shapes) and the compiler fuses the
        cut into the loss. Eager, cutting (B, T, P) logits would cost copies of the largest
        tensor of the step, so only the V real rows of the weight are used.
        """
        V = self.cfg.vocab_size
        if torch.compiler.is_compiling():
            return self.head(x_BTD)[..., :V]
        return F.linear(x_BTD, self.head.weight[:V])

    def forward(self, tokens_BT: Tensor) -> Tensor:
        """Logits only: the public inference API (``motlab.load_model(path)(tokens)``)."""
        return self.forward_with_aux(tokens_BT)[0]
