"""Pack tokenized documents into fixed windows of ``seq_len + 1`` tokens.

The token stream is ``doc_0 EOT doc_1 EOT doc_2 EOT ...`` (end-of-text after every document).
Window ``k`` is ``stream[k * seq_len : k * seq_len + seq_len + 1]``: consecutive windows
**overlap by one token**, the last token of window ``k`` being the first of window ``k + 1``. So
with inputs ``w[:-1]`` and targets ``w[1:]``, the inputs of all windows concatenate to the stream
and the targets to the stream shifted by one: every token is predicted exactly once and every
adjacent pair of the stream, including the pair across a window boundary, is trained exactly once.
Nothing is dropped: a document longer than a window runs on into the next windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain

import numpy as np
import torch


class Packer:
    """FIFO of token ids that cuts overlapping windows off its front.

    Tokens live in one ``int32`` array (``_tokens``) and a read position (``_pos``); the array is
    replaced only when documents are added, so its bytes can be cached for cheap state snapshots.
    """

    def __init__(self, seq_len: int, eot_id: int) -> None:
        self.seq_len = seq_len
        self.eot_id = eot_id
        self._tokens = np.empty(0, dtype=np.int32)
        self._pos = 0
        self._tokens_bytes: bytes | None = None

    @property
    def buffered(self) -> int:
        """Tokens not yet consumed (the next window starts at the first of them)."""
        return len(self._tokens) - self._pos

    def windows_ready(self) -> int:
        """How many full windows can be cut now (a window needs ``seq_len + 1`` tokens)."""
        return max(0, (self.buffered - 1) // self.seq_len)

    def add(self, docs_ids: Sequence[Sequence[int]]) -> None:
        """Append documents (token-id lists), each followed by end-of-text."""
        lengths = np.fromiter((len(ids) for ids in docs_ids), dtype=np.int64, count=len(docs_ids))
        flat = np.fromiter(chain.from_iterable(docs_ids), dtype=np.int32, count=int(lengths.sum()))
        with_eot = np.insert(flat, np.cumsum(lengths), self.eot_id)
        self._tokens = np.concatenate([self._tokens[self._pos :], with_eot])
        self._pos = 0
        self._tokens_bytes = None

    def take(self, n: int) -> torch.Tensor:
        """Cut ``n`` windows: a ``LongTensor`` of shape ``(n, seq_len + 1)``.

        Advances by ``n * seq_len`` tokens, leaving the last token of the last window in the
        buffer as the first token of the next window.
        """
        if n > self.windows_ready():
            raise ValueError(f"asked for {n} windows, {self.windows_ready()} ready")
        t = self.seq_len
        starts = self._pos + t * np.arange(n, dtype=np.int64)
        index_WU = starts[:, None] + np.arange(t + 1, dtype=np.int64)[None, :]
        windows_WU = self._tokens[index_WU].astype(np.int64)
        self._pos += n * t
        return torch.from_numpy(windows_WU)

    def state(self) -> dict[str, object]:
        """The unconsumed tokens. ``tokens`` stays the same object until the next :meth:`add`."""
        if self._tokens_bytes is None:
            self._tokens_bytes = self._tokens.tobytes()
        return {"tokens": self._tokens_bytes, "pos": self._pos}

    def load(self, state: dict[str, object]) -> None:
        tokens = state["tokens"]
        assert isinstance(tokens, bytes)
        self._tokens = np.frombuffer(tokens, dtype=np.int32).copy()
        self._pos = int(state["pos"])  # type: ignore[arg-type]
        self._tokens_bytes = tokens

    def remaining(self) -> np.ndarray:
        """Copy of the unconsumed tokens (tests and the end of a finite stream)."""
        return self._tokens[self._pos :].copy()
