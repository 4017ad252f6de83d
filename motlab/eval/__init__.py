"""Evaluation through EleutherAI's lm-evaluation-harness, with the filler protocol MoT needs.

The harness supplies tasks, prompts and metrics; motlab supplies the model backend
(:class:`~motlab.eval.lm.MotlabLM`, registered as ``--model motlab`` when this package is
imported with the harness installed, ``pip install 'motlab[eval]'``) and what no harness knows:
a MoT model scores each request in a group of its own among G - 1 filler rows drawn with a seed
from the request itself (:mod:`.filler_pool`, :mod:`.scoring`). Commands: ``motlab zeroshot``
(:mod:`.zeroshot`, motlab's defaults) and ``motlab lm_eval`` (:mod:`.harness`, the harness's own
CLI with the backend registered).
"""

from typing import Any

from motlab.eval.filler_pool import (
    FillerPool,
    c4_filler_pool,
    random_filler_pool,
    request_seed,
)
from motlab.eval.scoring import ContinuationTooLongError, ScoreRequest, score_requests

MISSING_HARNESS = (
    "lm-evaluation-harness is not installed; install motlab's evaluation extra: "
    "pip install 'motlab[eval]' (or pip install lm-eval)"
)

try:
    import lm_eval  # noqa: F401
except ImportError:  # the extra is not installed: the scoring still works, the backend not
    pass
else:
    from motlab.eval.lm import MotlabLM  # registers "motlab" in the harness's model registry

__all__ = [
    "MISSING_HARNESS",
    "ContinuationTooLongError",
    "FillerPool",
    "MotlabLM",
    "ScoreRequest",
    "c4_filler_pool",
    "random_filler_pool",
    "request_seed",
    "score_requests",
]


def __getattr__(name: str) -> Any:
    if name == "MotlabLM":  # only reached without the harness
        raise ImportError(MISSING_HARNESS)
    raise AttributeError(f"module 'motlab.eval' has no attribute {name!r}")
