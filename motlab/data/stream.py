"""The resumable token stream: documents -> shuffle buffer -> batched tokenizer -> packed batches.

:class:`PackedStream` is a ``torch.utils.data.IterableDataset`` that yields whole batches
(``LongTensor`` of shape ``(batch_size, seq_len + 1)``) so it is used with ``batch_size=None``
in the loader. Each DataLoader worker of each rank is one *stream* with its own files
(:mod:`motlab.data.sharding`), shuffle buffer, RNG and token buffer.

Exact resume. Between two batches the state of a stream is:

* its position in the source: ``next_ordinal`` (documents read so far) and ``segments``, the
  ordinal at which each recently opened file started (enough to re-open the right file);
* the shuffle buffer: each slot's document *ordinal* and the RNG state
  (:mod:`motlab.data.shuffle` explains why ordinals rather than text);
* the unconsumed tokens of the packer (:mod:`motlab.data.packing`);
* counters (batches yielded, malformed records, source exhausted).

A file that cannot be read to its end is skipped from its damage on, as one malformed record
(:mod:`motlab.data.damaged`).

:meth:`PackedStream.state_dict` returns this (~80 KB for a 10k-document buffer, so
``StatefulDataLoader`` can snapshot it at every step). Restoring re-reads the source from the
oldest file still referenced, collecting the buffered documents' texts and leaving the reader
exactly after the last document read; the RNG and packer are restored as saved. The stream then
continues with the very batches an uninterrupted run would have produced.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from torch.utils.data import IterableDataset, get_worker_info

from motlab.data.damaged import read_until_damaged, warn_skipped
from motlab.data.packing import Packer
from motlab.data.sharding import assign_files
from motlab.data.shuffle import ShuffleBuffer
from motlab.data.sources import DocFile

STATE_FORMAT = "motlab.data.stream/1"

MALFORMED_REPORTED_PER_FILE = 5
"""Malformed records of one file that a data stream reports one by one (file and line); it
counts the rest, in one warning per pass over the file. ``malformed_records`` counts them all."""


class MalformedRecordWarning(UserWarning):
    """A record was skipped because it is not JSON, or its text field is missing or not a string."""


class PackedStream(IterableDataset):
    """Batches of packed token windows from ``files``, sharded over ranks and loader workers.

    Args:
        files: the shard files, in a fixed order (the same on every rank).
        tokenizer: used with ``encode_batch_fast`` (or ``encode_batch``), no special tokens.
        eot_id: end-of-text id appended after every document.
        seq_len: model context; windows hold ``seq_len + 1`` tokens.
        batch_size: windows per yielded batch.
        text_field: record field holding the document text.
        shuffle_buffer: documents per stream in the shuffle buffer (0 = keep source order).
        seed: seeds the per-epoch file order and the per-stream shuffle buffer.
        shuffle_files: permute the file order every epoch (training) or keep it (validation).
        cycle: start the next epoch when the files are exhausted (an endless training stream),
            or stop after one pass.
        max_batches: stop after this many batches per rank (split among workers); None = no cap.
        rank, world_size: this process's place in distributed training.
        encode_docs: documents per ``encode_batch`` call.
        worker_id, num_workers: override the DataLoader worker identity (tests, simulations).
    """

    def __init__(
        self,
        files: Sequence[DocFile],
        tokenizer: Tokenizer,
        *,
        eot_id: int,
        seq_len: int,
        batch_size: int,
        text_field: str = "text",
        shuffle_buffer: int = 0,
        seed: int = 0,
        shuffle_files: bool = False,
        cycle: bool = False,
        max_batches: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        encode_docs: int = 64,
        worker_id: int | None = None,
        num_workers: int | None = None,
    ) -> None:
        super().__init__()
        if not files:
            raise ValueError("PackedStream needs at least one file")
        if seq_len < 1 or batch_size < 1 or encode_docs < 1:
            raise ValueError("seq_len, batch_size and encode_docs must be >= 1")
        self.files = list(files)
        self.tokenizer = tokenizer
        self.eot_id = eot_id
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.text_field = text_field
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.shuffle_files = shuffle_files
        self.cycle = cycle
        self.max_batches = max_batches
        self.rank = rank
        self.world_size = world_size
        self.encode_docs = encode_docs
        self.worker_id = worker_id
        self.num_workers = num_workers
        self._pending: dict[str, Any] | None = None
        self._core: _StreamCore | None = None

    def __getstate__(self) -> dict[str, Any]:
        # A live iteration (generators, open files) stays in its process; the pending resume
        # state travels to spawned workers.
        state = self.__dict__.copy()
        if self._core is not None:
            state["_pending"] = self._core.state_dict()
        state["_core"] = None
        return state

    def worker(self) -> tuple[int, int]:
        """``(worker_id, num_workers)`` of the current process (``(0, 1)`` outside workers)."""
        if self.worker_id is not None:
            return self.worker_id, self.num_workers or 1
        info = get_worker_info()
        return (info.id, info.num_workers) if info is not None else (0, 1)

    def fingerprint(self) -> list[Any]:
        """What must not change for a saved position to stay meaningful."""
        return [
            self.seq_len,
            self.shuffle_buffer,
            self.seed,
            self.shuffle_files,
            self.cycle,
            len(self.files),
            self.text_field,
            self.eot_id,
            self.tokenizer.get_vocab_size(),
        ]

    @property
    def malformed_records(self) -> int:
        """Malformed records skipped by this process's current iteration (main process only)."""
        return self._core.malformed if self._core is not None else 0

    def __iter__(self) -> Iterator[torch.Tensor]:
        if get_worker_info() is not None:
            # One tokenizer thread per worker: the workers are the parallelism.
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
        state, self._pending = self._pending, None
        self._core = _StreamCore(self, state)
        return self._core.batches()

    def close(self) -> None:
        """End the current iteration: close the file it reads and drop its position."""
        if self._core is not None:
            close = getattr(self._core.source, "close", None)
            if close is not None:
                close()  # a generator over a file: closing it closes the file
            self._core = None

    def state_dict(self) -> dict[str, Any]:
        """The stream position after the last yielded batch (see the module docstring)."""
        if self._core is not None:
            return self._core.state_dict()
        if self._pending is not None:
            return self._pending
        return {"format": STATE_FORMAT, "fresh": True}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from ``state`` at the next ``iter()``."""
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a {STATE_FORMAT} state: {sorted(state)}")
        self._pending = None if state.get("fresh") else state
        self._core = None


class _StreamCore:
    """One iteration of a :class:`PackedStream` in one process (all the mutable state)."""

    def __init__(self, ds: PackedStream, state: dict[str, Any] | None) -> None:
        self.ds = ds
        worker_id, num_workers = ds.worker()
        self.stream = ds.rank * num_workers + worker_id
        self.n_streams = ds.world_size * num_workers
        self.cap: int | None = None
        if ds.max_batches is not None:
            self.cap = len(range(worker_id, ds.max_batches, num_workers))
        self.packer = Packer(ds.seq_len, ds.eot_id)
        rng = np.random.default_rng([ds.seed, self.stream, self.n_streams, 0xB0F])
        self.buffer = ShuffleBuffer(ds.shuffle_buffer, rng)
        self.encode = getattr(ds.tokenizer, "encode_batch_fast", ds.tokenizer.encode_batch)
        self.segments: list[tuple[int, int, int]] = []  # (first ordinal, epoch, task slot)
        self.next_ordinal = 0
        self.source_done = False
        self.batches_done = 0
        self.malformed = 0
        self.malformed_in_file: dict[str, int] = {}  # reported or counted, per file name
        self.unreported: dict[str, int] = {}  # counted, not yet reported, in this file's pass
        self.replaying = False
        if state is None:
            self.source: Iterator[tuple[int, str]] = self._docs(0, 0, 0)
        else:
            self._restore(state)

    # -- reading ---------------------------------------------------------------------------

    def _docs(self, epoch: int, slot: int, ordinal: int) -> Iterator[tuple[int, str]]:
        """``(ordinal, text)`` of this stream's documents from file ``slot`` of ``epoch`` on."""
        ds = self.ds
        while True:
            tasks = assign_files(
                len(ds.files), self.stream, self.n_streams, epoch, ds.seed, ds.shuffle_files
            )
            epoch_start = (ordinal, slot)
            records = 0  # in this pass, malformed ones included
            for s in range(slot, len(tasks)):
                task = tasks[s]
                doc_file = ds.files[task.file]
                self.segments.append((ordinal, epoch, s))
                for index, text, problem in read_until_damaged(
                    doc_file, ds.text_field, task.stride, task.offset, self._report_damaged
                ):
                    records += 1
                    if text is None:
                        self._report_malformed(doc_file, index, problem or "malformed")
                        continue
                    yield ordinal, text
                    ordinal += 1
                self._report_unreported(doc_file)
            if not ds.cycle:
                return
            if epoch_start == (ordinal, 0):
                where = f"data stream {self.stream} of {self.n_streams}"
                if records:
                    raise RuntimeError(
                        f"{where}: a full pass over {len(ds.files)} files gave {records} records, "
                        "all malformed (see the warnings above): does --data.text_field "
                        f"{ds.text_field!r} name the field that holds the text?"
                    )
                raise RuntimeError(
                    f"{where} got no records from a full pass over {len(ds.files)} files (its "
                    "share of the data is empty); use fewer loader workers/ranks or more data"
                )
            epoch, slot = epoch + 1, 0

    def _report_malformed(self, doc_file: DocFile, index: int, problem: str) -> None:
        """Count a skipped record; warn with its file and line for the first few of its file
        (:data:`MALFORMED_REPORTED_PER_FILE`), keep the rest for :meth:`_report_unreported`."""
        if self.replaying:  # already counted and reported before the checkpoint
            return
        self.malformed += 1
        name = doc_file.name
        in_file = self.malformed_in_file[name] = self.malformed_in_file.get(name, 0) + 1
        if in_file > MALFORMED_REPORTED_PER_FILE:
            self.unreported[name] = self.unreported.get(name, 0) + 1
            return
        unit = getattr(doc_file, "unit", "record")
        rest = (
            "; further ones in this file are counted, not listed"
            if in_file == MALFORMED_REPORTED_PER_FILE
            else ""
        )
        warnings.warn(
            f"{name}, {unit} {index + 1}: skipped malformed record ({problem}); "
            f"{self.malformed} malformed record(s) so far in data stream {self.stream}{rest}",
            MalformedRecordWarning,
            stacklevel=2,
        )

    def _report_damaged(
        self, doc_file: DocFile, last_good: int | None, error: BaseException
    ) -> None:
        """The rest of a damaged file is skipped: counted as one malformed record and warned
        about (:mod:`motlab.data.damaged`), except when re-reading for a resume."""
        if not self.replaying:
            self.malformed += 1
            tally = f"{self.malformed} malformed record(s) so far in data stream {self.stream}"
            warn_skipped(doc_file, last_good, error, tally)

    def _report_unreported(self, doc_file: DocFile) -> None:
        """One warning for the malformed records of a file not listed one by one, at the end
        of this stream's pass over it."""
        count = self.unreported.pop(doc_file.name, 0)
        if count:
            warnings.warn(
                f"{doc_file.name}: {count} more malformed records skipped in this pass over the "
                f"file ({self.malformed_in_file[doc_file.name]} in this file so far, "
                f"{self.malformed} in data stream {self.stream})",
                MalformedRecordWarning,
                stacklevel=2,
            )

    def _pull(self, n: int) -> list[str]:
        """Up to ``n`` documents out of the shuffle buffer (fewer only at the end of the data)."""
        out: list[str] = []
        while len(out) < n:
            if not self.source_done:
                try:
                    ordinal, text = next(self.source)
                except StopIteration:
                    self.source_done = True
                    continue
                self.next_ordinal = ordinal + 1
                item = self.buffer.push(ordinal, text)
            else:
                item = self.buffer.pop()
                if item is None:
                    break
            if item is not None:
                out.append(item[1])
        return out

    def batches(self) -> Iterator[torch.Tensor]:
        """Yield ``(batch_size, seq_len + 1)`` batches; the last one of a finite pass may be
        smaller. Tokens left over at the end of a finite pass (< seq_len + 1) are not yielded."""
        batch_size = self.ds.batch_size
        while self.cap is None or self.batches_done < self.cap:
            while self.packer.windows_ready() < batch_size:
                docs = self._pull(self.ds.encode_docs)
                if not docs:
                    break
                encodings = self.encode(docs, add_special_tokens=False)
                self.packer.add([e.ids for e in encodings])
            n = min(batch_size, self.packer.windows_ready())
            if n == 0:
                return
            batch_BU = self.packer.take(n)
            self.batches_done += 1
            yield batch_BU

    # -- state -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        ordinals = self.buffer.ordinals()
        anchor = self.next_ordinal - 1  # re-reading it puts the reader back where it was
        if len(ordinals):
            anchor = min(anchor, int(ordinals.min()))
        keep = 0
        for i, (first, _, _) in enumerate(self.segments):
            if first <= anchor:
                keep = i
        del self.segments[:keep]
        return {
            "format": STATE_FORMAT,
            "stream": [self.stream, self.n_streams],
            "config": self.ds.fingerprint(),
            "segments": [list(s) for s in self.segments],
            "next_ordinal": self.next_ordinal,
            "source_done": self.source_done,
            "batches": self.batches_done,
            "malformed": self.malformed,
            "packer": self.packer.state(),
            "buffer": self.buffer.state(),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        where = f"data stream {self.stream} of {self.n_streams}"
        if state["stream"] != [self.stream, self.n_streams]:
            raise ValueError(
                f"saved data state is for stream {state['stream'][0]} of {state['stream'][1]}, "
                f"this is {where}: resume with the same number of ranks and loader workers"
            )
        if state["config"] != self.ds.fingerprint():
            raise ValueError(
                f"saved data state does not match the data config ({state['config']} vs "
                f"{self.ds.fingerprint()}: seq_len, shuffle_buffer, seed, shuffle_files, cycle, "
                "n_files, text_field, eot_id, vocab_size)"
            )
        self.packer.load(state["packer"])
        self.next_ordinal = int(state["next_ordinal"])
        self.source_done = bool(state["source_done"])
        self.batches_done = int(state["batches"])
        self.malformed = int(state["malformed"])
        needed = set(np.frombuffer(state["buffer"]["ordinals"], dtype=np.int64).tolist())
        texts: dict[int, str] = {}
        if not state["segments"]:
            self.source = self._docs(0, 0, 0)
        else:
            first, epoch, slot = state["segments"][0]
            self.source = self._docs(epoch, slot, first)
            last = self.next_ordinal - 1
            if last >= first:
                self.replaying = True
                try:
                    for ordinal, text in self.source:
                        if ordinal in needed:
                            texts[ordinal] = text
                        if ordinal == last:
                            break
                    else:
                        raise RuntimeError(
                            f"{where}: the data ended before the saved position (document "
                            f"{last}); the data files changed since the checkpoint"
                        )
                finally:
                    self.replaying = False
        missing = needed - texts.keys()
        if missing:
            raise RuntimeError(
                f"{where}: {len(missing)} buffered documents not found when re-reading the data; "
                "the data files changed since the checkpoint"
            )
        self.buffer.load(state["buffer"], texts)
        if self.source_done:
            self.source = iter(())
