"""Multiple-choice tasks, normalised to examples ``{context, choices, label}`` (METHOD.md §7).

Tasks: ``piqa``, ``hellaswag`` and ``arc_easy`` load from the Hugging Face hub with
``datasets.load_dataset``; any other value is a local ``.jsonl`` (or ``.json``/``.jsonl.gz``) file
in the normalised format or in the datasets' own field layouts (PIQA ``goal/sol1/sol2/label``,
HellaSwag ``ctx/endings/label``, ARC ``question/choices/answerKey``).
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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
    from motlab.hub import probe_hub

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
