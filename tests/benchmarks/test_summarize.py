"""The results table divides within one run and lists what failed or was skipped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _result(variant: str, loop: str, tokens_per_s: float, **extra) -> dict:
    return {
        "variant": variant, "loop": loop, "tokens_per_s": tokens_per_s,
        "step_ms": 1000.0, "mfu": None, "peak_mem_gb": None, "n_experts": None,
        "synthetic": True, **extra,
    }  # fmt: skip


def test_ratios_and_unfinished_items(tmp_path: Path) -> None:
    lines = [
        _result("dense", "bare", 1000.0),
        _result("dense", "lightning", 950.0, mfu=0.4567, peak_mem_gb=12.34),
        _result("mot", "lightning", 931.0, n_experts=32),
        _result("mot", "lightning", 760.0, n_experts=512),
        _result(
            "mot",
            "lightning",
            700.0,
            n_experts=512,
            device="H200",
            float32_matmul_precision="highest",
        ),
        _result("dense", "lightning", 900.0, synthetic=False),
        _result("dense", "plain", 800.0),
        {"failed": "conf/token_choice.yaml --synthetic"},
        {"skipped": "conf/expert_choice.yaml --synthetic", "reason": "BUDGET_S=540 spent"},
    ]
    path = tmp_path / "suite.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines) + "a log line\n")
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "summarize.py"), str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()[2:8]]
    assert rows[0][:7] == ["dense", "bare", "synthetic", "1,000", "1000.0", "1.00", ""]
    assert rows[1][5:] == ["1.00", "0.95", "0.457", "12.3"]
    assert rows[2][0] == "mot" and rows[2][5] == "0.98"  # vs the Lightning dense row
    assert rows[3][0] == "mot/512E" and rows[3][5] == "0.80"
    assert rows[4][0] == "mot/512E (fp32 matmuls)" and rows[4][5] == "0.74"
    assert rows[5][2] == "C4 stream" and rows[5][5] == "" and rows[5][6] == ""
    assert "dense, motlab / plain loop (model compiled, loss eager): 1.19" in out
    assert "failed: conf/token_choice.yaml --synthetic" in out
    assert "skipped: conf/expert_choice.yaml --synthetic (BUDGET_S=540 spent)" in out
