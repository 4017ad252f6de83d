"""Hub data files read over HTTP, resumable at any byte, through network faults.

A training run streams C4 for days; connections get reset, servers answer 5xx or 429, reads
stall, and bodies end early. Each hub data file is read by :class:`HubStream`, a raw byte
stream over ``huggingface_hub``'s HTTP session (its endpoint, token, headers and offline
switch) that, when a transfer fails, logs the failure once — the file, the byte it had reached
and what went wrong — waits (bounded exponential backoff with jitter, honouring
``Retry-After`` up to the same bound) and asks for the rest of the file with a ``Range``
request, from the exact byte where it stopped. The bytes handed to the gzip and JSON layers are
therefore those of the file, in order, whatever happened on the wire, so the record (and token)
stream is the same as without faults. After :attr:`RetryPolicy.retries` failures in a row
without a byte of progress it raises :class:`HubReadError`, naming the endpoint, the file, the
byte and the failure; the run then saves its last finished step and ends.

What is retried: connection errors and resets, timeouts (a stall longer than
``RetryPolicy.timeout``), a body cut short (the client's ``RemoteProtocolError``, or a body
that ends before the file's size — known from ``Content-Range``, ``Content-Length`` or the
hub's ``X-Linked-Size`` — so a truncated body is never taken for the end of the file), and
the statuses 408, 429, 500, 502, 503, 504. What is not: 401/403 (gated or private: log in),
404, a file that changed on the server (its ETag), and anything wrong with the bytes themselves
— a gzip stream that ends early or fails its CRC, or bad JSON, in a body that arrived whole is
a damaged file, not a network fault, and surfaces from the layers above.

Why not the libraries' own retries: ``datasets`` streams hub files through ``HfFileSystem``,
whose reads retry in ``huggingface_hub``'s ``http_backoff`` (5 tries, 1-8 s, ``Retry-After``
honoured without bound, logged with the URL but not the byte, not configurable from
``HfFileSystem``) under ``datasets``' own read retries (20 tries at a fixed 5 s, 20 s after a
503 and 60 s after a 429, set only through module globals, logged without the file); a
streaming ``HfFileSystemStreamFile`` reconnects once without logging at all. None of them lets
a user set the budget, and a failure past it ends ``datasets``' iteration, so a resumed read
would restart the file. They also parse JSON differently (``datasets`` fails a whole file on
one bad record; motlab skips and reports it, as for local files). So the reading is motlab's,
on ``huggingface_hub``'s session; ``datasets`` still resolves which files make a split.
"""

from __future__ import annotations

import io
import logging
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from motlab.hub import HubUnreachableError, endpoint

log = logging.getLogger(__name__)

RETRY_STATUSES = (408, 429, 500, 502, 503, 504)
"""HTTP statuses that mean "try again later" (as ``huggingface_hub``'s ``http_backoff``)."""

_JITTER = random.Random()
"""Draws the jitter of the waits: its own generator, so that retries leave the global
``random`` state (which user code may have seeded) alone."""


@dataclass(frozen=True)
class RetryPolicy:
    """How long reading a hub file keeps trying through network faults (the data module's
    ``hub_retries``, ``hub_backoff``, ``hub_backoff_max`` and ``hub_timeout``)."""

    retries: int = 10
    """Failures in a row, without a byte of progress, before giving up."""
    backoff: float = 1.0
    """Seconds before the first retry; doubled for each further failure in a row."""
    backoff_max: float = 60.0
    """Longest wait before a retry, ``Retry-After`` included."""
    timeout: float = 30.0
    """Seconds to wait for a connection or for the next bytes before counting a failure."""

    def __post_init__(self) -> None:
        for name in ("retries", "backoff", "backoff_max"):
            if getattr(self, name) < 0:
                raise ValueError(f"--data.hub_{name} must be >= 0, got {getattr(self, name)}")
        if self.timeout <= 0:
            raise ValueError(f"--data.hub_timeout must be > 0, got {self.timeout}")

    def wait(self, failure: int, retry_after: float | None = None) -> float:
        """Seconds to wait after the ``failure``-th failure in a row: exponential, with jitter
        (so that many loader workers do not retry in step), never above ``backoff_max``."""
        step = min(self.backoff_max, self.backoff * 2.0 ** (failure - 1))
        wait = step / 2 + _JITTER.uniform(0, step / 2)
        if retry_after is not None:
            wait = max(wait, retry_after)
        return min(wait, self.backoff_max)


class HubReadError(HubUnreachableError):
    """A hub file could not be read: the network failed past the retry budget, or the hub
    refused the file. Raised in a DataLoader worker, it reaches the main process re-created
    from torch's wrapped message; :attr:`summary` is the original message either way."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.summary = _unwrap_worker_message(message, type(self))

    def __str__(self) -> str:
        return self.summary


def _unwrap_worker_message(message: str, cls: type) -> str:
    """The original message inside torch's "Caught X in DataLoader worker process N" text."""
    if not message.startswith("Caught ") or "Original Traceback" not in message:
        return message
    for name in (f"{cls.__module__}.{cls.__qualname__}: ", f"{cls.__qualname__}: "):
        at = message.rfind(name)
        if at >= 0:
            return message[at + len(name) :].rstrip()
    return message


class _Fault(Exception):
    """A transfer failure worth retrying; ``retry_after`` from the server if it said."""

    def __init__(self, what: str, retry_after: float | None = None) -> None:
        super().__init__(what)
        self.retry_after = retry_after


def _http() -> tuple[Any, Any]:
    """``huggingface_hub``'s shared HTTP session and the client module it comes from (``httpx``
    in huggingface_hub 1.x, ``httpx2`` in 2.x), for its exception classes."""
    from huggingface_hub import get_session

    session = get_session()
    return session, sys.modules[type(session).__module__.partition(".")[0]]


class HubStream(io.RawIOBase):
    """The bytes of one hub file (``url``, its ``resolve`` URL), read with retries.

    ``name`` is how messages name the file (its ``hf://`` path).
    """

    def __init__(self, name: str, url: str, policy: RetryPolicy) -> None:
        super().__init__()
        self.name = name
        self.url = url
        self.policy = policy
        self.pos = 0
        self.size: int | None = None
        self.etag: str | None = None
        self._response: Any = None
        self._chunks: Iterator[bytes] | None = None
        self._pending = b""

    # -- io.RawIOBase ------------------------------------------------------------------------

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self.pos
        elif whence == io.SEEK_END:
            if self.size is None:
                raise io.UnsupportedOperation("seek from the end of a hub file of unknown size")
            offset += self.size
        if offset < 0:
            raise ValueError(f"negative seek position {offset}")
        if offset != self.pos:
            self._drop()  # the next read asks for the file from the new position
            self.pos = offset
        return self.pos

    def close(self) -> None:
        self._drop()
        super().close()

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        failures = 0
        while True:
            try:
                return self._read_some(view)
            except _Fault as fault:
                failures += 1
                self._drop()
                if failures > self.policy.retries:
                    raise HubReadError(self._give_up_message(str(fault), failures - 1)) from None
                wait = self.policy.wait(failures, fault.retry_after)
                log.warning(
                    "%s, byte %d%s: %s; retry %d/%d in %.2f s",
                    self.name,
                    self.pos,
                    f" of {self.size}" if self.size is not None else "",
                    fault,
                    failures,
                    self.policy.retries,
                    wait,
                )
                time.sleep(wait)

    # -- one attempt ---------------------------------------------------------------------------

    def _read_some(self, view: memoryview) -> int:
        """Up to ``len(view)`` bytes from the current position; 0 only at the file's end.
        Raises :class:`_Fault` for anything worth retrying."""
        if not self._pending:
            if self.size is not None and self.pos >= self.size:
                return 0
            if self._chunks is None:
                self._connect()
                if self._chunks is None:  # nothing left to send (416 at the end)
                    return 0
            _, http = _http()
            try:
                self._pending = next(self._chunks, b"")
            except (http.TimeoutException, http.NetworkError, http.RemoteProtocolError) as e:
                raise _Fault(_describe(e, self.policy)) from None
            if not self._pending:  # the body ended
                self._drop()
                if self.size is not None and self.pos < self.size:
                    raise _Fault(f"the body ended early, at byte {self.pos} of {self.size}")
                self.size = self.pos
                return 0
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        self.pos += n
        return n

    def _connect(self) -> None:
        """Ask for the file from ``pos`` on; sets ``size``/``etag`` and the body iterator."""
        from huggingface_hub.utils import build_hf_headers, hf_raise_for_status

        session, http = _http()
        headers = build_hf_headers()  # user agent, and the token of HF_TOKEN / the login
        headers["Range"] = f"bytes={self.pos}-"
        headers["Accept-Encoding"] = "identity"  # the file's own bytes, never re-encoded
        try:
            request = session.build_request(
                "GET", self.url, headers=headers, timeout=self.policy.timeout
            )
            response = session.send(request, stream=True)
        except (http.TimeoutException, http.NetworkError, http.RemoteProtocolError) as e:
            raise _Fault(_describe(e, self.policy)) from None
        status = response.status_code
        if status in RETRY_STATUSES:
            response.close()
            retry_after = _retry_after(response.headers.get("Retry-After"))
            said = f", Retry-After {response.headers['Retry-After']} s" if retry_after else ""
            raise _Fault(f"HTTP {status}{said}", retry_after)
        if status == 416:  # nothing from pos on: pos is the end of the file
            response.close()
            self.size = self.pos
            return
        if status not in (200, 206):
            try:
                hf_raise_for_status(response)
            except Exception as e:
                raise HubReadError(
                    f"cannot read {self.name} from the hub at {endpoint()}: {_why(e, status)}"
                ) from e
            finally:
                response.close()
            raise HubReadError(f"cannot read {self.name}: unexpected HTTP {status}")
        self._check_identity(response)
        self._response = response
        chunks = response.iter_raw()  # as the bytes arrive: a fault loses none already here
        if status == 200 and self.pos > 0:
            chunks = _skip(chunks, self.pos)  # a server that ignored the Range header
        self._chunks = chunks

    def _check_identity(self, response: Any) -> None:
        """Learn the file's size; refuse a file that changed between two requests."""
        redirect = response.history[0].headers if response.history else {}
        linked = redirect.get("X-Linked-Size") or response.headers.get("X-Linked-Size")
        content_range = response.headers.get("Content-Range", "")
        total = ""
        if response.status_code == 206:
            first = content_range.removeprefix("bytes ").partition("-")[0]
            if first != str(self.pos):
                response.close()
                raise HubReadError(
                    f"cannot read {self.name}: asked the hub at {endpoint()} for its bytes from "
                    f"{self.pos} on, it answered with {content_range or 'no Content-Range'}"
                )
            total = content_range.rpartition("/")[2]
        length = response.headers.get("Content-Length") if response.status_code == 200 else None
        for value in (total, length, linked):
            if value and value.isdigit():
                self.size = int(value)
                break
        etag = redirect.get("X-Linked-Etag") or response.headers.get("ETag")
        if etag is not None:
            if self.etag is not None and etag != self.etag:
                response.close()
                raise HubReadError(
                    f"{self.name} changed on the hub at {endpoint()} while it was read (ETag "
                    f"{self.etag} became {etag}); restart the run to read the new version"
                )
            self.etag = etag

    def _drop(self) -> None:
        """Close the current response (if any); the next read reconnects."""
        if self._response is not None:
            try:
                self._response.close()
            except Exception:  # a connection already reset cannot be closed cleanly
                pass
        self._response = None
        self._chunks = None
        self._pending = b""

    def _give_up_message(self, last: str, retries: int) -> str:
        size = f" of {self.size}" if self.size is not None else ""
        return (
            f"cannot read {self.name} from the hub at {endpoint()}: at byte {self.pos}{size}, "
            f"{last}, after {retries} retries. The hub or the network is down; once it is back, "
            "resume with `--ckpt_path last`. To wait longer before giving up, raise "
            "--data.hub_retries or --data.hub_backoff_max"
        )


def _skip(chunks: Iterator[bytes], n: int) -> Iterator[bytes]:
    """``chunks`` without their first ``n`` bytes."""
    for chunk in chunks:
        if n >= len(chunk):
            n -= len(chunk)
            continue
        yield chunk[n:]
        n = 0


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (the delay form; an HTTP date counts as absent)."""
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _describe(error: Exception, policy: RetryPolicy) -> str:
    """A short, specific description of a transfer failure for the retry log."""
    kind = type(error).__name__
    text = str(error) or kind
    if "Timeout" in kind:
        return f"no answer for {policy.timeout:g} s ({kind})"
    if kind == "RemoteProtocolError":
        return f"the body was cut short ({text})"
    return f"{text} ({kind})"


def _why(error: Exception, status: int) -> str:
    """What a non-retryable answer means for the user."""
    if status in (401, 403):
        return (
            f"HTTP {status}: access refused (a gated or private dataset). Log in with "
            "`huggingface-cli login` or set HF_TOKEN to a token with access to it, and accept "
            "its terms on its hub page"
        )
    if status == 404:
        return "HTTP 404: no such file (the dataset changed since its file list was read?)"
    return f"HTTP {status}: {str(error).splitlines()[0]}"
