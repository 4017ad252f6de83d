"""The throughput benchmark runs at tiny size and prints one valid JSON line (no timing checks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KEYS = {
    "variant",
    "tokens_per_s",
    "step_ms",
    "mfu",
    "peak_mem_gb",
    "params",
    "active_params",
    "d_model",
    "n_layers",
    "n_heads",
    "d_ff",
    "seq_len",
    "batch_size",
    "vocab_size",
}


@pytest.mark.parametrize("loop,synthetic", [("lightning", False), ("bare", True), ("plain", True)])
def test_throughput_prints_json(loop, synthetic, c4_dir, tokenizer_path) -> None:
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "throughput.py"),
        "--config",
        str(REPO / "conf" / "mot.yaml"),
        "--config",
        str(REPO / "conf" / "tiny.yaml"),
        "--device",
        "cpu",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--loop",
        loop,
        "--data.path",
        str(c4_dir),
        "--data.tokenizer",
        str(tokenizer_path),
        "--data.num_workers",
        "0",
    ]
    if synthetic:
        cmd.append("--synthetic")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, proc.stdout
    result = json.loads(lines[0])
    assert KEYS <= set(result)
    assert result["variant"] == "mot" and result["loop"] == loop
    assert result["tokens_per_s"] > 0 and result["step_ms"] > 0
    assert result["mfu"] is None  # no known peak on the CPU
    assert result["batch_size"] == 32 and result["seq_len"] == 32 and result["vocab_size"] == 50257
    assert result["params"] > result["active_params"] > 0
