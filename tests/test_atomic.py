"""Atomic file writes: the destination holds the old file or the whole new one, never a part,
and nothing goes through the system temporary directory."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from full_disk import fill_after

from motlab.atomic import atomic_write, is_abandoned, is_partial, partials, remove_partials
from motlab.rundir import checkpoint_files, resume_candidates


def test_a_write_replaces_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "deep/dir/last.ckpt"
    with atomic_write(path) as f:
        f.write(b"one")
    with atomic_write(path) as f:
        f.write(b"two")
        assert path.read_bytes() == b"one"  # not replaced until the write is done
        (partial,) = partials(path.parent)
        assert partial.parent == path.parent and is_partial(partial)
    assert path.read_bytes() == b"two"
    assert partials(path.parent) == []
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()  # as open() would make it


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_failed_write_leaves_the_old_file_and_no_partial(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    path.write_bytes(b"intact")
    with pytest.raises(RuntimeError, match="boom"), atomic_write(path) as f:
        f.write(b"half")
        raise RuntimeError("boom")
    assert path.read_bytes() == b"intact"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_a_full_disk_leaves_the_old_file_and_no_partial(tmp_path, monkeypatch) -> None:
    path = tmp_path / "last.ckpt"
    path.write_bytes(b"intact")
    fill_after(monkeypatch, room=5)
    with pytest.raises(OSError) as raised, atomic_write(path) as f:
        f.write(b"0123456789")
    assert raised.value.errno == errno.ENOSPC
    assert path.read_bytes() == b"intact"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_nothing_goes_through_the_temporary_directory(tmp_path, monkeypatch) -> None:
    """A TMPDIR that cannot be written to (here: one that does not exist) changes nothing."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-tmp"))
    with atomic_write(tmp_path / "x.ckpt") as f:
        f.write(b"data")
    assert (tmp_path / "x.ckpt").read_bytes() == b"data"


def test_what_a_killed_writer_left_is_never_a_checkpoint(tmp_path: Path) -> None:
    """A partial file (as a SIGKILL mid-write leaves it) is not found as a checkpoint, and is
    removed by name."""
    ckpts = tmp_path / "version_0/checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "step=0000002.ckpt").write_bytes(b"x")
    left = ckpts / ".last.ckpt.123-abcd1234.partial"
    left.write_bytes(b"half")
    assert is_partial(left) and not is_partial(ckpts / "step=0000002.ckpt")
    assert checkpoint_files(tmp_path) == [ckpts / "step=0000002.ckpt"]
    assert resume_candidates(tmp_path) == [ckpts / "step=0000002.ckpt"]
    assert remove_partials(ckpts) == [left]
    assert not left.exists() and (ckpts / "step=0000002.ckpt").exists()


def test_a_partial_file_is_abandoned_only_when_its_writer_is_gone(tmp_path: Path) -> None:
    """What a killed process of this host left may be removed anywhere; what a running process
    or another host writes is left alone."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = socket.gethostname()
    dead = tmp_path / f".last.ckpt~{host}~{gone.pid}~00ff00ff.partial"
    alive = tmp_path / f".last.ckpt~{host}~{os.getpid()}~00ff00ff.partial"
    elsewhere = tmp_path / f".last.ckpt~other-{host}~{gone.pid}~00ff00ff.partial"
    for path in (dead, alive, elsewhere):
        path.write_bytes(b"half")
    assert [is_abandoned(p) for p in (dead, alive, elsewhere)] == [True, False, False]
    assert remove_partials(tmp_path, abandoned_only=True) == [dead]
    assert sorted(partials(tmp_path)) == sorted([alive, elsewhere])
    with atomic_write(tmp_path / "last.ckpt"):  # this process's own name
        (mine,) = set(partials(tmp_path)) - {alive, elsewhere}
        assert not is_abandoned(mine) and f"~{host}~{os.getpid()}~" in mine.name
