"""Model configuration: sizes, presets and where the routed feed-forward layers go.

Each component sees only its own config: the attention and blocks read :class:`GPTConfig`, a
feed-forward layer reads its variant's dataclass (``motlab.layers``). The vocabulary size is
normally bound late from the tokenizer by the CLI, not written twice in YAML.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from motlab.layers import DenseConfig, FFNConfig, ffn_config
from motlab.layers.init import InitConfig

PRESETS: dict[str, dict[str, int]] = {
    "mini": dict(d_model=256, d_ff=1024, n_layers=4, n_heads=4),
    "small": dict(d_model=512, d_ff=2048, n_layers=4, n_heads=8),
    "medium": dict(d_model=512, d_ff=2048, n_layers=8, n_heads=8),
    "base": dict(d_model=768, d_ff=3072, n_layers=12, n_heads=12),
    "large": dict(d_model=1024, d_ff=4096, n_layers=24, n_heads=16),
}
"""METHOD.md §1 sizes."""

Placement = Literal["second_half", "every_other", "all", "none"]


@dataclass
class GPTConfig:
    """GPT decoder (METHOD.md §1) with a routed feed-forward in some blocks."""

    size: str | None = "medium"
    """Preset (mini/small/medium/base/large) filling the four sizes below that are left unset."""
    d_model: int | None = None
    """Residual width D."""
    d_ff: int | None = None
    """Dense feed-forward hidden size (also the basis of FLOP matching)."""
    n_layers: int | None = None
    """Number of blocks."""
    n_heads: int | None = None
    """Attention heads."""
    vocab_size: int = 50257
    """Vocabulary size V; the CLI binds it from the data module's tokenizer."""
    pad_vocab_to_multiple_of: int = 64
    """Embedding and output-layer rows are rounded up to a multiple of this (50,257 → 50,304);
    the logits are cut back to ``vocab_size``. An odd row count leaves the output layer's bf16
    matmuls, the largest of a medium model, with unaligned shapes on GPUs. 1 = no padding."""
    seq_len: int = 256
    """Context length (size of the learned position embedding)."""
    ffn: dict[str, Any] | FFNConfig = field(default_factory=lambda: {"variant": "dense"})
    """Routed feed-forward: ``{variant: NAME, ...its keys}``; ``motlab variants`` lists the
    variants and their keys. Held as the variant's config dataclass after construction."""
    moe_blocks: Placement | list[int] = "second_half"
    """Blocks that use ``ffn``: second_half (the paper), every_other, all, none, or indices."""
    final_norm: bool = False
    """LayerNorm before the output head (the paper's code had none)."""
    init: InitConfig = field(default_factory=InitConfig)
    """Initialisation scale per part (router, experts, dense, attention, head); the defaults
    are the paper's. Only a new model's first weights depend on it: resuming and
    ``model.init_from`` load weights, and do not compare it."""

    def __post_init__(self) -> None:
        if self.size is not None:
            if self.size not in PRESETS:
                raise ValueError(
                    f"unknown model size {self.size!r}; valid: {', '.join(PRESETS)} "
                    "(model.net.size), or set d_model/d_ff/n_layers/n_heads with size: null"
                )
            for key, value in PRESETS[self.size].items():
                if getattr(self, key) is None:
                    setattr(self, key, value)
        sizes = ("d_model", "d_ff", "n_layers", "n_heads")
        missing = [k for k in sizes if getattr(self, k) is None]
        if missing:
            raise ValueError(f"GPTConfig needs {missing}: set them or choose a size preset")
        for key in (*sizes, "vocab_size", "seq_len"):
            if getattr(self, key) < 1:
                raise ValueError(f"model.net.{key} must be >= 1, got {getattr(self, key)}")
        if self.d_model % self.n_heads:  # type: ignore[operator]
            raise ValueError(
                f"model.net.n_heads ({self.n_heads}) must divide model.net.d_model "
                f"({self.d_model}): every head is d_model / n_heads wide"
            )
        if self.pad_vocab_to_multiple_of < 1:
            raise ValueError(
                "model.net.pad_vocab_to_multiple_of must be >= 1 (1 = no padding), got "
                f"{self.pad_vocab_to_multiple_of}"
            )
        self.ffn = ffn_config(self.ffn)
        if not isinstance(self.init, InitConfig):  # a saved config's plain dict
            self.init = InitConfig(**dict(self.init))
        if self.routed_blocks():
            self.ffn.validate(self.d_ff)  # e.g. FLOP matching needs E | G·d_ff

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the token embedding and the output layer (``vocab_size`` rounded up)."""
        m = self.pad_vocab_to_multiple_of
        return -(-self.vocab_size // m) * m

    def routed_blocks(self) -> list[int]:
        """Indices of the blocks whose feed-forward is ``ffn``; the others are dense."""
        L = self.n_layers
        assert L is not None
        if isinstance(self.moe_blocks, list):
            bad = [i for i in self.moe_blocks if not 0 <= i < L]
            if bad:
                raise ValueError(f"moe_blocks {bad} out of range for {L} blocks")
            return sorted(set(self.moe_blocks))
        placements = {
            "second_half": list(range(L // 2, L)),
            "every_other": list(range(1, L, 2)),
            "all": list(range(L)),
            "none": [],
        }
        if self.moe_blocks not in placements:
            raise ValueError(
                f"unknown moe_blocks {self.moe_blocks!r}; valid: {', '.join(placements)} "
                "or a list of block indices"
            )
        return placements[self.moe_blocks]

    def block_ffn(self, index: int) -> FFNConfig:
        """The feed-forward config of block ``index``."""
        return self.ffn if index in self.routed_blocks() else DenseConfig()

    @property
    def group_size(self) -> int:
        """The batch multiple the routed layers need (1 for dense and token choice)."""
        return self.ffn.group_size if self.routed_blocks() else 1

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> GPTConfig:
        """The config a plain dict describes: a saved one (a checkpoint's ``net_config``, the
        ``net`` hyper-parameter, a ``save_model`` file) or a parsed ``model.net``.

        Keys starting with ``_`` are metadata, not settings, and are left out; an unknown key is
        an error naming it (a checkpoint from another version of motlab, say).
        """
        settings = {k: v for k, v in dict(config).items() if not str(k).startswith("_")}
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - valid)
        if unknown:
            raise ValueError(f"unknown model.net key(s) {unknown}; valid keys: {sorted(valid)}")
        return cls(**settings)
