"""``motlab generate --checkpoint runs/mot --prompt "..."``: try a model, streaming its text.

Loads a checkpoint (a file, or an experiment directory for its newest ``last.ckpt``) and its
tokenizer (the one it was trained with when that resolves here, else ``--tokenizer``), and
continues each ``--prompt`` with the KV-cached lockstep decoder (:func:`motlab.decoding.complete`).
One prompt is streamed as it is produced; several are decoded together and printed in order.
A MoT or expert-choice model decodes its prompts among filler rows (``--filler``: C4 training
windows as in the paper's evaluation, or random tokens); token choice runs dropless unless
``--capacity`` says otherwise.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import torch

DEFAULT_MAX_NEW_TOKENS = 64
FILLER_POOL = 64
"""Windows in the filler pool (a group of 32 needs at most 31)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="motlab generate",
        description=(
            "Continue prompts with a motlab checkpoint, streaming the text of a single prompt "
            "as it is produced. Decoding uses a KV cache; a MoT model decodes its prompts as "
            "one group among filler rows."
        ),
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        help="a motlab fit checkpoint or save_model file, or an experiment directory (runs/mot)",
    )
    p.add_argument(
        "--prompt",
        action="append",
        required=True,
        help="text to continue; repeat for several prompts decoded together",
    )
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=DEFAULT_MAX_NEW_TOKENS,
        help=f"tokens to generate per prompt at most (default {DEFAULT_MAX_NEW_TOKENS})",
    )
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy (default 1.0)")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest tokens")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling: keep mass p")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples and the filler")
    p.add_argument("--stop", action="append", default=[], help="stop at this string (repeatable)")
    p.add_argument("--ignore-eos", action="store_true", help="go on past the end-of-text token")
    p.add_argument("--eot-token", default="<|endoftext|>", help="the end-of-text token")
    p.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer.json path or hub name; default: the checkpoint's, else gpt2",
    )
    p.add_argument(
        "--filler",
        choices=("c4", "random"),
        default="c4",
        help="filler rows of a MoT / expert-choice group: C4 training windows (default) or "
        "random tokens",
    )
    p.add_argument(
        "--data",
        default=None,
        help="local C4 copy (DIR/en/c4-train.*.json.gz) for --filler c4; default: the "
        "checkpoint's training data if present here, else the hub",
    )
    p.add_argument(
        "--capacity",
        default="dropless",
        help="token choice: dropless (default), training (the configured capacity factor) or "
        "a factor such as 1.25",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument(
        "--no-cache", action="store_true", help="recompute the whole context at every step"
    )
    p.add_argument(
        "--compile", action="store_true", help="torch.compile the decoding step (slow start)"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``motlab generate``; returns the exit status."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)

    def fail(message: object) -> int:
        print(f"motlab generate: error: {message}", file=sys.stderr)
        return 2

    from motlab.cli import quiet_library_noise
    from motlab.hub import HubUnreachableError

    quiet_library_noise()
    try:
        return _run(args)
    except HubUnreachableError as err:  # the tokenizer's or the filler's hub
        return fail(
            f"{err}\nFor generate: pass --tokenizer PATH/tokenizer.json, and --data DIR (a local "
            "C4 copy) or --filler random for the filler rows of a MoT model."
        )
    except (FileNotFoundError, ValueError, KeyError) as err:
        return fail(err.args[0] if isinstance(err, KeyError) and err.args else err)


def _run(args: argparse.Namespace) -> int:
    from motlab.checkpoint import (
        config_to_dict,
        load_model,
        read_data_config,
        resolve_checkpoint,
        resolves_here,
        variant_of,
    )
    from motlab.data.tokenizer import load_tokenizer, token_id
    from motlab.decoding import complete
    from motlab.layers.registry import parse_capacity
    from motlab.sampling import Sampling

    # Every option is checked before the model is read.
    Sampling(args.temperature, args.top_k, args.top_p)
    if args.max_new_tokens < 0:
        raise ValueError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    if any(not s for s in args.stop):
        raise ValueError("--stop needs a non-empty string")
    capacity = parse_capacity(args.capacity)
    path = resolve_checkpoint(args.checkpoint, "--checkpoint")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(path, map_location=device, capacity=capacity)  # names a bad file
    saved = read_data_config(path)
    source = args.tokenizer or (
        saved.get("tokenizer") if resolves_here(saved.get("tokenizer")) else "gpt2"
    )
    tok = load_tokenizer(str(source))
    vocab = tok.get_vocab_size(with_added_tokens=True)
    if vocab > model.cfg.vocab_size:
        raise ValueError(
            f"tokenizer {source!r} has {vocab} tokens, more than the model's "
            f"{model.cfg.vocab_size}: pass the tokenizer it was trained with (--tokenizer PATH)"
        )
    eot = token_id(tok, args.eot_token)
    prompts = [tok.encode(p, add_special_tokens=False).ids or [eot] for p in args.prompt]
    generator = torch.Generator().manual_seed(args.seed)
    G = model.cfg.group_size
    filler_WT, filler_note = None, ""
    n_fill = -len(prompts) % G
    if n_fill:
        pool = _filler_pool(args, model, str(source), saved)
        length = max(map(len, prompts)) + args.max_new_tokens
        filler_WT, filler_note = pool.rows(args.seed, n_fill, length), f", filler {pool.source}"
    variant = variant_of(config_to_dict(model.cfg)) if model.cfg.routed_blocks() else "dense"
    print(f"motlab generate: {path} ({variant}, group size {G}{filler_note})", file=sys.stderr)

    def decode(ids: list[int]) -> str:
        return tok.decode(ids, skip_special_tokens=False)

    single = len(prompts) == 1
    if single:
        sys.stdout.write(args.prompt[0])
        sys.stdout.flush()

    def stream(row: int, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    done = complete(
        model, prompts, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
        top_p=args.top_p, eos_id=None if args.ignore_eos else eot, stop=args.stop or None,
        decode=decode, filler_WT=filler_WT, generator=generator, use_cache=not args.no_cache,
        compile=args.compile, capacity=capacity, on_text=stream if single else None,
    )  # fmt: skip
    if single:
        sys.stdout.write("\n")
    else:
        for i, (prompt, completion) in enumerate(zip(args.prompt, done, strict=True)):
            print(f"--- [{i}] ({completion.finish_reason})")
            print(prompt + (completion.text or ""))
    return 0


def _filler_pool(args: argparse.Namespace, model: Any, tokenizer: str, saved: dict) -> Any:
    """The pool a MoT model's filler rows come from (C4 windows or random tokens)."""
    from motlab.checkpoint import resolves_here
    from motlab.eval.filler_pool import c4_filler_pool, random_filler_pool

    windows = max(FILLER_POOL, model.cfg.group_size - 1)
    if args.filler == "random":
        return random_filler_pool(model.cfg.vocab_size, model.cfg.seq_len, windows, args.seed)
    data = args.data or (saved.get("path") if resolves_here(saved.get("path")) else None)
    return c4_filler_pool(data, tokenizer, model.cfg.seq_len, windows, args.seed)
