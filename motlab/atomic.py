"""Writing a file so that its name always holds either the old file or the whole new one.

The bytes go to a temporary file in the destination directory (so that the final move is a
rename within one filesystem, never a copy), which is flushed and ``fsync``-ed, then
``os.replace``-d onto the destination, and the directory is ``fsync``-ed so that the rename
itself survives a power loss. A write that fails (a full disk, an I/O error, an exception in the
caller) removes its temporary file and leaves the destination as it was. A process killed
mid-write (SIGKILL, a node failure) leaves only the temporary file, which no reader takes for the
real one: its name starts with a dot and ends with :data:`PARTIAL_SUFFIX`
(:func:`is_partial`) and names its writer; :func:`remove_partials` clears those a killed
process left.

Nothing goes through the system temporary directory (``TMPDIR``), which is often small on
cluster nodes and another filesystem than the destination.
"""

from __future__ import annotations

import errno
import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

PARTIAL_SUFFIX = ".partial"
"""The end of a temporary file's name: ``.last.ckpt~HOST~PID~RANDOM.partial`` beside
``last.ckpt``. Not ``.ckpt``, so that nothing that looks for checkpoints finds it; the host and
process say whose it is (:func:`is_abandoned`)."""

_SEP = "~"  # never in a host name or a number


def partial_path(path: Path) -> Path:
    """A fresh temporary name for a write of ``path``, in ``path``'s directory."""
    owner = _SEP.join([socket.gethostname(), str(os.getpid()), secrets.token_hex(4)])
    return path.with_name(f".{path.name}{_SEP}{owner}{PARTIAL_SUFFIX}")


def is_partial(path: str | Path) -> bool:
    """Whether ``path`` is named as the temporary file of an unfinished :func:`atomic_write`."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(PARTIAL_SUFFIX)


def is_abandoned(path: str | Path) -> bool:
    """Whether the partial file ``path`` was written by a process of this host that no longer
    runs (killed mid-write). A partial file of another host, or of a process that still runs, is
    not known to be abandoned."""
    parts = Path(path).name[: -len(PARTIAL_SUFFIX)].rsplit(_SEP, 3)
    if len(parts) != 4 or parts[1] != socket.gethostname() or not parts[2].isdigit():
        return False
    try:
        os.kill(int(parts[2]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # it runs, as another user
        return False
    return False


def partials(directory: str | Path) -> list[Path]:
    """The temporary files of unfinished writes in ``directory`` (none if it does not exist)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if is_partial(p) and p.is_file())


def remove_partials(directory: str | Path, abandoned_only: bool = False) -> list[Path]:
    """Remove the temporary files of unfinished writes in ``directory``; returns them.

    All of them for the start of the process that owns ``directory`` (a write in progress in
    another process would lose its file: it then fails, and the destination stays as it was);
    with ``abandoned_only``, those whose writer is known to be gone (:func:`is_abandoned`),
    which is safe anywhere.
    """
    removed = []
    for path in partials(directory):
        if abandoned_only and not is_abandoned(path):
            continue
        with suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def _open_exclusive(path: Path) -> BinaryIO:
    """A new file at ``path`` for writing (``O_EXCL``: never an existing file), with the
    permissions an ordinary ``open`` gives (``mkstemp``'s are owner-only)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    return os.fdopen(fd, "wb")


@contextmanager
def atomic_write(path: str | Path) -> Iterator[BinaryIO]:
    """``with atomic_write(path) as f: f.write(...)``: ``path`` gets all of it or nothing.

    On leaving the block without an exception the file is flushed, ``fsync``-ed and moved onto
    ``path``; on an exception (from the block, or from the flush, ``fsync`` or move) the
    temporary file is removed and the exception propagates. The directory is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = partial_path(path)
    try:
        with _open_exclusive(temporary) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        with suppress(FileNotFoundError):
            temporary.unlink()
        raise
    fsync_directory(path.parent)


def fsync_directory(directory: str | Path) -> None:
    """``fsync`` a directory, so that a rename or removal in it is on disk. Filesystems that
    cannot (some network ones answer EINVAL) are left alone: the rename is still atomic."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EACCES):
            raise
    finally:
        os.close(fd)
