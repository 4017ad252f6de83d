"""``motlab zeroshot``: lm-evaluation-harness tasks on a motlab checkpoint, motlab's defaults.

A thin front end over ``lm_eval.simple_evaluate`` with the ``motlab`` backend: zero-shot, the
checkpoint's tokenizer and training data (for MoT filler rows) when they resolve here, C4
filler, the whole task unless ``--limit``. Tasks are the harness's (``piqa``, ``hellaswag``,
``arc_easy``, ... or a task YAML under ``--include-path``); a ``.jsonl`` file of
``{"context", "choices", "label"}`` records is also accepted as a multiple-choice task.
Everything else the harness offers is ``motlab lm_eval run --model motlab ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from motlab.eval.filler_pool import DEFAULT_WINDOWS, FILLERS
from motlab.eval.scoring import DEFAULT_BATCH_SIZE


def jsonl_task(path: Path) -> dict[str, Any]:
    """A harness task config for a local multiple-choice file: one JSON object per line with
    ``context``, ``choices`` (strings, each scored as a continuation of the context exactly as
    written, so usually with a leading space) and ``label`` (index of the right choice)."""
    if not path.is_file():
        raise FileNotFoundError(f"--task: no task file at {path}")
    return {
        "task": path.stem,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(path.resolve())}},
        "output_type": "multiple_choice",
        "test_split": "test",
        "doc_to_text": "context",
        "doc_to_choice": "choices",
        "doc_to_target": "label",
        "target_delimiter": "",  # choices are scored exactly as written (" yes", not "yes")
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1.0},
    }


def task_specs(values: Sequence[str]) -> list[str | dict[str, Any]]:
    """``--task`` values (each comma-separated) → harness task names and local-file configs."""
    specs: list[str | dict[str, Any]] = []
    for value in values:
        for name in filter(None, (v.strip() for v in value.split(","))):
            specs.append(jsonl_task(Path(name)) if name.endswith(".jsonl") else name)
    return specs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="motlab zeroshot",
        description=(
            "Zero-shot evaluation of a motlab checkpoint through lm-evaluation-harness (acc and "
            "acc_norm for multiple choice). A MoT model scores every request in a group of its "
            "own whose other rows are C4 training windows drawn from the request itself, as in "
            "the paper's rebuttal. For every harness option: motlab lm_eval run --model motlab."
        ),
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        help="a motlab fit checkpoint or save_model file, or an experiment directory (runs/mot)",
    )
    p.add_argument(
        "--task",
        "--tasks",
        action="append",
        required=True,
        help="harness task names, comma-separated or repeated (piqa,hellaswag,arc_easy), or a "
        "PATH.jsonl of {context, choices, label} records",
    )
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N examples of each")
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
    p.add_argument("--filler", choices=FILLERS, default="c4", help="MoT filler rows (default c4)")
    p.add_argument(
        "--filler-pool",
        type=int,
        default=DEFAULT_WINDOWS,
        help=f"windows in the filler pool (default {DEFAULT_WINDOWS})",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the filler pool and draws")
    p.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"requests per forward pass (MoT: x group size rows; default {DEFAULT_BATCH_SIZE})",
    )
    p.add_argument("--num-fewshot", type=int, default=0, help="in-context examples (default 0)")
    p.add_argument("--include-path", default=None, help="a directory of extra task YAMLs")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--output", default=None, help="also write the harness's results as JSON here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``motlab zeroshot``; returns the exit status."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)

    def fail(message: object) -> int:
        print(f"motlab zeroshot: error: {message}", file=sys.stderr)
        return 2

    from motlab.eval import MISSING_HARNESS

    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
        from lm_eval.utils import handle_non_serializable, make_table

        from motlab.eval.lm import MotlabLM
    except ImportError as err:
        if (err.name or "").split(".")[0] != "lm_eval":
            raise
        return fail(MISSING_HARNESS)
    from motlab.data import HubUnreachableError

    try:
        tasks = task_specs(args.task)
        model = MotlabLM(
            checkpoint=args.checkpoint,
            tokenizer=args.tokenizer,
            data=args.data,
            filler=args.filler,
            filler_pool=args.filler_pool,
            seed=args.seed,
            batch_size=args.batch_size,
            device=args.device,
        )
        print(
            f"motlab zeroshot: group size {model.group_size}, filler {model.filler_description}",
            file=sys.stderr,
        )
        results = lm_eval.simple_evaluate(
            model=model,
            tasks=tasks,
            num_fewshot=args.num_fewshot,
            limit=args.limit,
            # The harness indexes its hundreds of built-in tasks (seconds) only when named.
            task_manager=TaskManager(
                include_path=args.include_path,
                include_defaults=any(isinstance(t, str) for t in tasks),
            ),
            log_samples=False,
        )
    except HubUnreachableError as err:  # the filler's C4 or the tokenizer
        return fail(
            f"{err}\nFor zeroshot: pass --data DIR (a local C4 copy) or --filler random for the "
            "MoT filler rows, and --tokenizer PATH/tokenizer.json."
        )
    except ConnectionError as err:  # a task's dataset, loaded by the harness through datasets
        return fail(
            f"{err}\nThe harness loads task data from the Hugging Face hub with datasets; "
            "without the hub, use its datasets cache from an earlier online run "
            "(HF_DATASETS_OFFLINE=1), or a local task: --task PATH.jsonl or a task YAML under "
            "--include-path DIR."
        )
    except (FileNotFoundError, ValueError, KeyError) as err:
        return fail(err)
    assert results is not None
    results["config"]["model"] = "motlab"
    results["config"]["model_args"] = {
        "checkpoint": args.checkpoint,
        "tokenizer": model.tokenizer_source,
        "filler": model.filler_kind,
        "filler_source": model.filler.source if model.filler is not None else None,
        "filler_pool": args.filler_pool,
        "group_size": model.group_size,
        "seed": args.seed,
    }
    print(make_table(results))
    if "groups" in results:
        print(make_table(results, "groups"))
    if args.output:
        text = json.dumps(results, indent=2, default=handle_non_serializable)
        Path(args.output).write_text(text + "\n")
    return 0
