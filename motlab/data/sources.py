"""Where documents come from: the Hugging Face hub, a local copy in C4's layout, or explicit globs.

Every source is resolved to an ordered list of :class:`DocFile` objects (one per shard file).
Sharding (:mod:`motlab.data.sharding`) hands whole files, or every n-th record of a file, to
each loader stream, and the stream reads them with :meth:`DocFile.read`. A file is the unit of
work because it is also the unit of random access: to resume, a stream re-opens a file and
skips records, which costs reading but no tokenizing.

Local JSON lines are read with ``gzip`` + ``json`` from the standard library rather than through
``datasets``: it is faster than the tokenizer by two orders of magnitude, gives line numbers for
malformed records (``datasets`` fails the whole file on one bad line), and lets a stream parse
only the records it keeps. The hub is always streamed through ``datasets``
(``load_dataset(..., streaming=True)``), one file per :class:`HubShard`.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import IO, Any

from motlab import hub
from motlab.hub import HubUnreachableError

Record = tuple[int, str | None, str | None]
"""``(record_index, text, problem)``: ``text`` is None exactly when ``problem`` says why."""

CHECK_RECORDS = 20
"""Records :meth:`DocFile.check` reads from the start of a file: if none of them holds text in
``data.text_field``, the file fails before training (once, with the keys it does have) rather
than warning about each of its records."""

JSON_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")
PARQUET_SUFFIXES = (".parquet",)

OFFLINE_HINT = (
    "To train without the hub, point the data module at local files: "
    "`--data.path DIR` for a copy in C4's layout (DIR/{config}/c4-train.*.json.gz and "
    "DIR/{config}/c4-validation.*.json.gz), or `--data.train_files GLOB --data.val_files GLOB` "
    "for json/jsonl/json.gz/parquet files; and at a local tokenizer with "
    "`--data.tokenizer PATH/tokenizer.json`."
)


class DocFile:
    """One shard file of documents, read sequentially from the start."""

    name: str
    unit = "record"  # what a record index counts, for messages

    def read(self, text_field: str, stride: int = 1, offset: int = 0) -> Iterator[Record]:
        """Yield the records whose index ``i`` has ``i % stride == offset``, in file order.

        Malformed records are yielded with ``text=None`` and a ``problem`` string instead of being
        dropped here, so the caller decides how to count and report them.
        """
        raise NotImplementedError

    def check(self, text_field: str) -> None:
        """Fail now, before training, if the file cannot be read, or if none of its first
        :data:`CHECK_RECORDS` records holds text in ``text_field`` (cheap: no full read)."""


def _check_text(obj: Any, text_field: str) -> tuple[str | None, str | None]:
    """Return ``(text, None)`` for a usable record, else ``(None, why)``."""
    if not isinstance(obj, dict):
        return None, f"expected a JSON object, got {type(obj).__name__}"
    if text_field not in obj:
        return None, f"no {text_field!r} field"
    text = obj[text_field]
    if not isinstance(text, str):
        return None, f"{text_field!r} is {type(text).__name__}, not a string"
    return text, None


@dataclass(frozen=True)
class JsonLinesFile(DocFile):
    """A ``.jsonl``/``.json`` file (optionally gzipped) with one JSON object per line.

    A ``.json`` file whose first non-blank character is ``[`` is read as one JSON array instead.
    Blank lines are not records and are skipped silently; every other line is a record.
    """

    name: str
    unit = "line"

    def _open(self) -> IO[bytes]:
        if self.name.endswith(".gz"):
            return gzip.open(self.name, "rb")
        return open(self.name, "rb")

    def check(self, text_field: str) -> None:
        try:
            with self._open() as f:
                sample = list(islice(self._parsed(f), CHECK_RECORDS))
        except OSError as e:
            raise OSError(f"cannot read data file {self.name!r}: {e}") from e
        _require_text(self.name, self.unit, sample, text_field)

    def read(self, text_field: str, stride: int = 1, offset: int = 0) -> Iterator[Record]:
        with self._open() as f:
            for i, obj, problem in self._parsed(f, stride, offset):
                if problem is not None:
                    yield i, None, problem
                    continue
                text, problem = _check_text(obj, text_field)
                yield i, text, problem

    def _parsed(
        self, f: IO[bytes], stride: int = 1, offset: int = 0
    ) -> Iterator[tuple[int, Any, str | None]]:
        """``(index, object, None)`` per record, or ``(index, None, problem)`` for bad JSON."""
        if self.name.endswith((".json", ".json.gz")) and _starts_with_bracket(f):
            try:
                items = json.load(f)
            except ValueError as e:
                raise ValueError(f"{self.name}: not valid JSON lines nor a JSON array ({e})") from e
            for i, obj in enumerate(items):
                if i % stride == offset:
                    yield i, obj, None
            return
        for i, line in enumerate(f):
            if i % stride != offset or not line.strip():
                continue
            try:
                yield i, json.loads(line), None
            except ValueError as e:
                yield i, None, f"invalid JSON ({e})"


def _require_text(
    name: str, unit: str, sample: list[tuple[int, Any, str | None]], text_field: str
) -> None:
    """Raise if no record of ``sample`` (a file's first ones) holds text in ``text_field``,
    naming the file, the option and the keys the records do have."""
    if not sample:
        raise ValueError(f"data file {name!r} holds no records (only blank lines)")
    problems: Counter[str] = Counter()
    keys: dict[str, None] = {}  # in order of first appearance
    for _, obj, problem in sample:
        if problem is None:
            text, problem = _check_text(obj, text_field)
            if text is not None:
                return
            if isinstance(obj, dict):
                keys.update(dict.fromkeys(map(str, obj)))
        problems[problem or "malformed"] += 1
    why = problems.most_common(1)[0][0]
    has = f"; the records' keys are {', '.join(map(repr, keys))}" if keys else ""
    raise ValueError(
        f"data file {name!r}: none of its first {len(sample)} {unit}s holds text in the field "
        f"{text_field!r} (--data.text_field): {why}{has}. Set --data.text_field to the field "
        "that holds the documents' text, or fix the file"
    )


def _starts_with_bracket(f: IO[bytes]) -> bool:
    """Peek at the first non-blank byte and rewind (a JSON array rather than JSON lines?)."""
    head = f.read(4096).lstrip()
    f.seek(0)
    return head[:1] == b"["


@dataclass(frozen=True)
class ParquetFile(DocFile):
    """A parquet file; only the text column is read. Record index = row index."""

    name: str
    unit = "row"

    def check(self, text_field: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            schema = pq.read_schema(self.name)
        except Exception as e:
            raise OSError(f"cannot read parquet file {self.name!r}: {e}") from e
        if text_field not in schema.names:
            raise ValueError(
                f"{self.name!r} has no {text_field!r} column (columns: {schema.names}); set "
                "--data.text_field to the column that holds the documents' text"
            )
        kind = schema.field(text_field).type
        is_view = getattr(pa.types, "is_string_view", lambda _: False)  # pyarrow >= 16
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or is_view(kind)):
            raise ValueError(
                f"{self.name!r}: column {text_field!r} holds {kind}, not strings; set "
                "--data.text_field to the column that holds the documents' text"
            )

    def read(self, text_field: str, stride: int = 1, offset: int = 0) -> Iterator[Record]:
        import pyarrow.parquet as pq

        batches = pq.ParquetFile(self.name).iter_batches(batch_size=1024, columns=[text_field])
        values = (value for batch in batches for value in batch.column(0).to_pylist())
        yield from _texts(values, text_field, stride, offset)


@dataclass(frozen=True)
class HubShard(DocFile):
    """One data file of a streamed ``datasets.IterableDataset`` (e.g. one C4 ``json.gz`` shard).

    Iterated with ``IterableDataset.iter`` rather than ``iter(dataset)``: inside a DataLoader worker
    the latter re-shards by worker id on its own, which would starve all workers but one.
    """

    name: str
    dataset: Any  # datasets.IterableDataset over all files of the split
    index: int

    def read(self, text_field: str, stride: int = 1, offset: int = 0) -> Iterator[Record]:
        shard = self.dataset.shard(num_shards=self.dataset.num_shards, index=self.index)

        def values() -> Iterator[Any]:
            for batch in shard.iter(batch_size=256):
                if text_field not in batch:
                    raise KeyError(f"{self.name}: no {text_field!r} column (has {sorted(batch)})")
                yield from batch[text_field]

        yield from _texts(values(), text_field, stride, offset)


def _texts(values: Iterator[Any], text_field: str, stride: int, offset: int) -> Iterator[Record]:
    """Records ``(index, text, problem)`` of every ``stride``-th value from ``offset``."""
    for i, value in enumerate(values):
        if i % stride != offset:
            continue
        if isinstance(value, str):
            yield i, value, None
        else:
            yield i, None, f"{text_field!r} is {type(value).__name__}, not a string"


def _as_doc_file(path: str) -> DocFile:
    if path.endswith(JSON_SUFFIXES):
        return JsonLinesFile(path)
    if path.endswith(PARQUET_SUFFIXES):
        return ParquetFile(path)
    raise ValueError(
        f"unsupported data file {path!r}: expected one of {', '.join(JSON_SUFFIXES)}, .parquet"
    )


def glob_files(patterns: str | Sequence[str], what: str) -> list[DocFile]:
    """Expand glob patterns (or plain paths) to files, sorted, failing loudly on empty matches.

    ``what`` names the option in error messages (e.g. ``"--data.train_files"``).
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    if not patterns:
        raise ValueError(f"{what} is empty")
    found: list[str] = []
    empty: list[str] = []
    for pattern in patterns:
        expanded = os.path.expanduser(pattern)
        if os.path.isdir(expanded):
            raise IsADirectoryError(
                f"{what}: {pattern!r} is a directory; give files or a glob like "
                f"'{pattern.rstrip('/')}/*.jsonl'"
            )
        matches = sorted(p for p in glob.glob(expanded, recursive=True) if os.path.isfile(p))
        if not matches:
            empty.append(pattern)
        found.extend(matches)
    if empty:
        raise FileNotFoundError(f"{what}: no files match {', '.join(map(repr, empty))}")
    files = [_as_doc_file(p) for p in dict.fromkeys(found)]  # drop duplicates, keep order
    for f in files:
        if os.path.getsize(f.name) == 0:
            raise ValueError(f"{what}: {f.name!r} is empty")
    return files


def local_c4_files(path: str, config: str, split: str) -> list[DocFile]:
    """Files of ``split`` (``train``/``validation``) in a local copy of C4's layout.

    Looks for ``PATH/CONFIG/c4-SPLIT.*.json.gz`` (the hub's layout), then ``PATH/c4-SPLIT.*``.
    """
    root = os.path.expanduser(path)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"--data.path {path!r} is not a directory")
    candidates = [
        os.path.join(root, config, f"c4-{split}.*.json.gz"),
        os.path.join(root, f"c4-{split}.*.json.gz"),
        os.path.join(root, config, f"c4-{split}.*.json"),
    ]
    for pattern in candidates:
        if glob.glob(pattern):
            return glob_files(pattern, f"--data.path ({split})")
    raise FileNotFoundError(
        f"--data.path {path!r}: no {split} files; looked for "
        + ", ".join(repr(os.path.relpath(c, root)) for c in candidates)
    )


def check_streamable(dataset: str, config: str, split: str) -> None:
    """Raise :class:`HubUnreachableError` within seconds if ``dataset`` cannot be streamed
    (:func:`motlab.hub.check_hub`, saying what to use instead)."""
    hub.check_hub(
        f"stream {dataset!r} (config {config!r}, split {split!r})",
        OFFLINE_HINT.format(config=config),
    )


def hub_files(dataset: str, config: str, split: str) -> list[DocFile]:
    """Stream ``dataset``/``config``/``split`` from the hub with ``datasets``, one entry per file.

    Raises :class:`HubUnreachableError` quickly, with instructions for local files, when the hub
    cannot be reached.
    """
    where = f"{dataset!r} (config {config!r}, split {split!r})"
    check_streamable(dataset, config, split)
    import datasets

    try:
        ds = datasets.load_dataset(dataset, config, split=split, streaming=True)
    except hub.connection_errors() as e:
        raise HubUnreachableError(
            f"cannot stream {where} from the Hugging Face hub: {e}. "
            + OFFLINE_HINT.format(config=config)
        ) from e
    return streamed_files(ds, f"hf://{dataset}/{config}/{split}")


def streamed_files(ds: Any, label: str) -> list[DocFile]:
    """One :class:`HubShard` per data file of a streamed ``datasets.IterableDataset``."""
    n = ds.num_shards
    return [HubShard(f"{label}#{i:05d}-of-{n:05d}", ds, i) for i in range(n)]


def describe(files: Sequence[DocFile], limit: int = 3) -> str:
    """Short human description of a file list for logs."""
    names = [os.path.basename(f.name) for f in files[:limit]]
    more = f", ... ({len(files)} files)" if len(files) > limit else ""
    return ", ".join(names) + more


__all__ = [
    "DocFile",
    "HubShard",
    "HubUnreachableError",
    "JsonLinesFile",
    "ParquetFile",
    "Record",
    "describe",
    "glob_files",
    "hub_files",
    "check_streamable",
    "local_c4_files",
    "streamed_files",
]
