"""Data files that cannot be read to their end: a gzip stream cut short (a partial copy or
download), a file that is not gzip, an unreadable file, a parquet file with a broken footer.

One policy, the one malformed records have (:mod:`motlab.data.stream`):

* found **before training** — ``setup`` reads the first records of every local file
  (:meth:`motlab.data.sources.DocFile.check`) — it is an error (:class:`DamagedFileError`)
  naming the file and its last good record, as a file none of whose first records holds text
  is;
* found **while training** (the damage lies further into the file, or a file changed under a
  running job), the rest of the file is skipped with a warning (:class:`DamagedFileWarning`)
  naming the file, its last good record and what failed, and counted as one malformed record
  (``datamodule.malformed_records``), as a malformed record is skipped and counted. It is never
  an exception out of a loader worker. A file damaged the same way is skipped at the same
  record on every pass and on the re-reading of a resume, so exact resume holds across the
  skipped tail.

A network fault is not a damaged file: :func:`is_damage` leaves the errors of the hub and the
network (:func:`motlab.hub.connection_errors`) to the retries and errors of whoever reads it.
"""

from __future__ import annotations

import json
import warnings
import zlib
from collections.abc import Callable, Iterator
from typing import Any

from motlab import hub


class DamagedFileError(OSError):
    """A data file found damaged before training; the message names it and its last good
    record."""


class DamagedFileWarning(UserWarning):
    """The rest of a damaged data file was skipped (counted as a malformed record; a warning
    class of its own, so that it can be filtered on its own)."""


def is_damage(error: BaseException) -> bool:
    """Whether ``error``, raised while reading a data file, says the file cannot be read to its
    end (truncated or corrupt compression, not the format it is named as, unreadable) rather
    than a fault of the network or a bug."""
    if isinstance(error, hub.connection_errors()):
        return False
    if isinstance(error, (EOFError, zlib.error, OSError)):
        return True
    if isinstance(error, ValueError) and isinstance(error.__cause__, json.JSONDecodeError):
        return True  # a .json array cut short (sources re-raises json's error naming the file)
    return _is_arrow_error(error)


def _is_arrow_error(error: BaseException) -> bool:
    import sys

    pa = sys.modules.get("pyarrow")  # only files read with pyarrow raise its errors
    return pa is not None and isinstance(error, pa.ArrowException)


def damage_message(name: str, unit: str, last_good: int | None, error: BaseException) -> str:
    """``NAME cannot be read past line 12, its last good record (EOFError: ...)``: the file, its
    last good record (1-based, in the file's own unit) and what failed."""
    if last_good is None:
        where = "cannot be read at all"
    else:
        where = f"cannot be read past {unit} {last_good + 1}, its last good record"
    detail = (str(error).splitlines() or [""])[0][:200]
    return f"{name} {where} ({type(error).__name__}: {detail or 'no detail'})"


def check_error(name: str, unit: str, last_good: int | None, error: BaseException) -> Exception:
    """The error for a file found damaged before training (see the module docstring)."""
    return DamagedFileError(
        f"data file {damage_message(name, unit, last_good, error)}: replace it with a whole "
        "copy (download it again), or leave it out of the data (motlab reads the first records "
        "of every file before training; damage found later skips the rest of the file)"
    )


def read_until_damaged(
    doc_file: Any,
    text_field: str,
    stride: int,
    offset: int,
    on_damage: Callable[[Any, int | None, BaseException], None],
) -> Iterator[tuple[int, str | None, str | None]]:
    """``doc_file.read(...)`` of a :class:`~motlab.data.sources.DocFile`, ending at the first
    damage: ``on_damage(file, last good record index or None, error)`` is told, and the rest of
    the file is not read. Any other error propagates."""
    last: int | None = None
    try:
        for record in doc_file.read(text_field, stride, offset):
            last = record[0]
            yield record
    except Exception as e:
        if not is_damage(e):
            raise
        on_damage(doc_file, last, e)


def warn_skipped(doc_file: Any, last_good: int | None, error: BaseException, tally: str) -> None:
    """The warning for the skipped rest of a damaged file (``tally``: the stream's count)."""
    unit = getattr(doc_file, "unit", "record")
    warnings.warn(
        f"{damage_message(doc_file.name, unit, last_good, error)}: skipped the rest of the file, "
        f"counted as one malformed record; {tally}",
        DamagedFileWarning,
        stacklevel=3,
    )
