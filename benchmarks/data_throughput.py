"""Throughput of the C4 train loader against the raw tokenizer, measured in the same run.

Prints one JSON line:

* ``tokens_per_s``: stream tokens (``batch_size * seq_len`` per batch) delivered by
  ``C4DataModule.train_dataloader()`` after ``--warmup`` batches (worker start, buffer fill);
* ``raw_encode_batch_tokens_per_s``: the baseline, ``Tokenizer.encode_batch`` on one core
  (``TOKENIZERS_PARALLELISM=false``, 64 documents per call, fresh tokenizer) over the first
  documents of the same files, measured before and after the loader run (mean reported, as
  the machine's load may drift); ``encode_batch_fast`` (what the loader calls) for reference;
* ``per_worker_ratio``: ``tokens_per_s / max(num_workers, 1) / raw_encode_batch_tokens_per_s``;
* ``cpu_efficiency_ratio``: tokens per CPU second of the tokenizing processes (the workers, or
  the main process when ``num_workers=0``) over the baseline's tokens per CPU second: what the
  per-worker ratio would be on an idle machine, robust to other processes' load.

Example (offline)::

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python benchmarks/data_throughput.py \\
        --path ../shared/data --tokenizer ../shared/tokenizers/gpt2/tokenizer.json \\
        --seq-len 256 --batch-size 64 --num-workers 2 --steps 200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ["TOKENIZERS_PARALLELISM"] = "false"  # baseline on one core; workers set it too


def sample_docs(dm, n_tokens: int) -> list[str]:
    """The first documents of the train files, round-robin over files, ~``n_tokens`` tokens."""
    readers = [f.read(dm.text_field) for f in dm._files["train"]]
    docs: list[str] = []
    chars = 0
    while chars < n_tokens * 4.5 and readers:  # ~4.5 characters per GPT-2 token on C4
        for reader in list(readers):
            try:
                _, text, _ = next(reader)
            except StopIteration:
                readers.remove(reader)
                continue
            if text is not None:
                docs.append(text)
                chars += len(text)
    return docs


def raw_encode_rate(
    dm, docs: list[str], method: str, docs_per_call: int = 64
) -> tuple[float, float]:
    """Tokens per wall second and per CPU second of ``Tokenizer.<method>`` on one core, with a
    fresh tokenizer (cold cache, as in a freshly started loader worker)."""
    from tokenizers import Tokenizer

    encode = getattr(Tokenizer.from_str(dm.tokenizer.to_str()), method)
    tokens = 0
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(docs), docs_per_call):
        tokens += sum(len(e.ids) for e in encode(docs[i : i + docs_per_call]))
    return tokens / (time.perf_counter() - start), tokens / (time.process_time() - cpu)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of processes (Linux ``/proc``); 0.0 where unavailable."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime in clock ticks
        except (OSError, IndexError, ValueError):
            return 0.0
    return total / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", help="directory in C4's layout (default: stream the hub)")
    parser.add_argument("--tokenizer", default="gpt2")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200, help="timed batches")
    parser.add_argument("--warmup", type=int, default=10, help="untimed batches first")
    parser.add_argument("--shuffle-buffer", type=int, default=10_000)
    args = parser.parse_args()

    from motlab.data import C4DataModule

    dm = C4DataModule(
        path=args.path,
        tokenizer=args.tokenizer,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        shuffle_buffer=args.shuffle_buffer,
        val_batches=0,
    )
    dm.setup("fit")
    tokens_per_batch = args.batch_size * args.seq_len

    # Baseline before and after the loader run; machine load drifts, the mean is reported.
    docs = sample_docs(dm, args.steps * tokens_per_batch)
    before, before_cpu = raw_encode_rate(dm, docs, "encode_batch")

    loader = dm.train_dataloader()
    start = time.perf_counter()
    it = iter(loader)
    for _ in range(args.warmup):
        next(it)
    # CPU time of whoever tokenizes: the workers, or this process when num_workers=0.
    workers = [w.pid for w in getattr(loader._iterator, "_workers", [])]
    cpu = (lambda: cpu_seconds(workers)) if workers else time.process_time
    warm, cpu0 = time.perf_counter(), cpu()
    for _ in range(args.steps):
        batch = next(it)
    elapsed, cpu_used = time.perf_counter() - warm, cpu() - cpu0
    assert batch.shape == (args.batch_size, args.seq_len + 1)
    tokens_per_s = args.steps * tokens_per_batch / elapsed
    del it, loader

    after, after_cpu = raw_encode_rate(dm, docs, "encode_batch")
    fast, _ = raw_encode_rate(dm, docs, "encode_batch_fast")
    base = (before + after) / 2
    base_cpu = (before_cpu + after_cpu) / 2
    tokens_per_cpu_s = args.steps * tokens_per_batch / cpu_used if cpu_used else 0.0
    result = {
        "tokens_per_s": round(tokens_per_s),
        "num_workers": args.num_workers,
        "raw_encode_batch_tokens_per_s": round(base),
        "raw_encode_batch_before_after": [round(before), round(after)],
        "raw_encode_batch_fast_tokens_per_s": round(fast),
        "per_worker_ratio": round(tokens_per_s / max(args.num_workers, 1) / base, 3),
        # Load-independent view on a shared machine: tokens per CPU second of the tokenizing
        # processes vs. the raw encode_batch tokens per CPU second.
        "tokens_per_tokenizer_cpu_s": round(tokens_per_cpu_s),
        "raw_encode_batch_tokens_per_cpu_s": round(base_cpu),
        "cpu_efficiency_ratio": round(tokens_per_cpu_s / base_cpu, 3),
        "load_avg_1m": os.getloadavg()[0],
        "warmup_s": round(warm - start, 2),
        "timed_s": round(elapsed, 2),
        "steps": args.steps,
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "shuffle_buffer": args.shuffle_buffer,
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
