"""The repositories the local hub serves: files on disk presented as hub repos.

A :class:`Repo` is a dataset or model repository at one commit. Its commit hash is derived from
the files' contents, so a server restarted on the same files answers with the same revision (a
run resumed against it finds the files it was reading). Files above :data:`LFS_THRESHOLD` are
presented as the hub presents LFS files: their tree entry carries an ``lfs`` block with the
sha256 and size, their ``resolve`` URL redirects to a content-addressed URL (as the hub
redirects to its CDN), and ``X-Linked-Etag`` / ``X-Linked-Size`` describe the target.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

LFS_THRESHOLD = 10_000
"""Bytes above which a file is served as an LFS file."""

C4_CARD = """---
pretty_name: C4
language:
- en
license: odc-by
task_categories:
- text-generation
configs:
- config_name: en
  default: true
  data_files:
  - split: train
    path: en/c4-train.*.json.gz
  - split: validation
    path: en/c4-validation.*.json.gz
---

# C4 (local copy)

A sample of C4 in its own layout, served by the test suite's local hub.
"""


@dataclass(frozen=True)
class HubFile:
    """One file of a repository, held in memory."""

    path: str
    """Path inside the repository, with ``/`` separators."""
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def blob_id(self) -> str:
        """The git blob id, as the tree API's ``oid``."""
        header = f"blob {len(self.data)}\0".encode()
        return hashlib.sha1(header + self.data).hexdigest()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def is_lfs(self) -> bool:
        return self.size > LFS_THRESHOLD

    @property
    def etag(self) -> str:
        """What the hub sends as the file's ETag: the sha256 of an LFS file, else its blob id."""
        return self.sha256 if self.is_lfs else self.blob_id

    def tree_entry(self) -> dict:
        entry: dict = {"type": "file", "oid": self.blob_id, "size": self.size, "path": self.path}
        if self.is_lfs:
            entry["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": 134}
        return entry


@dataclass
class Repo:
    """A repository at one commit."""

    repo_id: str
    repo_type: str  # "dataset" or "model"
    files: dict[str, HubFile] = field(default_factory=dict)

    @property
    def sha(self) -> str:
        digest = hashlib.sha1(f"{self.repo_type}/{self.repo_id}".encode())
        for path in sorted(self.files):
            digest.update(f"{path}\0{self.files[path].blob_id}\0".encode())
        return digest.hexdigest()

    def add(self, path: str, data: bytes) -> None:
        self.files[path] = HubFile(path, data)

    def folders(self) -> set[str]:
        out = set()
        for path in self.files:
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                out.add("/".join(parts[:i]))
        return out

    def folder_entry(self, path: str) -> dict:
        oid = hashlib.sha1(f"tree {self.sha} {path}".encode()).hexdigest()
        return {"type": "directory", "oid": oid, "path": path}

    def tree(self, folder: str, recursive: bool) -> list[dict]:
        """Entries under ``folder`` ("" = root), folders first as the hub lists them."""
        prefix = f"{folder}/" if folder else ""
        depth = folder.count("/") + 1 if folder else 0
        folders = sorted(
            f
            for f in self.folders()
            if f.startswith(prefix) and (recursive or f.count("/") == depth)
        )
        files = sorted(
            p for p in self.files if p.startswith(prefix) and (recursive or p.count("/") == depth)
        )
        return [self.folder_entry(f) for f in folders] + [self.files[p].tree_entry() for p in files]

    def entry(self, path: str) -> dict | None:
        path = path.strip("/")
        if path in self.files:
            return self.files[path].tree_entry()
        if path in self.folders():
            return self.folder_entry(path)
        return None

    def info(self) -> dict:
        """The ``/api/{type}s/{id}`` answer."""
        author = self.repo_id.split("/")[0] if "/" in self.repo_id else None
        info: dict = {
            "_id": hashlib.sha1(self.repo_id.encode()).hexdigest()[:24],
            "id": self.repo_id,
            "author": author,
            "sha": self.sha,
            "lastModified": "2024-01-01T00:00:00.000Z",
            "createdAt": "2020-01-01T00:00:00.000Z",
            "private": False,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": [{"rfilename": p} for p in sorted(self.files)],
            "usedStorage": sum(f.size for f in self.files.values()),
        }
        if self.repo_type == "model":
            info["modelId"] = self.repo_id
        card = self.files.get("README.md")
        if card is not None:
            info["cardData"] = _card_data(card.data.decode())
        return info


def _card_data(card: str) -> dict:
    """The YAML header of a dataset card, parsed (the hub returns it as ``cardData``)."""
    import yaml

    if not card.startswith("---"):
        return {}
    header = card.split("---", 2)[1]
    return yaml.safe_load(header) or {}


def first_records(data: bytes, n: int) -> bytes:
    """A gzip file of the first ``n`` lines of a gzipped JSON-lines file (mtime 0, so the same
    bytes every time)."""
    lines = []
    with gzip.open(io.BytesIO(data), "rb") as f:
        for line in f:
            lines.append(line)
            if len(lines) == n:
                break
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as g:
        g.write(b"".join(lines))
    return out.getvalue()


def c4_repo(data_dir: Path, repo_id: str = "allenai/c4", max_records: int | None = None) -> Repo:
    """``data_dir`` (C4's layout: ``en/c4-{split}.*.json.gz``) as the dataset repo ``repo_id``,
    with a dataset card whose YAML ``configs`` say which files make each split, as C4's does.

    ``max_records`` serves each data file cut to its first N records (small files: a short run
    then crosses many file boundaries).
    """
    repo = Repo(repo_id, "dataset")
    repo.add("README.md", C4_CARD.encode())
    found = sorted(data_dir.glob("*/c4-*.json.gz"))
    if not found:
        raise FileNotFoundError(f"{data_dir}: no */c4-*.json.gz files (C4's layout)")
    for path in found:
        data = path.read_bytes()
        if max_records is not None:
            data = first_records(data, max_records)
        repo.add(path.relative_to(data_dir).as_posix(), data)
    return repo


def folder_repo(folder: Path, repo_id: str, repo_type: str = "model") -> Repo:
    """Every file of ``folder`` (recursively) as a repository."""
    repo = Repo(repo_id, repo_type)
    for root, _, names in os.walk(folder):
        for name in sorted(names):
            path = Path(root) / name
            repo.add(path.relative_to(folder).as_posix(), path.read_bytes())
    if not repo.files:
        raise FileNotFoundError(f"{folder}: no files to serve as {repo_id!r}")
    return repo


def dump(obj: object) -> bytes:
    return json.dumps(obj).encode()
