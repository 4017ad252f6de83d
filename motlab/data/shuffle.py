"""Seeded document shuffle buffer whose state is small enough to snapshot at every step.

Reservoir-style: the first ``size`` documents fill the buffer; after that each incoming document
evicts a uniformly random slot, and the evicted document is emitted. When the source ends, the
rest is drained in random order. ``size=0`` passes documents straight through.

For exact resume the buffer's contents and RNG state must be saved. Saving ~10k documents of
text (~20 MB per DataLoader worker) at every step would cost more than tokenizing, so the state
holds each slot's *ordinal* (the document's position in its stream) instead of its text, and the
stream re-reads those documents from the source on restore (see ``motlab.data.stream``).
"""

from __future__ import annotations

from typing import Any

import numpy as np


class ShuffleBuffer:
    """Fixed-capacity buffer of ``(ordinal, text)`` drawn with its own ``numpy`` generator."""

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        if size < 0:
            raise ValueError(f"shuffle buffer size must be >= 0, got {size}")
        self.size = size
        self.rng = rng
        self._texts: list[str] = []
        self._ordinals = np.empty(size, dtype=np.int64)
        self._ordinals_bytes: bytes | None = None

    def __len__(self) -> int:
        return len(self._texts)

    def push(self, ordinal: int, text: str) -> tuple[int, str] | None:
        """Offer a document; returns the document emitted in exchange, if any."""
        if self.size == 0:
            return ordinal, text
        n = len(self._texts)
        self._ordinals_bytes = None
        if n < self.size:
            self._texts.append(text)
            self._ordinals[n] = ordinal
            return None
        slot = int(self.rng.integers(n))
        out = int(self._ordinals[slot]), self._texts[slot]
        self._texts[slot] = text
        self._ordinals[slot] = ordinal
        return out

    def pop(self) -> tuple[int, str] | None:
        """Emit a random buffered document (used once the source is exhausted)."""
        n = len(self._texts)
        if n == 0:
            return None
        self._ordinals_bytes = None
        slot = int(self.rng.integers(n))
        out = int(self._ordinals[slot]), self._texts[slot]
        # Move the last slot into the hole: O(1), and the slot order stays deterministic.
        self._texts[slot] = self._texts[n - 1]
        self._ordinals[slot] = self._ordinals[n - 1]
        self._texts.pop()
        return out

    def ordinals(self) -> np.ndarray:
        """Ordinals of the buffered documents, in slot order."""
        return self._ordinals[: len(self._texts)]

    def state(self) -> dict[str, Any]:
        """Slot contents by reference (ordinals as int64 bytes) plus the RNG state."""
        if self._ordinals_bytes is None:
            self._ordinals_bytes = self.ordinals().tobytes()
        return {"ordinals": self._ordinals_bytes, "rng": self.rng.bit_generator.state}

    def load(self, state: dict[str, Any], texts_by_ordinal: dict[int, str]) -> None:
        """Restore slots from ``state``, looking the texts up by ordinal."""
        ordinals = np.frombuffer(state["ordinals"], dtype=np.int64)
        if len(ordinals) > self.size:
            raise ValueError(
                f"saved shuffle buffer holds {len(ordinals)} documents, capacity is {self.size}"
            )
        self._texts = [texts_by_ordinal[int(o)] for o in ordinals]
        self._ordinals[: len(ordinals)] = ordinals
        self._ordinals_bytes = None
        self.rng.bit_generator.state = state["rng"]
