"""The generation benchmark runs at tiny size, every mode, and prints valid JSON lines and its
table (no timing checks: figures live in benchmarks/RESULTS.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_generate_benchmark_prints_json_and_a_table(tmp_path) -> None:
    out = tmp_path / "generate.jsonl"
    cmd = [sys.executable, str(REPO / "benchmarks" / "generate.py"), "--presets", "tiny",
           "--prompt-len", "4", "--new-tokens", "3", "--repeats", "1", "--seq-len", "16",
           "--out", str(out)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    modes = {"motlab_cached", "motlab_uncached", "motlab_before", "hf_cached"}
    assert {(r["case"], r["mode"]) for r in records} == {
        (case, mode) for case in ("dense", "token_choice", "mot") for mode in modes
    }
    assert all(r["new_tokens_per_s"] > 0 and r["cpu_seconds"] > 0 for r in records)
    assert {r["rows"] for r in records if r["case"] == "mot"} == {32}
    assert "cached / hf_cached" in result.stdout and "| tiny | mot | 32 |" in result.stdout
