"""The transformers config of an exported motlab model (``configuration_motlab.py`` in an export).

It carries motlab's whole model config as a plain dict (``net``, as
:func:`motlab.checkpoint.config_to_dict` writes it), so every ``model.net`` key travels without
this file knowing it, and mirrors the sizes under the names transformers' tools read
(``hidden_size``, ``num_hidden_layers``, ...). Imports transformers only: the export copies it
as it is.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig


class MotlabConfig(PretrainedConfig):
    """A motlab GPT for ``AutoModelForCausalLM``.

    Args:
        net: motlab's model config (``GPTConfig`` as a dict: sizes, ``ffn``, ``moe_blocks``...).
        capacity: What token-choice layers run at: ``"dropless"`` (the default at inference:
            a row's logits do not depend on the rest of the batch), ``"training"`` (the
            configured capacity factor) or a factor.
        filler_seed: Seed of the random filler rows that complete a group of a MoT or
            expert-choice model (``MotlabForCausalLM.set_filler`` replaces them).
        use_cache: Keep the decoding state between the steps of ``generate()``.
    """

    model_type = "motlab"

    def __init__(
        self,
        net: dict[str, Any] | None = None,
        capacity: str | float = "dropless",
        filler_seed: int = 0,
        use_cache: bool = True,
        **kwargs: Any,
    ) -> None:
        self.net = dict(net or {})
        self.capacity = capacity
        self.filler_seed = filler_seed
        self.use_cache = use_cache
        sizes = {
            "vocab_size": self.net.get("vocab_size"),
            "hidden_size": self.net.get("d_model"),
            "num_hidden_layers": self.net.get("n_layers"),
            "num_attention_heads": self.net.get("n_heads"),
            "intermediate_size": self.net.get("d_ff"),
            "max_position_embeddings": self.net.get("seq_len"),
        }
        for key, value in sizes.items():
            kwargs.setdefault(key, value)
        kwargs.setdefault("tie_word_embeddings", False)  # motlab's head is its own matrix
        super().__init__(**kwargs)
