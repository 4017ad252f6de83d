"""The hub file reader (:class:`motlab.data.remote.HubStream`) against a server that
misbehaves in ways the local hub's faults do not: it ignores ``Range``, answers another range
than the one asked for, serves a file that changed, refuses mid-file; and the retry policy's
waits. In-process, over HTTP on 127.0.0.1 (the reader is given the file's URL; only the
clients' offline switch is turned off, for these requests)."""

from __future__ import annotations

import gzip
import io
import logging
import random
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from motlab.data.remote import HubReadError, HubStream, RetryPolicy

DATA = gzip.compress(random.Random(0).randbytes(40_000), mtime=0)
FAST = RetryPolicy(retries=3, backoff=0.01, backoff_max=0.02, timeout=5.0)


class Scripted(BaseHTTPRequestHandler):
    """Answers each GET with the next scripted answer (then correctly): a dict with ``cut``
    (send that many bytes of the asked range, then close: a body cut short), ``status``,
    ``etag``, ``ignore_range`` (200 and the whole file) or ``range_from`` (206 from that byte,
    whatever was asked)."""

    protocol_version = "HTTP/1.1"
    server: FileServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802
        srv = self.server
        with srv.lock:
            answer = srv.script.pop(0) if srv.script else {}
            srv.ranges.append(self.headers.get("Range"))
        size = len(srv.data)
        if "status" in answer:
            self.send_response(answer["status"])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        start = int(m.group(1)) if m and not answer.get("ignore_range") else 0
        start = answer.get("range_from", start)
        if start >= size:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if m and not answer.get("ignore_range") else 200)
        if m and not answer.get("ignore_range"):
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.send_header("Content-Length", str(size - start))
        self.send_header("ETag", f'"{answer.get("etag", "v1")}"')
        self.end_headers()
        body = srv.data[start:]
        if "cut" in answer:
            self.wfile.write(body[: answer["cut"]])
            self.wfile.flush()
            self.close_connection = True  # the body ends short of its Content-Length
            return
        self.wfile.write(body)


class FileServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, data: bytes) -> None:
        super().__init__(("127.0.0.1", 0), Scripted)
        self.data = data
        self.script: list[dict] = []
        self.ranges: list[str | None] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/c4-train.00000-of-00008.json.gz"


@pytest.fixture
def server(monkeypatch) -> Iterator[FileServer]:
    from huggingface_hub import constants

    # The suite runs the clients offline; these requests go to 127.0.0.1 only.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    srv = FileServer(DATA)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def read_all(srv: FileServer, policy: RetryPolicy = FAST) -> bytes:
    with io.BufferedReader(HubStream("hf://datasets/x/c4@abc/en/f.json.gz", srv.url, policy)) as f:
        return f.read()


def test_a_body_cut_short_is_resumed_from_the_byte_reached(server, caplog) -> None:
    server.script = [{"cut": 1000}, {"cut": 500}]
    with caplog.at_level(logging.WARNING, "motlab.data.remote"):
        assert read_all(server) == DATA
    assert server.ranges == ["bytes=0-", "bytes=1000-", "bytes=1500-"]
    bytes_logged = [int(m) for m in re.findall(r", byte (\d+) of", caplog.text)]
    assert bytes_logged == [1000, 1500]


def test_a_server_that_ignores_range_is_read_past_the_bytes_already_had(server) -> None:
    """After a cut, a server answering 200 with the whole file: the bytes already handed on
    are skipped, not handed on twice."""
    server.script = [{"cut": 1000}, {"ignore_range": True, "cut": 3000}, {"ignore_range": True}]
    assert read_all(server) == DATA


def test_an_answer_from_another_byte_than_asked_is_refused(server) -> None:
    server.script = [{"cut": 1000}, {"range_from": 0}]
    with pytest.raises(HubReadError, match=r"bytes from 1000 on, it answered with bytes 0-"):
        read_all(server)


def test_a_file_that_changed_while_read_is_refused(server) -> None:
    server.script = [{"cut": 1000, "etag": "v1"}, {"etag": "v2"}]
    with pytest.raises(HubReadError, match=r"changed on the hub .*ETag \"v1\" became \"v2\""):
        read_all(server)


@pytest.mark.parametrize(("status", "says"), [(403, "access refused"), (404, "no such file")])
def test_a_refusal_mid_file_is_not_retried(server, status: int, says: str) -> None:
    server.script = [{"cut": 1000}, {"status": status}, {}]
    with pytest.raises(HubReadError, match=rf"cannot read hf://\S+ from the hub at .*{says}"):
        read_all(server)
    assert len(server.ranges) == 2  # the cut retried once, the refusal not at all


def test_past_the_retry_budget_the_error_names_the_file_the_byte_and_the_fault(
    server, caplog
) -> None:
    server.script = [{"cut": 1000}] + [{"status": 503}] * 10
    with caplog.at_level(logging.WARNING, "motlab.data.remote"):
        with pytest.raises(HubReadError) as error:
            read_all(server)
    message = str(error.value)
    assert "cannot read hf://datasets/x/c4@abc/en/f.json.gz from the hub at" in message
    assert f"at byte 1000 of {len(DATA)}, HTTP 503, after 3 retries" in message
    # The cut and two 503s are retried, the third 503 is one failure too many: four
    # requests, three retries logged.
    assert len(server.ranges) == 4
    assert re.findall(r"retry (\d)/3 in", caplog.text) == ["1", "2", "3"]


def test_seek_asks_for_the_rest_of_the_file_from_there(server) -> None:
    stream = HubStream("hf://datasets/x/c4@abc/en/f.json.gz", server.url, FAST)
    stream.seek(5000)
    assert io.BufferedReader(stream).read() == DATA[5000:]
    stream.seek(0, io.SEEK_END)  # the size is known now: nothing to ask for
    assert stream.tell() == len(DATA) and stream.read(10) == b""
    fresh = HubStream("hf://datasets/x/c4@abc/en/f.json.gz", server.url, FAST)
    fresh.seek(len(DATA))  # the end, the size not known yet: the server answers 416
    assert fresh.read(10) == b"" and fresh.size == len(DATA)
    assert server.ranges == ["bytes=5000-", f"bytes={len(DATA)}-"]


def test_waits_double_with_jitter_and_stay_within_the_bound() -> None:
    policy = RetryPolicy(retries=10, backoff=1.0, backoff_max=10.0)
    for failure, step in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (9, 10.0)):
        waits = [policy.wait(failure) for _ in range(50)]
        assert all(step / 2 <= w <= step for w in waits), (failure, waits)
        assert len(set(waits)) > 1  # jittered: loader workers do not retry in step
    assert policy.wait(1, retry_after=5.0) == 5.0  # Retry-After honoured ...
    assert policy.wait(1, retry_after=120.0) == 10.0  # ... up to backoff_max


def test_a_bad_retry_setting_is_named() -> None:
    with pytest.raises(ValueError, match=r"--data\.hub_timeout must be > 0, got 0"):
        RetryPolicy(timeout=0)
    with pytest.raises(ValueError, match=r"--data\.hub_retries must be >= 0, got -1"):
        RetryPolicy(retries=-1)
