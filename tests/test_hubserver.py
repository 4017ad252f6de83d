"""The local hub itself (``python -m tests.hubserver``): what it answers, byte for byte, and
the faults it injects and counts. (The clients' side is in the hub tests that use it.)"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import subprocess
import sys
from urllib.parse import urlsplit

import pytest
from local_hub import REPO

TRAIN0 = "en/c4-train.00000-of-00008.json.gz"


def request(url: str, method: str = "GET", headers: dict | None = None):
    """``(status, headers, body)`` of one request (no redirect followed)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def hub(start_hub):
    return start_hub("--max-records", "50")  # files above the LFS size


def test_repo_info_and_listings(hub) -> None:
    info = json.loads(request(f"{hub.url}/api/datasets/allenai/c4/revision/main")[2])
    assert info["id"] == "allenai/c4" and len(info["sha"]) == 40
    (config,) = info["cardData"]["configs"]  # the YAML header of the dataset card
    assert config["config_name"] == "en"
    assert config["data_files"][0] == {"split": "train", "path": "en/c4-train.*.json.gz"}
    tree = json.loads(request(f"{hub.url}/api/datasets/allenai/c4/tree/{info['sha']}/en")[2])
    names = [e["path"] for e in tree]
    assert names == sorted(names) and TRAIN0 in names and len(names) == 9
    entry = next(e for e in tree if e["path"] == TRAIN0)
    assert entry["lfs"]["size"] == entry["size"] and len(entry["lfs"]["oid"]) == 64
    status, headers, _ = request(f"{hub.url}/api/datasets/allenai/c44")
    assert status == 404 and headers["X-Error-Code"] == "RepoNotFound"


def test_resolve_redirects_to_the_cdn_with_the_files_metadata(hub) -> None:
    url = f"{hub.url}/datasets/allenai/c4/resolve/main/{TRAIN0}"
    status, headers, _ = request(url, "HEAD")
    assert status == 302 and headers["X-Repo-Commit"]
    size = int(headers["X-Linked-Size"])
    assert urlsplit(headers["Location"]).port != urlsplit(hub.url).port  # another origin
    status, got, body = request(headers["Location"])
    assert status == 200 and int(got["Content-Length"]) == size == len(body)
    assert f'"{hashlib.sha256(body).hexdigest()}"' == headers["X-Linked-Etag"] == got["ETag"]
    assert len(gzip.decompress(body).splitlines()) == 50  # --max-records 50
    status, got, part = request(headers["Location"], headers={"Range": "bytes=10-"})
    assert status == 206 and part == body[10:]
    assert got["Content-Range"] == f"bytes 10-{size - 1}/{size}"
    status, got, _ = request(headers["Location"], headers={"Range": f"bytes={size}-"})
    assert status == 416 and got["Content-Range"] == f"bytes */{size}"
    readme = request(f"{hub.url}/datasets/allenai/c4/resolve/main/README.md")
    assert readme[0] == 200 and b"config_name: en" in readme[2]  # small: no redirect
    missing = request(f"{hub.url}/datasets/allenai/c4/resolve/main/c4.py", "HEAD")
    assert missing[0] == 404 and missing[1]["X-Error-Code"] == "EntryNotFound"


def test_faults_are_injected_and_counted_per_file(hub) -> None:
    hub.set_faults("status:503:1", seed=0)
    try:
        url = f"{hub.url}/datasets/allenai/c4/resolve/main/{TRAIN0}"
        cdn = request(url, "HEAD")[1]["Location"]
        assert request(cdn)[0] == 503
        assert request(cdn)[0] == 503
        request(f"{hub.url}/datasets/allenai/c4/resolve/main/README.md")  # not a data file
        report = hub.faults()
        assert report["files"] == {TRAIN0: {"status:503": 2}}
        assert report["total"] == {"status:503": 2}
    finally:
        hub.set_faults("")


@pytest.mark.parametrize(
    "spec", ["reset", "status:418:0.1", "stall:0.1", "truncate:2", "drop:0.1", "reset:x"]
)
def test_a_bad_fault_spec_is_refused(spec: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.hubserver", "--data", ".", "--tokenizer", "."]
        + ["--faults", f"reset:0.1,{spec}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and f"--faults: bad fault {spec!r}" in done.stderr
