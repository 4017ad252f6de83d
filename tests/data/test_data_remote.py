"""C4 from the hub through network faults: the local hub (``tests/hubserver``) injects each
kind of fault into file bodies, and the data module's token stream stays the fault-free one.

One subprocess (``tests/scripts/hub_stream.py``; the hub's clients read ``HF_ENDPOINT`` on
import) runs every scenario against one hub serving 20 records per file, so that 30 batches
cross many file boundaries and meet each fault several times: every train batch of a 30-step
run and every validation batch must equal those of the fault-free scenario, and each fault
the hub injected must be logged once, naming the file, the byte and the fault.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from local_hub import REPO, hub_env

STEPS = 30
BACKOFF_MAX = 0.4  # hub_stream.SETTINGS["hub_backoff_max"]

SCENARIOS: dict[str, dict] = {
    "clean": {"spec": ""},
    "reset": {"spec": "reset:0.3", "seed": 1},
    "truncate": {"spec": "truncate:0.3", "seed": 1},
    "truncate_chunked": {"spec": "truncate:0.3", "seed": 1, "chunked": True},
    "stall": {"spec": "stall:3:0.3", "seed": 1, "settings": {"hub_timeout": 1.5}},
    "status_500": {"spec": "status:500:0.3", "seed": 1},
    "status_502": {"spec": "status:502:0.3", "seed": 1},
    "status_503": {"spec": "status:503:0.3", "seed": 1},
    "status_429": {"spec": "status:429:0.3", "seed": 1},
    "down": {"spec": "status:503:1", "settings": {"hub_retries": 2}},
}

SIGNATURES = {
    # scenario: (what the hub counts, what the log says). A reset reads as a connection
    # error, a short body with Content-Length as the client's "incomplete body" error, a
    # chunked body that ends cleanly only by the file's size, a stall as a read timeout.
    "reset": ("reset", r"Connection reset by peer"),
    "truncate": ("truncate", r"the body was cut short \(.*expected \d+"),
    "truncate_chunked": ("truncate", r"the body ended early, at byte \d+ of \d+"),
    "stall": ("stall", r"no answer for 1\.5 s \(ReadTimeout\)"),
    "status_500": ("status:500", r"HTTP 500"),
    "status_502": ("status:502", r"HTTP 502"),
    "status_503": ("status:503", r"HTTP 503"),
    "status_429": ("status:429", r"HTTP 429, Retry-After 1 s"),
}

LINE = re.compile(
    r"^hf://datasets/allenai/c4@[0-9a-f]{40}/(?P<file>en/c4-[a-z]+\.\d{5}-of-\d{5}\.json\.gz), "
    r"byte (?P<byte>\d+)( of \d+)?: (?P<fault>.+); retry (?P<n>\d+)/\d+ in (?P<wait>[0-9.]+) s$"
)


@pytest.fixture(scope="module")
def scenarios(start_hub, tmp_path_factory) -> dict[str, dict]:
    hub = start_hub("--max-records", "20")
    tmp = tmp_path_factory.mktemp("hub_stream")
    out = tmp / "out.pt"
    args = [json.dumps({"name": name, **s}) for name, s in SCENARIOS.items()]
    done = subprocess.run(
        [sys.executable, str(REPO / "tests/scripts/hub_stream.py"), str(out), str(STEPS), *args],
        env=hub_env(hub.url, tmp / "hf"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return torch.load(out, weights_only=False)["results"]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_the_fault_free_stream_comes_from_the_hub(scenarios) -> None:
    clean = scenarios["clean"]
    assert clean["error"] is None and clean["logged"] == []
    assert clean["faults"]["total"] == {}
    assert len(clean["train"]) == STEPS and len(clean["val"]) == 2
    assert all(b.shape == (32, 33) for b in clean["train"] + clean["val"])


@pytest.mark.parametrize("name", list(SIGNATURES))
def test_a_fault_keeps_the_token_stream_and_is_logged_once(scenarios, name: str) -> None:
    """Every train batch of the 30-step run and every validation batch equal the fault-free
    ones; the fault struck several times; each time, one log line names the file, the byte
    it had reached and the fault, and the wait before the retry stays within its bound."""
    got, clean = scenarios[name], scenarios["clean"]
    assert got["error"] is None
    assert same(got["train"], clean["train"]), "the train stream differs from the fault-free one"
    assert same(got["val"], clean["val"]), "the validation batches differ"
    kind, signature = SIGNATURES[name]
    injected = got["faults"]["total"].get(kind, 0)
    assert injected >= 3, got["faults"]
    lines = [LINE.match(line) for line in got["logged"]]
    assert all(lines), got["logged"]
    faults = [m["fault"] for m in lines]  # type: ignore[index]
    assert all(re.search(signature, f) for f in faults), faults
    waits = [float(m["wait"]) for m in lines]  # type: ignore[index]
    assert all(w <= BACKOFF_MAX for w in waits), waits
    if name == "status_429":  # Retry-After (1 s) honoured, up to hub_backoff_max
        assert all(w == BACKOFF_MAX for w in waits), waits
    # One line per fault met; a body fault the hub injected ahead of the last bytes the
    # run read (in the file it was reading at the end) is not met.
    met = len(lines)
    if name.startswith("status"):
        assert met == injected
    else:
        assert injected - 1 <= met <= injected
    by_file: dict[str, int] = {}
    for m in lines:
        by_file[m["file"]] = by_file.get(m["file"], 0) + 1  # type: ignore[index]
    for path, count in by_file.items():
        assert count <= sum(got["faults"]["files"][path].values()), (path, got["faults"])


def test_a_fault_past_the_retry_budget_names_the_endpoint_the_file_and_the_failure(
    scenarios,
) -> None:
    down = scenarios["down"]
    error = down["error"]
    assert error is not None and down["train"] == []
    assert re.search(r"cannot read hf://datasets/allenai/c4@\w+/en/c4-\S+\.json\.gz", error)
    assert re.search(r"from the hub at http://127\.0\.0\.1:\d+: at byte 0", error)
    assert "HTTP 503, after 2 retries" in error and "--ckpt_path last" in error
    assert "--data.hub_retries" in error
    assert len(down["logged"]) == 2  # retry 1/2, 2/2, then the error


def test_hub_and_local_copy_give_every_record_once_in_the_same_order(
    start_hub, c4_dir: Path, tmp_path: Path
) -> None:
    """The hub path reads the files in the order of the local copy (``datasets`` lists a
    split's files sorted, as the local glob is) and each file's records in order, so both
    sources see every record once, and the same record at the same place."""
    hub = start_hub()
    out = tmp_path / "records.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "tests/scripts/hub_records.py"), str(out), str(c4_dir)],
        env=hub_env(hub.url, tmp_path / "hf"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(out.read_text())
    for split, n_files, n_records in (("train", 8, 8354), ("validation", 1, 1000)):
        hub_side, local_side = result[split]["hub"], result[split]["local"]
        assert len(hub_side["files"]) == n_files
        assert hub_side["files"] == local_side["files"]
        assert len(hub_side["records"]) == n_records
        assert len({tuple(r) for r in hub_side["records"]}) == n_records  # each once
        assert hub_side["records"] == local_side["records"]
