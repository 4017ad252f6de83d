"""Reaching the hub: the checks before training and their ``error:`` messages, against the
local hub (``tests/hubserver``) answering 401/403 for a gated dataset, 404 for misspelt names,
or slowly; and the token: sent to the hub, never printed.

Each group of cases runs in one process (``tests/scripts/hub_errors.py``): the hub's clients
read ``HF_ENDPOINT`` when they are imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from local_hub import REPO, hub_env

TOKEN = "hf_localhubtoken0123456789"  # what the gated hub accepts
FIT = [
    "fit",
    *("--config", str(REPO / "conf/mot.yaml"), "--config", str(REPO / "conf/tiny.yaml")),
    *("--trainer.max_steps", "1", "--trainer.logger", "false"),
    *("--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"),
    *("--data.seq_len", "16", "--data.val_batches", "0", "--data.num_workers", "0"),
    *("--checkpoint.dirpath", "ckpt"),
]


def run_cases(hub, tmp: Path, cases: dict[str, dict]) -> tuple[dict, subprocess.CompletedProcess]:
    out, spec = tmp / "results.json", tmp / "cases.json"
    spec.write_text(json.dumps(cases))
    done = subprocess.run(
        [sys.executable, str(REPO / "tests/scripts/hub_errors.py"), str(out), str(spec)],
        env=hub_env(hub.url, tmp / "hf"),
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(out.read_text()), done


@pytest.fixture(scope="module")
def gated(start_hub, tmp_path_factory) -> tuple[dict, subprocess.CompletedProcess, object]:
    """``allenai/c4`` gated (the token above opens it): a command line per way to get it
    wrong, and one that gets it right."""
    hub = start_hub("--max-records", "5", "--gated", "allenai/c4", "--token", TOKEN)
    cases = {
        "no_token": {"argv": FIT},
        "wrong_token": {"argv": FIT, "token": "hf_notthetoken"},
        "misspelt_dataset": {"argv": [*FIT, "--data.hub_dataset", "allenai/c44"], "token": TOKEN},
        "misspelt_config": {"argv": [*FIT, "--data.hub_config", "enn"], "token": TOKEN},
        "misspelt_tokenizer": {"argv": [*FIT, "--data.tokenizer", "gpt3"], "token": TOKEN},
        "token": {"argv": FIT, "token": TOKEN},
    }
    results, done = run_cases(hub, tmp_path_factory.mktemp("gated"), cases)
    return results, done, hub


def error_of(result: dict) -> str:
    assert result["code"] == 2, result["output"][-3000:]
    lines = result["output"].splitlines()
    (first,) = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert "Traceback" not in result["output"]
    return " ".join(line.strip() for line in lines[first:])


@pytest.mark.parametrize(("case", "status"), [("no_token", 401), ("wrong_token", 403)])
def test_a_gated_dataset_says_to_log_in(gated, case: str, status: int) -> None:
    error = error_of(gated[0][case])
    assert f"refused access to dataset 'allenai/c4' (HTTP {status}" in error
    assert "huggingface-cli login" in error and "HF_TOKEN" in error
    assert gated[0][case]["seconds"] < 60


@pytest.mark.parametrize(
    ("case", "names"),
    [
        ("misspelt_dataset", ["dataset 'allenai/c44' (HTTP 404)", "--data.hub_dataset"]),
        ("misspelt_config", ["--data.hub_config 'enn'", "its configs: ['en']"]),
        ("misspelt_tokenizer", ["model 'gpt3' (HTTP 404)", "--data.tokenizer"]),
    ],
)
def test_a_misspelt_name_is_named(gated, case: str, names: list[str]) -> None:
    error = error_of(gated[0][case])
    assert all(name in error for name in names), error
    assert "the hub at http://127.0.0.1:" in error


def test_the_token_is_sent_and_never_printed(gated, tmp_path_factory) -> None:
    results, done, hub = gated
    assert results["token"]["code"] == 0, results["token"]["output"][-3000:]
    requests = hub.log()
    to_c4 = [r for r in requests if "allenai/c4" in r["path"]]
    assert to_c4 and all(r["auth"] for r in to_c4 if r["status"] in (200, 206, 302))
    assert any(not r["auth"] and r["status"] == 401 for r in to_c4)  # the case without one
    printed = done.stdout + done.stderr + "".join(r["output"] for r in results.values())
    assert TOKEN not in printed
    written = [p for p in Path(done.args[2]).parent.rglob("*") if p.is_file()]
    assert any(p.name == "last.ckpt" for p in written)
    for path in written:  # checkpoints, the Hugging Face cache, what the cases printed
        if path.name != "cases.json":  # the test's own input
            assert TOKEN.encode() not in path.read_bytes(), path


def test_a_slow_hub_is_waited_for_or_named_in_seconds(start_hub, tmp_path) -> None:
    """A hub that takes 0.5 s to answer each request: with a timeout above that, training
    starts; below it, the up-front check says in seconds that the hub is too slow (a TCP
    connect alone would pass, and the clients would retry for minutes)."""
    # 100 records a file: the first file fills the shuffle buffer, so that the patient run
    # makes a dozen requests (each 0.5 s late), not the 50 of reading every file many times.
    hub = start_hub("--max-records", "100", "--latency", "0.5")
    results, _ = run_cases(
        hub,
        tmp_path,
        {
            "patient": {"argv": [*FIT, "--data.hub_timeout", "5"]},
            "impatient": {"argv": [*FIT, "--data.hub_timeout", "0.2"]},
        },
    )
    assert results["patient"]["code"] == 0, results["patient"]["output"][-3000:]
    error = error_of(results["impatient"])
    assert "did not answer within 0.2 s when asked for dataset 'allenai/c4'" in error
    assert "--data.hub_timeout" in error and "--data.path" in error
    assert results["impatient"]["seconds"] < 30
