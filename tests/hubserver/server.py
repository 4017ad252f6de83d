"""An HTTP server on 127.0.0.1 that answers the part of the Hugging Face hub's API that
``datasets.load_dataset(..., streaming=True)``, ``tokenizers.Tokenizer.from_pretrained`` and
motlab's own hub access call, found by pointing those clients at it and logging their requests:

* ``GET /api/{datasets,models}/{repo}[/revision/{rev}]`` — repo info (``sha``, ``siblings``,
  ``cardData``);
* ``GET /api/{type}s/{repo}/tree/{rev}[/{path}]`` (``recursive``, ``expand``) — listings;
* ``POST /api/{type}s/{repo}/paths-info/{rev}`` — entries of given paths;
* ``HEAD``/``GET /[datasets/]{repo}/resolve/{rev}/{path}`` — the file, with ``X-Repo-Commit``,
  ``ETag``, ``Content-Length`` and ``Accept-Ranges``; an LFS file redirects (302, with
  ``X-Linked-Etag`` / ``X-Linked-Size``) to a signed, content-addressed ``/lfs/{sha256}`` on
  a second port (another origin, as the hub's CDN is) that serves the body with ``Range``
  support (206 / 416).

Errors carry the hub's ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``,
``EntryNotFound``, ``GatedRepo``) so that the clients raise their usual exceptions. Control
routes for tests: ``GET /_faults`` (faults injected, per file), ``PUT /_faults`` (new spec,
JSON ``{"spec": ..., "seed": ...}``), ``GET /_log`` (every request: method, path, range, status,
and whether it carried an ``Authorization`` header — never its value).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from .faults import FaultPlan
from .repos import HubFile, Repo, c4_repo, dump, folder_repo

CHUNK = 16 * 1024
"""Bytes per write of a file body (a fault can strike between any two)."""

RETRY_AFTER_S = 1
"""``Retry-After`` of an injected 429."""


class Hub:
    """What the server knows: its repositories, faults, auth rules and request log."""

    def __init__(
        self,
        repos: list[Repo],
        faults: FaultPlan | None = None,
        fault_files: str = "*.json.gz",
        token: str | None = None,
        gated: tuple[str, ...] = (),
        latency: float = 0.0,
    ) -> None:
        self.repos = {(r.repo_type, r.repo_id): r for r in repos}
        self.faults = faults or FaultPlan()
        self.fault_files = fault_files
        self.token = token
        self.gated = set(gated)
        self.latency = latency
        self.chunked = False
        """Send file bodies with ``Transfer-Encoding: chunked`` and no ``Content-Length`` (as
        some proxies do): a body cut short then ends cleanly, and only the file's size (from
        ``Content-Range`` or the hub's ``X-Linked-Size``) tells the client it is short."""
        self.lfs: dict[str, tuple[Repo, HubFile]] = {
            f.sha256: (r, f) for r in repos for f in r.files.values() if f.is_lfs
        }
        self.log: list[dict] = []
        self.lock = threading.Lock()
        self.cdn_url = ""
        """Where LFS files are served from (another origin, as the hub's CDN is)."""
        self.secret = secrets.token_hex(16)
        """Signs the CDN URLs the hub redirects to: as with the hub's signed URLs, the CDN
        serves a gated file to whoever has the link (clients send no token across origins)."""

    def signature(self, sha256: str) -> str:
        return hashlib.sha256(f"{self.secret}:{sha256}".encode()).hexdigest()[:32]

    def find(self, repo_type: str, rest: str) -> tuple[Repo | None, str]:
        """The repo whose id starts ``rest`` (``allenai/c4/tree/main`` -> c4, ``tree/main``)."""
        for (kind, repo_id), repo in self.repos.items():
            if kind == repo_type and (rest == repo_id or rest.startswith(repo_id + "/")):
                return repo, rest[len(repo_id) + 1 :]
        return None, rest

    def faulty(self, path: str) -> bool:
        from fnmatch import fnmatch

        return fnmatch(path, self.fault_files) or fnmatch(path.rsplit("/", 1)[-1], self.fault_files)


class HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the hub: clients reuse connections
    server: HubHTTPServer

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def hub(self) -> Hub:
        return self.server.hub

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # requests go to the /_log route, not stderr

    def _record(self, status: int) -> None:
        entry = {
            "method": self.command,
            "path": self.path,
            "status": status,
            "range": self.headers.get("Range"),
            "auth": self.headers.get("Authorization") is not None,
        }
        with self.hub.lock:
            self.hub.log.append(entry)

    def send_response(self, code: int, message: str | None = None) -> None:
        self._record(code)
        super().send_response(code, message)

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: object, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, dump(obj), {"Content-Type": "application/json", **(headers or {})})

    def _error(self, status: int, code: str | None, message: str) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._json({"error": message}, status, headers)

    # -- routing ----------------------------------------------------------------------------

    def do_HEAD(self) -> None:  # noqa: N802
        self._route()

    def do_GET(self) -> None:  # noqa: N802
        self._route()

    def do_POST(self) -> None:  # noqa: N802
        self._route()

    def do_PUT(self) -> None:  # noqa: N802
        self._route()

    def _route(self) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        query = parse_qs(url.query)
        if path in ("/_faults", "/_log"):
            return self._control(path)
        if self.hub.latency:
            time.sleep(self.hub.latency)
        if path == "/api/agent-harnesses":  # huggingface_hub's telemetry: nothing registered
            return self._json({"standardEnvVars": [], "harnesses": {}})
        m = re.fullmatch(r"/api/(datasets|models)/(.+)", path)
        if m:
            return self._api(m.group(1)[:-1], m.group(2), query)
        m = re.fullmatch(r"/lfs/([0-9a-f]{64})", path)
        if m:
            return self._lfs(m.group(1), query.get("sig", [""])[0])
        m = re.fullmatch(r"/datasets/(.+?)/resolve/([^/]+)/(.+)", path)
        if m:
            return self._resolve("dataset", *m.groups())
        m = re.fullmatch(r"/(.+?)/resolve/([^/]+)/(.+)", path)
        if m:
            return self._resolve("model", *m.groups())
        self._error(404, None, f"no route for {self.command} {path}")

    def _control(self, path: str) -> None:
        if path == "/_faults" and self.command == "GET":
            return self._json(self.hub.faults.report())
        if path == "/_faults" and self.command == "PUT":
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            self.hub.faults.configure(body.get("spec") or "", int(body.get("seed") or 0))
            self.hub.chunked = bool(body.get("chunked", False))
            return self._json(self.hub.faults.report())
        if path == "/_log" and self.command == "GET":
            with self.hub.lock:
                log = list(self.hub.log)
            return self._json(log)
        self._error(404, None, f"no control route {self.command} {path}")

    def _allowed(self, repo: Repo) -> bool:
        """Apply the gate of a gated repo: 401 without a token, 403 with one that has no
        access (the hub's answers); True if the request may go on."""
        if repo.repo_id not in self.hub.gated:
            return True
        auth = self.headers.get("Authorization")
        if auth is None:
            self._error(
                401,
                "GatedRepo",
                f"Access to {repo.repo_type} {repo.repo_id} is restricted. You must have access "
                "to it and be authenticated to access it. Please log in.",
            )
            return False
        if self.hub.token is None or auth != f"Bearer {self.hub.token}":
            self._error(
                403,
                "GatedRepo",
                f"Access to {repo.repo_type} {repo.repo_id} is restricted and you are not in "
                "the authorized list.",
            )
            return False
        return True

    def _revision(self, repo: Repo, rev: str) -> bool:
        if rev in ("main", repo.sha):
            return True
        self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return False

    # -- the API ----------------------------------------------------------------------------

    def _api(self, repo_type: str, rest: str, query: dict[str, list[str]]) -> None:
        repo, tail = self.hub.find(repo_type, rest)
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        if not self._allowed(repo):
            return None
        if tail == "" or tail.startswith("revision/"):
            if tail and not self._revision(repo, tail[len("revision/") :]):
                return None
            return self._json(repo.info())
        m = re.fullmatch(r"tree/([^/]+)/?(.*)", tail)
        if m:
            rev, folder = m.group(1), m.group(2).strip("/")
            if not self._revision(repo, rev):
                return None
            if folder and folder not in repo.folders():
                if folder in repo.files:
                    return self._error(404, None, f"{folder} is a file, not a directory")
                return self._error(404, "EntryNotFound", f"{folder} does not exist on {rev}")
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            return self._json(repo.tree(folder, recursive))
        m = re.fullmatch(r"paths-info/([^/]+)", tail)
        if m and self.command == "POST":
            if not self._revision(repo, m.group(1)):
                return None
            paths = self._form_paths()
            return self._json([e for p in paths if (e := repo.entry(p)) is not None])
        self._error(404, None, f"no API route {tail!r}")

    def _form_paths(self) -> list[str]:
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Type", "").startswith("application/json"):
            return list(json.loads(raw or b"{}").get("paths", []))
        return parse_qs(raw.decode()).get("paths", [])

    # -- files --------------------------------------------------------------------------------

    def _resolve(self, repo_type: str, repo_id: str, rev: str, path: str) -> None:
        """``[datasets/]{repo}/resolve/{rev}/{path}``: the file, or a redirect to the CDN."""
        repo = self.hub.repos.get((repo_type, repo_id))
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        if not self._allowed(repo):
            return None
        if not self._revision(repo, rev):
            return None
        file = repo.files.get(path)
        if file is None:
            return self._error(404, "EntryNotFound", f"{path} does not exist on {rev}")
        headers = {"X-Repo-Commit": repo.sha, "Accept-Ranges": "bytes"}
        if file.is_lfs:
            headers.update(
                {
                    "Location": f"{self.hub.cdn_url}/lfs/{file.sha256}"
                    f"?sig={self.hub.signature(file.sha256)}",
                    "X-Linked-Etag": f'"{file.sha256}"',
                    "X-Linked-Size": str(file.size),
                    "ETag": f'"{file.blob_id}"',
                }
            )
            return self._send(302, b"", headers)
        headers["ETag"] = f'"{file.etag}"'
        self._body(repo, file, headers)

    def _lfs(self, sha256: str, signature: str) -> None:
        found = self.hub.lfs.get(sha256)
        if found is None:
            return self._error(404, None, "no such object")
        repo, file = found
        if repo.repo_id in self.hub.gated and signature != self.hub.signature(sha256):
            return self._error(403, None, "the signature of this URL does not match")
        self._body(repo, file, {"ETag": f'"{file.sha256}"', "Accept-Ranges": "bytes"})

    def _body(self, repo: Repo, file: HubFile, headers: dict[str, str]) -> None:
        """The file (or the asked range of it), with the fault drawn for this response."""
        start, end = 0, file.size
        status = 200
        spec = self.headers.get("Range")
        if spec:
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", spec.strip())
            if m is None:
                return self._error(400, None, f"bad Range {spec!r}")
            first, last = m.group(1), m.group(2)
            if first == "":
                start = max(file.size - int(last), 0)
            else:
                start = int(first)
                end = min(int(last) + 1, file.size) if last else file.size
            if start >= file.size or start >= end:
                headers = {**headers, "Content-Range": f"bytes */{file.size}"}
                return self._send(416, b"", headers)
            status = 206
            headers = {**headers, "Content-Range": f"bytes {start}-{end - 1}/{file.size}"}
        body = file.data[start:end]
        fault, at = (None, 0)
        if self.command == "GET" and self.hub.faulty(file.path):
            fault, at = self.hub.faults.draw(file.path, len(body))
        if fault is not None and fault.kind == "status":
            self.hub.faults.record(file.path, fault, start, 0)
            extra = {"Retry-After": str(RETRY_AFTER_S)} if fault.code == 429 else {}
            return self._json({"error": f"injected {fault.name}"}, fault.code, extra)
        chunked = self.hub.chunked and self.command == "GET"
        self.send_response(status)
        for key, value in {**headers, "Content-Type": "application/octet-stream"}.items():
            self.send_header(key, value)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "HEAD":
            return None
        if fault is None:
            return self._write(body, chunked, end=True)
        self._write(body[:at], chunked)
        self.hub.faults.record(file.path, fault, start, at)
        if fault.kind == "reset":
            self._reset()
        elif fault.kind == "truncate":
            # Content-Length: FIN after a short body. Chunked: the last chunk, early. Neither
            # is an error on the wire.
            self._write(b"", chunked, end=True)
            self.close_connection = not chunked
        elif fault.kind == "stall":
            self.wfile.flush()
            time.sleep(fault.seconds)
            self._write(body[at:], chunked, end=True)

    def _write(self, data: bytes, chunked: bool = False, end: bool = False) -> None:
        try:
            for i in range(0, len(data), CHUNK):
                piece = data[i : i + CHUNK]
                if chunked:
                    piece = b"%x\r\n%s\r\n" % (len(piece), piece)
                self.wfile.write(piece)
            if chunked and end:
                self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (e.g. it timed out a stall)

    def _reset(self) -> None:
        """Abort the connection: SO_LINGER 0 makes close() send RST instead of FIN."""
        self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True


class HubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], hub: Hub) -> None:
        self.hub = hub
        self.cdn: HubHTTPServer | None = None
        super().__init__(address, HubHandler)

    def stop(self) -> None:
        """Stop serving (both origins) and close the listening sockets."""
        for srv in (self, self.cdn):
            if srv is not None:
                srv.shutdown()
                srv.server_close()

    def handle_error(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        pass  # aborted connections (resets, clients that time out) are expected here

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def build_hub(
    data: Path,
    tokenizer: Path,
    *,
    max_records: int | None = None,
    faults: str = "",
    seed: int = 0,
    fault_files: str = "*.json.gz",
    token: str | None = None,
    gated: tuple[str, ...] = (),
    latency: float = 0.0,
    dataset: str = "allenai/c4",
    model: str = "gpt2",
) -> Hub:
    """C4 (``data``, C4's layout) as dataset ``dataset`` and ``tokenizer`` (a folder holding
    ``tokenizer.json``, or the file) as model ``model``."""
    folder = tokenizer.parent if tokenizer.is_file() else tokenizer
    repos = [c4_repo(data, dataset, max_records), folder_repo(folder, model, "model")]
    return Hub(repos, FaultPlan(faults, seed), fault_files, token, gated, latency)


def serve(hub: Hub, port: int = 0, host: str = "127.0.0.1") -> HubHTTPServer:
    """Start serving ``hub`` in background threads; ``server.url`` is the address for
    ``HF_ENDPOINT``. LFS bodies come from a second server on another port (``hub.cdn_url``),
    so that, as with the hub's CDN, following the redirect leaves the hub's origin: clients then
    read the file's metadata from the redirect itself and do not send the token along."""
    cdn = HubHTTPServer((host, 0), hub)
    hub.cdn_url = cdn.url
    server = HubHTTPServer((host, port), hub)
    server.cdn = cdn
    for srv, name in ((cdn, "hubserver-cdn"), (server, "hubserver")):
        threading.Thread(target=srv.serve_forever, name=name, daemon=True).start()
    return server
