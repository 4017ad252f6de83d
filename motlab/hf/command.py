"""``motlab export --checkpoint runs/mot --out DIR``: a trained model as a Hugging Face model.

Writes DIR for ``AutoModelForCausalLM.from_pretrained(DIR)`` (and ``huggingface-cli upload``):
config, safetensors weights, tokenizer, generation config and a model card from the run
(:mod:`motlab.hf.export`). Bad input is one ``error:`` line naming the option and the path,
exit status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    from motlab.hf.export import DTYPES

    p = argparse.ArgumentParser(
        prog="motlab export",
        description=(
            "Export a motlab checkpoint as a Hugging Face model directory that "
            "AutoModelForCausalLM loads: a dense model GPT-2 can express as GPT2LMHeadModel, "
            "any other as remote code made from motlab's own sources (trust_remote_code=True)."
        ),
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        help="a motlab fit checkpoint or save_model file, or an experiment directory (runs/mot) "
        "for its newest last.ckpt",
    )
    p.add_argument("--out", required=True, help="the new directory (must not exist, or be empty)")
    p.add_argument(
        "--dtype",
        choices=tuple(DTYPES),
        default="float32",
        help="of the stored weights (default float32)",
    )
    p.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer.json path or hub name; default: the one the checkpoint was trained with",
    )
    p.add_argument(
        "--eot-token",
        default=None,
        help="the end-of-text token (default: the checkpoint's data.eot_token, <|endoftext|>)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``motlab export``; returns the exit status."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    from motlab.cli import quiet_library_noise
    from motlab.hf.export import export

    quiet_library_noise()
    try:
        done = export(args.checkpoint, args.out, args.dtype, args.tokenizer, args.eot_token)
    except (ValueError, OSError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"motlab export: error: {message}", file=sys.stderr)
        return 2
    if done.remote_code:
        kind = f"remote code ({', '.join(done.variants)}; {done.why})"
        load = f'AutoModelForCausalLM.from_pretrained("{done.out}", trust_remote_code=True)'
    else:
        kind = "GPT2LMHeadModel"
        load = f'AutoModelForCausalLM.from_pretrained("{done.out}")'
    print(f"motlab export: {done.out} as {kind}")
    print(f"  checked: logits within {done.max_difference:.2g} of the checkpoint's model")
    print(f"  load:    {load}")
    print(f"  share:   hf upload USER/NAME {done.out}")
    return 0
