"""Zero-shot multiple-choice evaluation, as in the paper's rebuttal (METHOD.md §7).

Every task is normalised to examples ``{context, choices, label}``. A choice is scored by the
sum of the log-probabilities of its tokens given the context (context and choice tokenized
separately and concatenated; the window is cut on the left to the model's ``seq_len``). The
prediction is the choice with the highest score (``acc``) or with the highest score divided by
the choice's length **in characters** (``acc_norm``, as lm-evaluation-harness does).

MoT models mix the rows of a group, so a query never runs alone: it is placed in a batch of
exactly one group (G rows) whose other G - 1 rows are random C4 training windows (cut to the
query's length), as in the paper. The filler rows are drawn once per example, so all choices of
an example see the same filler. Expert choice groups the batch the same way and is treated
alike. Dense and token-choice models score plain batches of queries (right-padded; causal
attention keeps the padding out of the scores). Token choice computes its expert capacity over
the whole batch, as in training, so its scores depend a little on which queries share a batch;
``--batch-size 1`` scores every query alone.

Tasks: ``piqa``, ``hellaswag`` and ``arc_easy`` load from the Hugging Face hub with
``datasets.load_dataset``; any other value is a local ``.jsonl`` (or ``.json``/``.jsonl.gz``) file
in the normalised format or in the datasets' own field layouts (PIQA ``goal/sol1/sol2/label``,
HellaSwag ``ctx/endings/label``, ARC ``question/choices/answerKey``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from motlab.filler import pad_with_filler
from motlab.model import GPT


class TaskUnavailableError(RuntimeError):
    """A task could not be loaded (hub unreachable, unknown name, malformed file)."""


@dataclass(frozen=True)
class MCExample:
    """One multiple-choice question: the model scores ``context + choices[i]`` for every i."""

    context: str
    choices: list[str]
    label: int


@dataclass(frozen=True)
class HubTask:
    candidates: tuple[tuple[str, str | None], ...]
    """(dataset, config) pairs tried in order (mirrors move; loading scripts were retired)."""
    split: str
    """Split with public labels (PIQA's and HellaSwag's test splits have none)."""


HUB_TASKS: dict[str, HubTask] = {
    "piqa": HubTask((("baber/piqa", None), ("ybisk/piqa", None), ("piqa", None)), "validation"),
    "hellaswag": HubTask((("Rowan/hellaswag", None), ("hellaswag", None)), "validation"),
    "arc_easy": HubTask((("allenai/ai2_arc", "ARC-Easy"), ("ai2_arc", "ARC-Easy")), "test"),
}

LOCAL_HINT = (
    "pass a local file instead: --task PATH.jsonl, one JSON object per line with "
    '"context", "choices" (list of strings) and "label" (index of the right choice), or the '
    "dataset's own fields (PIQA goal/sol1/sol2/label, HellaSwag ctx/endings/label, "
    "ARC question/choices/answerKey)"
)


# -- task formats -----------------------------------------------------------------------------


def _hellaswag_clean(text: str) -> str:
    """HellaSwag's WikiHow artefacts: " [title]" marks a sentence end, other [tags] go."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _label_index(label: Any, n_choices: int, labels: Sequence[Any] | None = None) -> int:
    if labels is not None:
        if label not in labels:
            raise ValueError(f"answer {label!r} not among the choice labels {list(labels)}")
        return list(labels).index(label)
    if isinstance(label, str) and label.strip().lstrip("-").isdigit():
        label = int(label)
    if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < n_choices:
        raise ValueError(f"label {label!r} is not a choice index below {n_choices}")
    return label


def normalise(row: Mapping[str, Any]) -> MCExample:
    """One record in any supported layout → :class:`MCExample`."""
    if "context" in row and "choices" in row:  # already normalised
        choices = [str(c) for c in row["choices"]]
        return MCExample(str(row["context"]), choices, _label_index(row["label"], len(choices)))
    if "goal" in row and "sol1" in row:  # PIQA
        choices = [" " + row["sol1"], " " + row["sol2"]]
        return MCExample(
            f"Question: {row['goal']}\nAnswer:", choices, _label_index(row["label"], 2)
        )
    if "endings" in row:  # HellaSwag
        if "ctx_a" in row:
            ctx = row["ctx_a"] + " " + row.get("ctx_b", "").capitalize()
        else:
            ctx = row["ctx"]
        if row.get("activity_label"):
            ctx = f"{row['activity_label']}: {ctx}"
        choices = [" " + _hellaswag_clean(e) for e in row["endings"]]
        return MCExample(_hellaswag_clean(ctx), choices, _label_index(row["label"], len(choices)))
    if "question" in row and "answerKey" in row:  # ARC
        question = row["question"]
        if isinstance(question, Mapping):  # the original ARC jsonl nests stem and choices
            options, question = question["choices"], question["stem"]
        else:
            options = row["choices"]
        if isinstance(options, Mapping):  # the hub's {"text": [...], "label": [...]}
            texts, labels = list(options["text"]), list(options["label"])
        else:  # [{"text": ..., "label": ...}, ...]
            texts = [o["text"] for o in options]
            labels = [o["label"] for o in options]
        choices = [" " + t for t in texts]
        label = _label_index(row["answerKey"], len(choices), labels)
        return MCExample(f"Question: {question}\nAnswer:", choices, label)
    raise ValueError(
        f"unrecognised record with keys {sorted(row)}; expected context/choices/label or a "
        "PIQA, HellaSwag or ARC record"
    )


def _read_local(path: Path) -> list[dict[str, Any]]:
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        text = f.read()
    if text.lstrip().startswith("["):
        return list(json.loads(text))
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as err:
                raise TaskUnavailableError(f"{path}:{n}: invalid JSON ({err})") from err
    return rows


def _load_hub(task: str, split: str | None) -> Iterable[Mapping[str, Any]]:
    from motlab.data.sources import probe_hub

    spec = HUB_TASKS[task]
    reason = probe_hub()
    if reason is not None and "offline mode" not in reason:
        raise TaskUnavailableError(
            f"cannot load task {task!r} from the Hugging Face hub: {reason}; " + LOCAL_HINT
        )
    import datasets

    errors = []
    for name, config in spec.candidates:
        try:
            return datasets.load_dataset(name, config, split=split or spec.split)
        except Exception as err:  # noqa: BLE001 - every failure falls through to the next mirror
            errors.append(f"{name}{'/' + config if config else ''}: {type(err).__name__}: {err}")
    why = reason or "no mirror could be loaded"
    raise TaskUnavailableError(
        f"cannot load task {task!r} from the Hugging Face hub ({why}):\n  "
        + "\n  ".join(errors)
        + "\n"
        + LOCAL_HINT
    )


def load_task(task: str, split: str | None = None, limit: int | None = None) -> list[MCExample]:
    """Examples of ``task``: a hub task name (:data:`HUB_TASKS`) or a local jsonl/json file."""
    looks_local = task.endswith((".jsonl", ".json", ".gz")) or os.sep in task
    if task in HUB_TASKS and not looks_local:
        rows: Iterable[Mapping[str, Any]] = _load_hub(task, split)
        where = task
    elif looks_local or Path(task).is_file():
        path = Path(task).expanduser()
        if not path.is_file():
            raise TaskUnavailableError(f"no task file at {path}")
        rows = _read_local(path)
        where = str(path)
    else:
        raise TaskUnavailableError(
            f"unknown task {task!r}; valid: {', '.join(HUB_TASKS)} or a path to a .jsonl file"
        )
    examples = []
    for i, row in enumerate(rows):
        if limit is not None and len(examples) >= limit:
            break
        try:
            examples.append(normalise(row))
        except (KeyError, TypeError, ValueError) as err:
            raise TaskUnavailableError(f"{where}: record {i}: {err}") from err
    if not examples:
        raise TaskUnavailableError(f"{where}: no examples")
    return examples


# -- scoring ----------------------------------------------------------------------------------


def window(
    context_ids: Sequence[int], choice_ids: Sequence[int], seq_len: int
) -> tuple[list[int], int]:
    """Model input for scoring a choice, cut on the left to ``seq_len``, and the number of
    scored positions (the last ``n`` positions predict the choice's tokens)."""
    if not choice_ids:
        raise ValueError("a choice tokenized to nothing")
    full = list(context_ids) + list(choice_ids)
    full = full[-(seq_len + 1) :]
    inputs = full[:-1]
    return inputs, min(len(choice_ids), len(inputs))


@torch.no_grad()
def score_rows(
    model: GPT,
    rows: Sequence[tuple[Sequence[int], Sequence[int]]],
    filler_FT: Tensor | None = None,
    pad_id: int = 0,
) -> list[float]:
    """Sum of log p(choice | context) for each (context_ids, choice_ids) row, in one batch.

    Rows are right-padded to the longest. For a model with group size G > 1 the batch is
    completed to a multiple of G with ``filler_FT`` rows (cut to the batch's length); the scores
    of the real rows only are returned.
    """
    device = next(model.parameters()).device
    seq_len = model.cfg.seq_len
    windows = [window(c, x, seq_len) for c, x in rows]
    L = max(len(w) for w, _ in windows)
    batch_RL = torch.full((len(rows), L), pad_id, dtype=torch.long)
    for r, (ids, _) in enumerate(windows):
        batch_RL[r, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    G = model.cfg.group_size
    if G > 1 or filler_FT is not None:
        if G > 1 and filler_FT is None:
            raise ValueError(f"a model with group size {G} needs filler rows (filler_FT)")
        batch_BL, _ = pad_with_filler(batch_RL, G, filler_FT=filler_FT)
    else:
        batch_BL = batch_RL
    logits = model(batch_BL.to(device))[: len(rows)].float()
    logprobs_RLV = F.log_softmax(logits, dim=-1)
    scores = []
    for r, ((ids, n), (_, choice)) in enumerate(zip(windows, rows, strict=True)):
        end = len(ids)
        targets = torch.tensor(list(choice)[-n:], device=device)
        picked = logprobs_RLV[r, end - n : end].gather(-1, targets[:, None])
        scores.append(float(picked.sum()))
    return scores


@dataclass
class ZeroShotResult:
    task: str
    n: int
    acc: float
    acc_norm: float
    """Accuracy with scores divided by the choice's length in characters."""
    group_size: int
    filler: str
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text).ids)


def evaluate(
    model: GPT,
    tokenizer: Any,
    examples: Sequence[MCExample],
    filler_pool_PT: Tensor | None = None,
    batch_size: int = 32,
    seed: int = 0,
    task: str = "task",
    eot_id: int | None = None,
    progress: bool = False,
) -> ZeroShotResult:
    """Accuracy and length-normalised accuracy of ``model`` on ``examples``.

    MoT (group size G > 1): each example's G - 1 filler rows are drawn without replacement from
    ``filler_pool_PT`` (P ≥ G - 1 windows of at least ``seq_len`` tokens) with a generator seeded
    by ``seed``; each (example, choice) is then scored alone in one group. Other models score
    ``batch_size`` queries per batch.
    """
    model.eval()
    G = model.cfg.group_size
    if G > 1:
        if filler_pool_PT is None:
            raise ValueError(
                f"this model mixes groups of {G} sequences: give filler windows (C4 training "
                "data) to place each query among"
            )
        if filler_pool_PT.shape[0] < G - 1:
            raise ValueError(f"need at least {G - 1} filler windows, got {filler_pool_PT.shape[0]}")
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    context_prefix = [] if eot_id is None else [eot_id]

    requests: list[tuple[int, list[int], list[int]]] = []  # (example, context ids, choice ids)
    for i, ex in enumerate(examples):
        ctx = _encode(tokenizer, ex.context) if ex.context else context_prefix
        if not ctx:
            raise ValueError(f"example {i} has an empty context and no end-of-text token given")
        for choice in ex.choices:
            requests.append((i, ctx, _encode(tokenizer, choice)))

    scores: list[float] = []
    if G > 1:
        assert filler_pool_PT is not None
        fillers: dict[int, Tensor] = {}
        for n, (i, ctx, choice) in enumerate(requests):
            if i not in fillers:
                fillers.clear()
                idx = torch.randperm(filler_pool_PT.shape[0], generator=generator)[: G - 1]
                fillers[i] = filler_pool_PT[idx]
            scores += score_rows(model, [(ctx, choice)], filler_FT=fillers[i])
            if progress and n % 200 == 0:
                print(f"  {n}/{len(requests)} queries", file=sys.stderr)
    else:
        for b in range(0, len(requests), batch_size):
            chunk = requests[b : b + batch_size]
            scores += score_rows(model, [(c, x) for _, c, x in chunk])
            if progress and (b // batch_size) % 20 == 0:
                print(f"  {b}/{len(requests)} queries", file=sys.stderr)

    correct = correct_norm = 0
    k = 0
    for ex in examples:
        ll = scores[k : k + len(ex.choices)]
        k += len(ex.choices)
        norm = [s / max(len(c), 1) for s, c in zip(ll, ex.choices, strict=True)]
        correct += int(max(range(len(ll)), key=ll.__getitem__) == ex.label)
        correct_norm += int(max(range(len(norm)), key=norm.__getitem__) == ex.label)
    n = len(examples)
    return ZeroShotResult(
        task=task,
        n=n,
        acc=correct / n,
        acc_norm=correct_norm / n,
        group_size=G,
        filler="c4" if G > 1 else "none",
        seconds=time.perf_counter() - start,
    )


def c4_filler_windows(
    data: str | None, tokenizer: str, seq_len: int, n: int = 512, seed: int = 1234
) -> Tensor:
    """``n`` random training windows (n, seq_len) from C4: a local copy in C4's layout
    (``data``) or, when ``data`` is None, streamed from the hub — through the training data
    pipeline (:class:`motlab.data.C4DataModule`), shuffled."""
    from motlab.data.module import C4DataModule

    dm = C4DataModule(
        path=data,
        tokenizer=tokenizer,
        seq_len=seq_len,
        batch_size=min(n, 64),
        num_workers=0,
        shuffle_buffer=256,
        seed=seed,
        val_batches=0,
    )
    dm.setup("fit")
    windows: list[Tensor] = []
    got = 0
    for batch in dm.train_dataloader():
        windows.append(batch[:, :seq_len])
        got += batch.shape[0]
        if got >= n:
            break
    return torch.cat(windows)[:n]


# -- command ----------------------------------------------------------------------------------


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


if __name__ == "__main__":
    raise SystemExit(main())
