"""Memory traffic of one feed-forward layer's forward + backward, counted op by op.

    python benchmarks/layer_traffic.py [--config conf/mot.yaml ...] [--d-model 512] \
        [--d-ff 2048] [--batch-size 64] [--seq-len 64]

Prints one JSON line per config: the elements written by matmuls and by every other op
(copies, gathers, scatters, elementwise, reductions), per token and in units of d_model — how
many activation-sized tensors the layer writes. Routing overhead on a GPU is mostly such
memory-bound work around the expert matmuls, so this device-independent count shows what a
layout or dispatch change saves before any GPU time is spent; timing it is the throughput
benchmark's job. It runs eagerly on the CPU in fp32: the compiler fuses elementwise chains, so
those are an upper bound, while copies and buffers feeding a matmul stay as counted.

The layer is the config's routed ``model.net.ffn`` (the dense FFN for dense configs) at the given
shapes; ``--batch-size`` must be a multiple of the config's group size.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from motlab.layers import build_ffn, ffn_config  # noqa: E402

CONFIGS = ["dense", "mot", "mot_32e_16", "token_choice", "expert_choice"]
MATMULS = {"mm", "bmm", "addmm", "baddbmm", "_grouped_mm"}
ALLOCATIONS = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"}


class WriteCounter(TorchDispatchMode):
    """Sums the elements of every tensor an op returns, matmuls apart; views write nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.matmul = 0
        self.other: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        # Outputs sharing an input's storage are views (``_unsafe_view`` included), unless the
        # op writes in place.
        inputs = tree_flatten((args, kwargs))[0]
        shared = {t.untyped_storage().data_ptr() for t in inputs if isinstance(t, torch.Tensor)}
        written = sum(
            t.numel()
            for t in tree_flatten(out)[0]
            if isinstance(t, torch.Tensor)
            and (func._schema.is_mutable or t.untyped_storage().data_ptr() not in shared)
        )
        name = func.overloadpacket.__name__
        if name in ALLOCATIONS:  # no write until another op fills them
            return out
        if name in MATMULS:
            self.matmul += written
        elif written:
            self.other[name] = self.other.get(name, 0) + written
        return out


def ffn_spec(config: Path) -> dict[str, Any]:
    """The ``model.net.ffn`` mapping of a motlab config (dense when it has none)."""
    doc = yaml.safe_load(config.read_text()) or {}
    net = (doc.get("model") or {}).get("net") or {}
    return dict(net.get("ffn") or {"variant": "dense"})


def measure(config: Path, d_model: int, d_ff: int, batch_size: int, seq_len: int) -> dict:
    spec = ffn_spec(config)
    torch.manual_seed(0)
    layer = build_ffn(d_model, d_ff, ffn_config(spec))
    x_BTD = torch.randn(batch_size, seq_len, d_model, requires_grad=True)
    cotangent_BTD = torch.randn(batch_size, seq_len, d_model)
    counter = WriteCounter()
    with counter:
        out_BTD, _ = layer(x_BTD)
        out_BTD.backward(cotangent_BTD)
    per_token = batch_size * seq_len * d_model
    other = {
        k: round(v / per_token, 2) for k, v in sorted(counter.other.items(), key=lambda kv: -kv[1])
    }
    return {
        "config": config.stem,
        "variant": spec.get("variant", "dense"),
        "n_experts": spec.get("n_experts"),
        "d_model": d_model,
        "d_ff": d_ff,
        "tokens": batch_size * seq_len,
        "matmul_writes": round(counter.matmul / per_token, 2),
        "other_writes": round(sum(counter.other.values()) / per_token, 2),
        "other_by_op": dict(list(other.items())[:10]),
    }


def main(argv: list[str] | None = None) -> None:
    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, action="append", help="default: the main configs")
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--d-ff", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=64)
    args = parser.parse_args(argv)
    configs = args.config or [root / "conf" / f"{name}.yaml" for name in CONFIGS]
    for config in configs:
        if not config.is_file():
            parser.error(f"config file not found: {config}")
        row = measure(config, args.d_model, args.d_ff, args.batch_size, args.seq_len)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
