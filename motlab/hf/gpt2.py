"""A dense motlab model as transformers' own ``GPT2LMHeadModel``, and back.

Shapes (legend in :mod:`motlab.shapes`): D, F, P, V.

GPT-2 computes what a dense motlab GPT computes when the GPT-2 config says so and the weights
are laid out its way: ReLU (``activation_function="relu"``), an untied head
(``tie_word_embeddings=False``), no dropout, the same LayerNorm eps, attention scaled by
1 / sqrt(head width) as motlab's ``scaled_dot_product_attention``, and zero biases where motlab
has none (GPT-2's ``Conv1D`` layers store weights as (in, out), the transpose of
``nn.Linear``'s). Two differences cannot be expressed, and such a model is exported as remote
code instead (:mod:`motlab.hf.bundle`): a model without the final LayerNorm
(``model.net.final_norm: false``, the paper's default; GPT-2 always has ``ln_f``), and a model
with routed feed-forward layers. What is checked here is the layout; the export then compares
the two models' logits, so a difference no rule here knows of (a new config key that changes the
computation) still sends the model to remote code.

The vocabulary rows motlab pads for alignment (``pad_vocab_to_multiple_of``) take no part in any
computation, and GPT-2 has no place for them: they are cut on export and come back as zeros.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from motlab.config import GPTConfig
from motlab.layers.dense import DenseFFN
from motlab.model import GPT

GPT2_NET_KEY = "motlab_net"
"""Where the config.json of a GPT-2 export keeps motlab's model config."""


def gpt2_mismatch(model: GPT) -> str:
    """Why ``model`` cannot be laid out as ``GPT2LMHeadModel``; empty if it can."""
    cfg = model.cfg
    if not cfg.final_norm:
        return (
            "it has no LayerNorm before the head (model.net.final_norm false), and GPT-2 always "
            "has one"
        )
    routed = sorted({type(b.ffn).__name__ for b in model.blocks if not isinstance(b.ffn, DenseFFN)})
    if routed:
        return f"its feed-forward layers are routed ({', '.join(routed)})"
    widths = {b.ffn.d_hidden for b in model.blocks}
    if len(widths) > 1:
        return f"its feed-forward widths differ between blocks ({sorted(widths)})"
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    if len({m.eps for m in norms}) > 1:
        return "its LayerNorms differ in eps"
    mapped, state = _gpt2_names(model), model.state_dict()
    left = sorted(set(state) - set(mapped.values()))
    if left:
        return f"GPT-2 has no place for its weights {left[:5]}"
    return ""


def gpt2_config(model: GPT) -> dict[str, Any]:
    """The ``GPT2Config`` arguments of ``model`` (which :func:`gpt2_mismatch` accepts)."""
    cfg = model.cfg
    eps = next(m.eps for m in model.modules() if isinstance(m, nn.LayerNorm))
    return dict(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.seq_len,
        n_embd=cfg.d_model,
        n_layer=cfg.n_layers,
        n_head=cfg.n_heads,
        n_inner=model.blocks[0].ffn.d_hidden,
        activation_function="relu",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=eps,
        scale_attn_weights=True,
        scale_attn_by_inverse_layer_idx=False,
        reorder_and_upcast_attn=False,
        tie_word_embeddings=False,
    )


def to_gpt2(model: GPT) -> dict[str, Tensor]:
    """``model``'s weights under GPT-2's names and layout (zero biases, V vocabulary rows)."""
    state = model.state_dict()
    V = model.cfg.vocab_size
    out = {}
    for gpt2, ours in _gpt2_names(model).items():
        tensor = state[ours]
        if ours in ("tok_emb.weight", "head.weight"):
            tensor = tensor[:V]
        elif ours.endswith(("attn.qkv.weight", "attn.proj.weight")):
            tensor = tensor.t()  # nn.Linear (out, in) → Conv1D (in, out)
        out[gpt2] = tensor.contiguous()
    for name, size in _gpt2_biases(model.cfg, model.blocks[0].ffn.d_hidden).items():
        out[name] = torch.zeros(size, dtype=state["pos_emb.weight"].dtype)
    return out


def from_gpt2(state: dict[str, Tensor], cfg: GPTConfig, where: str) -> dict[str, Tensor]:
    """motlab's weights from a GPT-2 export's; refused, naming ``where``, if a bias is not zero
    (GPT-2 trained further elsewhere has biases that motlab's model has no place for)."""
    with torch.device("meta"):
        model = GPT(cfg)
    F = model.blocks[0].ffn.d_hidden
    nonzero = [k for k in _gpt2_biases(cfg, F) if k in state and bool(state[k].any())]
    if nonzero:
        raise ValueError(
            f"{where}: the GPT-2 biases {nonzero[:3]} are not zero, and motlab's model has none "
            "(was it trained further outside motlab?); it cannot be loaded into motlab exactly"
        )
    out = {}
    P = cfg.padded_vocab_size
    for gpt2, ours in _gpt2_names(model).items():
        if gpt2 not in state:
            raise ValueError(f"{where}: the GPT-2 weights lack {gpt2}")
        tensor = state[gpt2]
        if ours in ("tok_emb.weight", "head.weight"):
            padding = torch.zeros(P - tensor.shape[0], tensor.shape[1], dtype=tensor.dtype)
            tensor = torch.cat([tensor, padding])
        elif ours.endswith(("attn.qkv.weight", "attn.proj.weight")):
            tensor = tensor.t()
        out[ours] = tensor.contiguous()
    return out


def _gpt2_names(model: GPT) -> dict[str, str]:
    """GPT-2's name of each motlab weight (``transformer.h.0.ln_1.weight``: ``blocks.0...``)."""
    names = {
        "transformer.wte.weight": "tok_emb.weight",
        "transformer.wpe.weight": "pos_emb.weight",
        "transformer.ln_f.weight": "ln_f.weight",
        "transformer.ln_f.bias": "ln_f.bias",
        "lm_head.weight": "head.weight",
    }
    for i in range(len(model.blocks)):
        gpt2, ours = f"transformer.h.{i}.", f"blocks.{i}."
        for a, b in (
            ("ln_1.weight", "ln_attn.weight"),
            ("ln_1.bias", "ln_attn.bias"),
            ("attn.c_attn.weight", "attn.qkv.weight"),
            ("attn.c_proj.weight", "attn.proj.weight"),
            ("ln_2.weight", "ln_ffn.weight"),
            ("ln_2.bias", "ln_ffn.bias"),
            ("mlp.c_fc.weight", "ffn.w1"),  # (D, F): Conv1D's layout already
            ("mlp.c_proj.weight", "ffn.w2"),  # (F, D)
        ):
            names[gpt2 + a] = ours + b
    return names


def _gpt2_biases(cfg: GPTConfig, d_hidden: int) -> dict[str, int]:
    """The biases GPT-2 has and motlab's model lacks, with their sizes."""
    D = cfg.d_model
    assert D is not None and cfg.n_layers is not None
    out = {}
    for i in range(cfg.n_layers):
        h = f"transformer.h.{i}."
        out |= {
            h + "attn.c_attn.bias": 3 * D,
            h + "attn.c_proj.bias": D,
            h + "mlp.c_fc.bias": d_hidden,
            h + "mlp.c_proj.bias": D,
        }
    return out
