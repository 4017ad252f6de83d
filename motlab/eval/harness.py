"""``motlab lm_eval ...``: the harness's own command line, with ``--model motlab`` available.

lm-evaluation-harness 0.4.x finds models only in its registry and in its built-in table; it
reads no package entry points, so a plain ``lm_eval --model motlab`` cannot know this backend.
This command imports :mod:`motlab.eval.lm` (which registers it) and hands every argument to
the harness's CLI unchanged: ``motlab lm_eval run --model motlab --model_args
checkpoint=PATH,data=DIR --tasks piqa`` takes every flag ``lm_eval run`` takes.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the harness CLI on ``argv`` (default: the process's arguments) with the backend."""
    from motlab.eval import MISSING_HARNESS

    try:
        import lm_eval  # noqa: F401 - first: a cached submodule import would not fail
        from lm_eval.__main__ import cli_evaluate

        import motlab.eval.lm  # noqa: F401 - registers --model motlab
    except ImportError as err:
        if (err.name or "").split(".")[0] != "lm_eval":
            raise
        print(f"motlab lm_eval: error: {MISSING_HARNESS}", file=sys.stderr)
        return 2
    args = list(sys.argv[1:] if argv is None else argv)
    # The harness's parser reads sys.argv itself (it inserts "run" for the legacy form).
    saved = sys.argv
    sys.argv = ["motlab lm_eval", *args]
    try:
        cli_evaluate()
    finally:
        sys.argv = saved
    return 0
