"""Several ``motlab`` command lines against one local hub, in one process: each case's exit
status and what it printed. For the reachability tests (``tests/test_hub.py``), which would
otherwise pay the start of a process per case.

    python tests/scripts/hub_errors.py OUT.json CASES.json

CASES.json maps each case's name to ``{"argv", "token"}``: ``motlab ARGV`` (through
``motlab.cli.main``) with ``HF_TOKEN`` set to ``token`` (or unset). ``huggingface_hub`` reads
``HF_TOKEN`` at each request, so cases can differ in it; ``HF_ENDPOINT`` comes from the
environment.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time

from motlab.cli import main as motlab_main


def run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            motlab_main(argv)
            code = 0
        except SystemExit as e:
            code = int(e.code or 0)
    return code, out.getvalue()


def main() -> None:
    out, cases = sys.argv[1], json.loads(open(sys.argv[2]).read())
    sys.argv = sys.argv[:1]  # the command line is each case's, not this script's
    results = {}
    for name, case in cases.items():
        os.environ.pop("HF_TOKEN", None)
        if case.get("token"):
            os.environ["HF_TOKEN"] = case["token"]
        start = time.perf_counter()
        code, text = run(case["argv"])
        results[name] = {
            "code": code,
            "output": text,
            "seconds": time.perf_counter() - start,
        }
    with open(out, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
