"""``python -m tests.hubserver``: serve C4 and GPT-2's tokenizer as the hub does, on 127.0.0.1."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from .faults import parse_spec
from .server import build_hub, serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.hubserver",
        description="A local Hugging Face hub serving C4 as allenai/c4 and GPT-2's tokenizer "
        "as gpt2. Point clients at it with HF_ENDPOINT=<the printed URL>.",
    )
    parser.add_argument("--data", type=Path, required=True, help="C4 in its layout (en/*.json.gz)")
    parser.add_argument(
        "--tokenizer", type=Path, required=True, help="folder with tokenizer.json (or the file)"
    )
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--max-records", type=int, default=None, help="records per data file")
    parser.add_argument(
        "--faults",
        default="",
        help="reset:P,status:CODE:P,stall:SECONDS:P,truncate:P (comma-separated)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault draws")
    parser.add_argument(
        "--fault-files", default="*.json.gz", help="glob of the files faults hit (default: data)"
    )
    parser.add_argument("--gated", action="append", default=[], help="repo id needing --token")
    parser.add_argument("--token", default=None, help="the token that opens gated repos")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args(argv)
    try:
        parse_spec(args.faults)
    except ValueError as e:
        parser.error(f"--faults: {e}")
    hub = build_hub(
        args.data,
        args.tokenizer,
        max_records=args.max_records,
        faults=args.faults,
        seed=args.seed,
        fault_files=args.fault_files,
        token=args.token,
        gated=tuple(args.gated),
        latency=args.latency,
    )
    server = serve(hub, args.port)
    print(server.url, flush=True)
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    done.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
