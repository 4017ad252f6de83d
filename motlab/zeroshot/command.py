"""The ``motlab zeroshot`` command: load a checkpoint and a task, score it, print the accuracy.

Defaults for the tokenizer and the MoT filler data come from the checkpoint's saved data-module
hyper-parameters when they still resolve on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from motlab.zeroshot.scoring import c4_filler_windows, evaluate
from motlab.zeroshot.tasks import HUB_TASKS, TaskUnavailableError, load_task


def _checkpoint_data_hparams(path: Path) -> dict[str, Any]:
    """The data module's saved hyper-parameters in a Lightning checkpoint (tokenizer, path)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception:  # noqa: BLE001 - not a Lightning checkpoint: no defaults
        return {}
    hp = ckpt.get("datamodule_hyper_parameters") if isinstance(ckpt, dict) else None
    return dict(hp) if isinstance(hp, Mapping) else {}


def _usable(source: str | None) -> bool:
    """A saved tokenizer/data source that still resolves here (a hub name or an existing path)."""
    if not source:
        return False
    looks_like_path = source.endswith(".json") or os.sep in source or source.startswith((".", "~"))
    return not looks_like_path or Path(source).expanduser().exists()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="motlab zeroshot",
        description=(
            "Zero-shot multiple-choice accuracy (acc, and acc_norm: log-likelihood divided by the "
            "choice's length in characters). MoT models score each query in a batch of one group "
            "whose other rows are random C4 training windows, as in the paper."
        ),
    )
    p.add_argument("--checkpoint", required=True, help="a motlab fit checkpoint or save_model file")
    p.add_argument(
        "--task",
        required=True,
        help=f"{'|'.join(HUB_TASKS)} (from the Hugging Face hub) or PATH.jsonl",
    )
    p.add_argument("--split", default=None, help="hub split (default: the labelled one)")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N examples")
    p.add_argument(
        "--data",
        default=None,
        help="local C4 copy (DIR/en/c4-train.*.json.gz) for MoT filler rows; default: the "
        "checkpoint's training data if present here, else streamed from the hub",
    )
    p.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer.json path or hub name; default: the checkpoint's, else gpt2",
    )
    p.add_argument(
        "--batch-size", type=int, default=32, help="queries per batch (dense/token choice)"
    )
    p.add_argument("--filler-pool", type=int, default=512, help="C4 windows to draw filler from")
    p.add_argument("--seed", type=int, default=0, help="seed of the filler draws")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--output", default=None, help="also write the result as JSON here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``motlab zeroshot``; returns the exit status."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    from motlab.checkpoint import load_model
    from motlab.data.sources import HubUnreachableError
    from motlab.data.tokenizer import load_tokenizer

    def fail(message: object) -> int:
        print(f"motlab zeroshot: error: {message}", file=sys.stderr)
        return 2

    ckpt = Path(args.checkpoint)
    try:
        examples = load_task(args.task, args.split, args.limit)
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = load_model(ckpt, map_location=device)
        saved = _checkpoint_data_hparams(ckpt)
        tok_name = args.tokenizer or (
            saved.get("tokenizer") if _usable(saved.get("tokenizer")) else None
        )
        tok_name = tok_name or "gpt2"
        tokenizer = load_tokenizer(tok_name)
        if tokenizer.get_vocab_size(with_added_tokens=True) > model.cfg.vocab_size:
            return fail(
                f"tokenizer {tok_name!r} has a larger vocabulary than the model "
                f"({model.cfg.vocab_size}); pass the tokenizer the model was trained with"
            )
        eot_id = tokenizer.token_to_id("<|endoftext|>")
        pool = None
        if model.cfg.group_size > 1:
            data = args.data or (saved.get("path") if _usable(saved.get("path")) else None)
            print(
                f"filler: {args.filler_pool} C4 training windows from "
                f"{data or 'the Hugging Face hub (allenai/c4)'}",
                file=sys.stderr,
            )
            try:
                pool = c4_filler_windows(data, tok_name, model.cfg.seq_len, args.filler_pool)
            except HubUnreachableError as err:
                return fail(f"{err}\nFor zeroshot: pass --data DIR (a local C4 copy).")
    except (TaskUnavailableError, HubUnreachableError, FileNotFoundError, ValueError) as err:
        return fail(err)

    result = evaluate(
        model,
        tokenizer,
        examples,
        filler_pool_PT=pool,
        batch_size=args.batch_size,
        seed=args.seed,
        task=args.task,
        eot_id=eot_id,
        progress=True,
    )
    print(
        f"{result.task}: n={result.n}  acc={result.acc:.4f}  acc_norm={result.acc_norm:.4f}  "
        f"(group size {result.group_size}, filler {result.filler}, {result.seconds:.1f} s)"
    )
    if args.output:
        Path(args.output).write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    return 0
