"""Zero-shot multiple-choice evaluation, as in the paper's rebuttal (METHOD.md §7).

Every task is normalised to examples ``{context, choices, label}`` (:mod:`.tasks`); each choice
is scored by its continuation log-likelihood, MoT queries among C4 filler rows (:mod:`.scoring`);
``motlab zeroshot`` is the command-line front end (:mod:`.command`).
"""

from motlab.zeroshot.command import build_parser, main
from motlab.zeroshot.scoring import ZeroShotResult, c4_filler_windows, evaluate, score_rows, window
from motlab.zeroshot.tasks import (
    HUB_TASKS,
    LOCAL_HINT,
    HubTask,
    MCExample,
    TaskUnavailableError,
    load_task,
    normalise,
)

__all__ = [
    "HUB_TASKS",
    "LOCAL_HINT",
    "HubTask",
    "MCExample",
    "TaskUnavailableError",
    "ZeroShotResult",
    "build_parser",
    "c4_filler_windows",
    "evaluate",
    "load_task",
    "main",
    "normalise",
    "score_rows",
    "window",
]
