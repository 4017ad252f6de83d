"""Fixtures for the data tests: small JSON-lines files cut from the offline C4 sample."""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

from motlab.data.tokenizer import load_tokenizer


@pytest.fixture(scope="session")
def tok(tokenizer_path: Path) -> Tokenizer:
    return load_tokenizer(str(tokenizer_path))


@pytest.fixture(scope="session")
def c4_docs(c4_dir: Path) -> list[str]:
    """The first 100 documents of the first C4 train shard."""
    path = sorted((c4_dir / "en").glob("c4-train.*.json.gz"))[0]
    docs = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            docs.append(json.loads(line)["text"])
            if len(docs) == 100:
                break
    return docs


def write_jsonl(path: Path, texts: Sequence[str]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for text in texts:
            f.write(json.dumps({"text": text, "url": "u"}) + "\n")
    return path


@pytest.fixture(scope="session")
def small_files(tmp_path_factory: pytest.TempPathFactory, c4_docs: list[str]) -> list[Path]:
    """Five jsonl files of 12 short-ish documents each (plus one long document), so 4 streams
    get one whole file each and split the fifth record-wise."""
    root = tmp_path_factory.mktemp("small")
    texts = [t[:600] for t in c4_docs[:59]] + ["\n\n".join(c4_docs[60:66])]
    return [write_jsonl(root / f"part-{i}.jsonl", texts[i * 12 : (i + 1) * 12]) for i in range(5)]


@pytest.fixture(scope="session")
def small_texts(small_files: list[Path]) -> list[str]:
    out = []
    for path in small_files:
        out += [json.loads(line)["text"] for line in path.read_text().splitlines()]
    return out


def _unpack(windows: list[torch.Tensor], leftover: Sequence[int], eot: int) -> list[tuple]:
    """Undo the packing of one stream into its documents.

    The stream is the inputs (all but the last token) of each window followed by the tokens
    left in the packer; every document in it is followed by end-of-text.
    """
    tokens: list[int] = []
    for w in windows:
        tokens += w[:-1].tolist()
    tokens += list(leftover)
    docs, cur = [], []
    for t in tokens:
        if t == eot:
            docs.append(tuple(cur))
            cur = []
        else:
            cur.append(t)
    assert not cur, "a stream must end with end-of-text"
    return docs


@pytest.fixture(scope="session")
def unpack():
    """``unpack(windows, leftover, eot) -> documents`` (token tuples) of one packed stream."""
    return _unpack


@pytest.fixture(scope="session")
def jsonl_writer():
    """``write(path, texts) -> path``: a JSON-lines file with a ``text`` field per record."""
    return write_jsonl
