"""The model card (``README.md``) of an export, written from the run that trained the model.

What a reader of the hub page needs to use and judge the model: the variant and its sizes,
parameters and active parameters per token (:func:`motlab.model_stats`), the steps and tokens it
was trained for and its last validation loss (from the run's TensorBoard logs beside the
checkpoint, :func:`motlab.analysis.runs.read_run`), the training data, and for MoT and expert
choice how a batch is formed at inference. What the run did not record is said to be unknown,
never guessed.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from motlab.config import GPTConfig
from motlab.metrics import VAL_LOSS
from motlab.rundir import CHECKPOINT_DIR, is_version_dir
from motlab.stats import model_stats

DESCRIPTIONS = {
    "dense": "dense (ReLU feed-forward in every block)",
    "mot": "Mixture of Tokens (MoT)",
    "token_choice": "token-choice mixture of experts",
    "expert_choice": "causal expert-choice mixture of experts",
}


@dataclass(frozen=True)
class RunFacts:
    """What the checkpoint and its run recorded about the training."""

    checkpoint: str
    """The checkpoint's file name (where it was exported from)."""
    steps: int | None
    tokens: float | None
    val_loss: float | None
    val_step: int | None
    data: dict[str, Any]
    """The data module's settings (``path``, ``tokenizer``, ...), as the checkpoint saved them."""


def run_facts(checkpoint: Path, steps: int | None, data: dict[str, Any]) -> RunFacts:
    """The facts of the checkpoint at ``checkpoint`` (trained ``steps`` optimiser steps): the
    tokens and the last validation loss up to that step from the TensorBoard logs of its
    version directory (``version_N/checkpoints/last.ckpt``), when they are there."""
    tokens = val_loss = val_step = None
    version = checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINT_DIR else None
    if version is not None and is_version_dir(version) and steps is not None:
        try:
            from motlab.analysis.runs import read_run

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # other runs in the experiment: read below
                run = read_run(version.parent)
                if version.name not in run.versions:  # an older, separate run
                    run = read_run(version)
        except (FileNotFoundError, ImportError):
            run = None
        if run is not None and steps > 0:
            # motlab.analysis reads steps trained (TensorBoard's index + 1, motlab.clock).
            at = run.tokens_at(float(steps))
            tokens = float(at) if at is not None else None
            if VAL_LOSS in run.scalars:
                series = run[VAL_LOSS]
                done = series.steps <= steps
                if done.any():
                    val_step = int(series.steps[done][-1])
                    val_loss = float(series.values[done][-1])
    return RunFacts(checkpoint.name, steps, tokens, val_loss, val_step, dict(data))


def model_card(
    cfg: GPTConfig, facts: RunFacts, name: str, remote_code: bool, dtype: str, why: str
) -> str:
    """The card's Markdown (with the hub's YAML header)."""
    variant = cfg.ffn.variant if cfg.routed_blocks() else "dense"
    stats = model_stats(cfg)
    tags = ["motlab", variant.replace("_", "-")]
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "tags:",
        *(f"- {tag}" for tag in tags),
        "---",
        "",
        f"# {name}",
        "",
        f"A {DESCRIPTIONS.get(variant, variant)} language model trained with motlab and exported "
        f"from its checkpoint `{facts.checkpoint}`.",
        "",
        "## Model",
        "",
        "| | |",
        "|---|---|",
        f"| variant | {_variant(cfg, variant)} |",
        f"| sizes | d_model {cfg.d_model}, {cfg.n_layers} blocks, {cfg.n_heads} heads, d_ff "
        f"{cfg.d_ff}, vocabulary {cfg.vocab_size}, context {cfg.seq_len} tokens |",
        f"| parameters | {stats.total_params:,} ({stats.active_params:,} active per token) |",
        f"| final LayerNorm | {'yes' if cfg.final_norm else 'no'} |",
        f"| weights | {dtype} |",
        "",
        "## Training",
        "",
        "| | |",
        "|---|---|",
        f"| steps | {_or_unknown(facts.steps, '{:,}')} |",
        f"| tokens | {_tokens(facts.tokens)} |",
        f"| final validation loss | {_val_loss(facts)} |",
        f"| data | {_data(facts.data)} |",
        "",
    ]
    lines += _inference(cfg, variant)
    lines += _usage(name, remote_code, why, cfg)
    return "\n".join(lines) + "\n"


def _variant(cfg: GPTConfig, variant: str) -> str:
    if variant == "dense":
        return "dense"
    keys = {k: v for k, v in vars(cfg.ffn).items() if k != "variant"}
    settings = ", ".join(f"{k} {v}" for k, v in keys.items())
    return f"{variant} ({settings}) in blocks {cfg.routed_blocks()}, dense in the others"


def _inference(cfg: GPTConfig, variant: str) -> list[str]:
    G = cfg.group_size
    if G > 1:
        return [
            "## How batches are formed at inference",
            "",
            f"The {variant} layers mix or pick among the rows of a group of **G = {G}** rows "
            "at every position, so a row's output depends on the other rows of its group, as in "
            "training. A batch whose size is a multiple of G is run as it is. Otherwise "
            "`forward` (and `generate()`) completes the last group with filler rows, as motlab's "
            "own generation does, and drops them from the output: random tokens drawn once from "
            "`config.filler_seed`, a filler row holding the same token at a given position in "
            "every call, or the windows given with `model.set_filler(tokens)` (e.g. training "
            "text, as in the paper's evaluation). Padding (`attention_mask` 0) takes no part in "
            "a group. Beam search is not supported.",
            "",
        ]
    if variant == "token_choice":
        return [
            "## Inference",
            "",
            "Token choice runs **dropless** here (every token gets its experts; "
            "`config.capacity`), so a row's logits do not depend on the rest of the batch. "
            'Load with `capacity="training"` for the training capacity factor (and, when '
            "training further, the load-balancing loss that `forward` adds to the loss).",
            "",
        ]
    return []


def _usage(name: str, remote_code: bool, why: str, cfg: GPTConfig) -> list[str]:
    trust = ", trust_remote_code=True" if remote_code else ""
    fmt = (
        "remote code: `modeling_motlab.py` and the motlab modules beside it are motlab's own "
        f"model code, so loading needs `trust_remote_code=True` ({why}); `AutoTokenizer` "
        "reads the model's config too, so it takes the same argument"
        if remote_code
        else "transformers' own `GPT2LMHeadModel` (ReLU, untied head, zero biases), loaded "
        "without remote code"
    )
    return [
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'model = AutoModelForCausalLM.from_pretrained("{name}"{trust})',
        f'tokenizer = AutoTokenizer.from_pretrained("{name}"{trust})',
        'inputs = tokenizer("The weather today is", return_tensors="pt")',
        "out = model.generate(**inputs, max_new_tokens=20, do_sample=False)",
        "print(tokenizer.decode(out[0]))",
        "```",
        "",
        f"Format: {fmt}. The context is at most {cfg.seq_len} tokens (learned positions). "
        "In motlab, `motlab.load_model(DIR)` and `--model.init_from DIR` read this directory "
        "back, and `motlab generate --checkpoint DIR` tries it.",
        "",
    ]


def _or_unknown(value: Any, fmt: str = "{}") -> str:
    return "not recorded" if value is None else fmt.format(value)


def _tokens(tokens: float | None) -> str:
    if tokens is None or not math.isfinite(tokens):
        return "not recorded"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if tokens >= size:
            return f"{tokens / size:.3g}{unit} ({tokens:,.0f})"
    return f"{tokens:,.0f}"


def _val_loss(facts: RunFacts) -> str:
    if facts.val_loss is None:
        return "not recorded"
    return f"{facts.val_loss:.4f} (step {facts.val_step:,})"


def _data(data: dict[str, Any]) -> str:
    """Where the documents came from (a local copy, or the hub dataset streamed) and the
    tokenizer, as the checkpoint's data settings say."""
    if not data:
        return "not recorded"
    subset = f", `{data['hub_config']}`" if data.get("hub_config") else ""
    if data.get("path") or data.get("train_files"):
        source = f"local files `{data.get('train_files') or data.get('path')}`{subset}"
    elif data.get("hub_dataset"):
        source = f"`{data['hub_dataset']}`{subset} streamed from the Hugging Face hub"
    else:
        source = "not recorded"
    if data.get("tokenizer"):
        source += f"; tokenizer `{data['tokenizer']}`"
    return source
