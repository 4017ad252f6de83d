"""A motlab GPT as a transformers causal LM (``modeling_motlab.py`` in an export).

Shapes (legend in :mod:`motlab.shapes`): B, T, V, W.

:class:`MotlabForCausalLM` holds motlab's own :class:`~motlab.model.GPT` as ``net`` (its weights
are named ``net.*``, as in a ``motlab fit`` checkpoint) and adds what transformers expects of a
causal LM: ``forward(input_ids, attention_mask, labels, cache)`` returning logits, a loss and the
decoding state, and ``generate()`` through ``GenerationMixin``. An export copies this file with
its motlab imports pointing at copies of motlab's modules in the same directory
(:mod:`motlab.hf.bundle`), so the model that runs there is motlab's model, not a re-written one.

**Any batch.** MoT and expert choice mix or pick among the G rows of a group at each position, so
they need a batch that is a multiple of G. ``forward`` completes the rows it is given with filler
rows, as :func:`motlab.generate` does, and drops them from its output: random tokens drawn once
from ``config.filler_seed`` (or the windows given to :meth:`MotlabForCausalLM.set_filler`, such
as training text), filler row j holding the same token at a given position in every call. The
real rows' logits depend on the filler through the mixing, as in the paper's evaluation; a batch
that is a multiple of G takes no filler.

**Padding.** ``attention_mask`` (1 = real, 0 = padding, left or right) becomes motlab's padding
mask: padding takes no position, no token attends to it, and it takes no part in a group.

**Decoding state.** ``use_cache`` keeps motlab's :class:`~motlab.kv_cache.KVCache` for every row,
filler rows included, in a :class:`MotlabCache` returned as the output's cache and given back by
``generate()`` at the next step. ``generate`` does not say how long the context will get, so the
cache starts with the prompt's slots and doubles when full (:meth:`KVCache.grown`). The context
is at most ``seq_len`` tokens (``max_position_embeddings``): learned positions end there.
Greedy decoding and sampling work; beam search, which reorders the rows of the state, does not.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from motlab.config import GPTConfig
from motlab.filler import filler_rows
from motlab.hf.configuration import MotlabConfig
from motlab.inference import set_capacity
from motlab.kv_cache import KVCache
from motlab.model import GPT

IGNORE_INDEX = -100
"""Label of a position that takes no part in the loss (transformers' convention)."""


class MotlabCache:
    """The decoding state of one batch: motlab's KV cache for all of its rows (filler rows
    included) and how many tokens every row has been given."""

    is_compileable = False
    is_croppable = False

    def __init__(self, kv: KVCache, n_rows: int) -> None:
        self.kv = kv
        self.n_rows = n_rows
        """The caller's rows; the others are filler."""
        self.seen = 0
        """Tokens of every row written so far (the next one goes to this slot)."""

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen

    @property
    def is_linear(self) -> list[bool]:
        return [False] * len(self.kv.layers)

    def reorder_cache(self, beam_idx: Tensor) -> None:
        raise ValueError(
            "a motlab model's decoding state cannot be reordered: beam search is not supported "
            "(use greedy decoding or sampling)"
        )


class MotlabForCausalLM(PreTrainedModel, GenerationMixin):
    """motlab's GPT (``self.net``) behind transformers' causal-LM interface (module docstring)."""

    config_class = MotlabConfig
    base_model_prefix = "net"
    main_input_name = "input_ids"
    _no_split_modules = ["Block"]
    supports_gradient_checkpointing = False

    def __init__(self, config: MotlabConfig) -> None:
        super().__init__(config)
        self.net = GPT(GPTConfig.from_dict(config.net))
        set_capacity(self.net, config.capacity)
        self._filler_WT: Tensor | None = None
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        """Nothing: motlab's layers initialise themselves when built (the paper's scheme), and
        loading a checkpoint replaces every weight."""

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the state is motlab's KV cache (MotlabCache), made by forward

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.net.tok_emb

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.net.head

    @property
    def group_size(self) -> int:
        """G: the batch multiple the routed layers need (1 for dense and token choice)."""
        return self.net.cfg.group_size

    def set_filler(self, filler_WT: Tensor) -> None:
        """Fill incomplete groups with these windows (W >= G - 1 rows of ``seq_len`` token ids,
        such as training text) instead of random tokens: filler row j takes window j."""
        cfg = self.net.cfg
        need = (max(cfg.group_size - 1, 1), cfg.seq_len)
        if filler_WT.dim() != 2 or filler_WT.shape[0] < need[0] or filler_WT.shape[1] < need[1]:
            raise ValueError(
                f"filler windows must be (at least {need[0]}, at least {need[1]}) token ids, "
                f"got {tuple(filler_WT.shape)}"
            )
        self._filler_WT = filler_WT[: need[0], : need[1]].long().cpu()

    def filler(self) -> Tensor:
        """The filler windows, (G - 1, seq_len): random tokens from ``config.filler_seed`` unless
        :meth:`set_filler` gave others."""
        if self._filler_WT is None:
            cfg = self.net.cfg
            generator = torch.Generator().manual_seed(int(self.config.filler_seed))
            self._filler_WT = filler_rows(
                max(cfg.group_size - 1, 1), cfg.seq_len, generator=generator,
                vocab_size=cfg.vocab_size,
            )  # fmt: skip
        return self._filler_WT

    def new_cache(self, n_rows: int, slots: int = 1) -> MotlabCache:
        """An empty decoding state for ``n_rows`` rows (and the filler rows that complete their
        groups), with room for ``slots`` tokens to begin with (it grows as the context does)."""
        G = self.group_size
        return MotlabCache(self.net.new_cache(-(-n_rows // G) * G, slots), n_rows)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        cache: MotlabCache | None = None,
        past_key_values: MotlabCache | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast | tuple:
        """Logits (B, T, V) of the given rows; with ``labels`` the next-token loss
        (cross-entropy over the labels that are not -100, plus the routed layers' auxiliary
        losses, as motlab trains); with ``use_cache`` the decoding state.

        ``cache`` (``past_key_values`` in older transformers) continues a state: ``input_ids``
        are then the next tokens of each row, and ``attention_mask`` covers the whole context.
        ``logits_to_keep`` > 0 computes the logits of the last positions only.
        """
        state = _own_state(cache if cache is not None else past_key_values)
        if use_cache is None:
            use_cache = bool(self.config.use_cache) and not self.training
        n_rows, T = input_ids.shape
        seq_len = self.net.cfg.seq_len
        if state is None and use_cache:
            state = self.new_cache(n_rows, min(T, seq_len))
        if state is not None and state.n_rows != n_rows:
            raise ValueError(f"a decoding state for {state.n_rows} rows got {n_rows} rows")
        start = state.seen if state is not None else 0
        if start + T > seq_len:
            raise ValueError(
                f"a context of {start + T} tokens exceeds the model's seq_len={seq_len} "
                "(max_position_embeddings): its learned positions end there"
            )
        if state is not None and start + T > state.kv.slots:  # doubling: few copies
            state.kv = state.kv.grown(min(seq_len, max(start + T, 2 * state.kv.slots)))
        tokens_BT, real_BT = self._complete_groups(input_ids, attention_mask, start)
        h_BTD, aux = self.net.hidden_states(
            tokens_BT, state.kv if state is not None else None, real_BT
        )
        if state is not None:
            state.seen = start + T
        h_BTD = h_BTD[:n_rows]
        if logits_to_keep:
            h_BTD = h_BTD[:, -logits_to_keep:]
        logits_BTV = self.net.logits(h_BTD)
        loss = None
        if labels is not None:
            if logits_to_keep:
                raise ValueError("labels need the logits of every position (logits_to_keep=0)")
            loss = next_token_loss(logits_BTV, labels) + aux.total_loss()
        fields = {f.name for f in dataclasses.fields(CausalLMOutputWithPast)}
        state_field = "cache" if "cache" in fields else "past_key_values"
        out = CausalLMOutputWithPast(
            loss=loss, logits=logits_BTV, **{state_field: state if use_cache else None}
        )
        if return_dict is False:
            return out.to_tuple()
        return out

    def _complete_groups(
        self, input_ids: Tensor, attention_mask: Tensor | None, start: int
    ) -> tuple[Tensor, Tensor | None]:
        """The tokens (B, T) of the given rows and of the filler rows after them, and the
        padding mask (None when every token is real)."""
        n_rows, T = input_ids.shape
        G = self.group_size
        n_fill = -n_rows % G
        real_BT = None
        if attention_mask is not None:
            real_BT = attention_mask[:, -T:].to(device=input_ids.device, dtype=torch.bool)
            if bool(real_BT.all()):
                real_BT = None
        if not n_fill:
            return input_ids, real_BT
        fill_BT = self.filler()[:n_fill, start : start + T].to(input_ids.device)
        tokens_BT = torch.cat([input_ids, fill_BT])
        if real_BT is not None:
            real_BT = torch.cat([real_BT, torch.ones_like(fill_BT, dtype=torch.bool)])
        return tokens_BT, real_BT


def next_token_loss(logits_BTV: Tensor, labels_BT: Tensor) -> Tensor:
    """Mean cross-entropy of position t's logits against label t + 1 (labels -100 left out)."""
    V = logits_BTV.shape[-1]
    return F.cross_entropy(
        logits_BTV[:, :-1].reshape(-1, V).float(),
        labels_BT[:, 1:].reshape(-1).to(logits_BTV.device),
        ignore_index=IGNORE_INDEX,
    )


def _own_state(cache: Any) -> MotlabCache | None:
    """The decoding state passed in: ours, or None for nothing or an empty state of another
    kind (a transformers version that makes one for every model)."""
    if cache is None or isinstance(cache, MotlabCache):
        return cache
    seen = cache.get_seq_length() if hasattr(cache, "get_seq_length") else None
    if seen == 0:
        return None
    raise ValueError(
        f"a motlab model continues only its own decoding state (MotlabCache), got "
        f"{type(cache).__name__}"
    )
