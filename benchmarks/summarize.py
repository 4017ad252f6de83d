"""Markdown table of throughput JSON lines, with ratios measured within the same run.

    python benchmarks/summarize.py results.jsonl

"vs dense" divides by the dense result of the same loop; "motlab / bare" divides the Lightning
result by the bare loop on the same config and data setting (1.0 = no framework cost); a dense
``plain`` loop result (model compiled, loss eager) is compared with motlab's dense below the table.
"""

from __future__ import annotations

import json
import sys


def _key(r: dict) -> str:
    name = r["variant"] if r.get("n_experts") in (None, 32) else f"{r['variant']}/{r['n_experts']}E"
    if r.get("float32_matmul_precision") == "highest" and r.get("device", "cpu") != "cpu":
        name += " (fp32 matmuls)"  # the GPU configs run float32 matmuls on TF32
    return name


def main(path: str) -> None:
    lines = [json.loads(line) for line in open(path) if line.startswith("{")]
    rows = [r for r in lines if "tokens_per_s" in r]
    others = [r for r in lines if "tokens_per_s" not in r]  # {"failed": ...}, {"skipped": ...}
    bare = {(_key(r), r["synthetic"]): r for r in rows if r["loop"] == "bare"}
    dense = {r["loop"]: r for r in rows if r["variant"] == "dense" and r["synthetic"]}
    columns = ("variant", "loop", "data", "tokens/s", "step ms", "vs dense", "motlab / bare")
    print("| " + " | ".join(columns) + " | mfu | peak GiB |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        base = dense.get(r["loop"])
        vs_dense = (
            f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}" if base and r["synthetic"] else ""
        )
        pair = bare.get((_key(r), r["synthetic"]))
        vs_bare = (
            f"{r['tokens_per_s'] / pair['tokens_per_s']:.2f}"
            if r["loop"] == "lightning" and pair
            else ""
        )
        mfu = f"{r['mfu']:.3f}" if r.get("mfu") is not None else "–"
        mem = f"{r['peak_mem_gb']:.1f}" if r.get("peak_mem_gb") is not None else "–"
        data = "synthetic" if r["synthetic"] else "C4 stream"
        print(
            f"| {_key(r)} | {r['loop']} | {data} | {r['tokens_per_s']:,.0f} | {r['step_ms']:.1f} "
            f"| {vs_dense} | {vs_bare} | {mfu} | {mem} |"
        )
    plain, ours = dense.get("plain"), dense.get("lightning")
    if plain and ours:
        ratio = ours["tokens_per_s"] / plain["tokens_per_s"]
        print(f"\ndense, motlab / plain loop (model compiled, loss eager): {ratio:.2f}")
    for r in others:
        what = "failed" if "failed" in r else "skipped"
        reason = f" ({r['reason']})" if "reason" in r else ""
        print(f"\n{what}: {r.get(what, r)}{reason}")


if __name__ == "__main__":
    main(sys.argv[1])
