"""The data module's batches from the local hub under each fault scenario, in one process.

Run by ``tests/data/test_data_remote.py`` with the environment of ``local_hub.hub_env`` (the
hub's clients read ``HF_ENDPOINT`` on import):

    python tests/scripts/hub_stream.py OUT.pt STEPS SCENARIO_JSON...

Each scenario is ``{"name", "spec", "seed", "chunked", "settings"}``: the script sets the
hub's faults (``PUT /_faults``), builds a fresh :class:`~motlab.data.C4DataModule` on the
default hub path (no ``path``, tokenizer ``gpt2``; ``settings`` override :data:`SETTINGS`),
takes ``STEPS`` train batches and the validation batches, and keeps them with the retry
messages logged meanwhile, the hub's fault report, and the error if reading gave up.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import urllib.request

import torch

from motlab.data import C4DataModule
from motlab.data.remote import HubReadError

SETTINGS = dict(
    seq_len=32,
    batch_size=32,
    num_workers=0,  # one reader: the hub meets the requests, and so the faults, in one order
    shuffle_buffer=100,
    val_batches=2,
    hub_retries=4,
    hub_backoff=0.05,
    hub_backoff_max=0.4,
    hub_timeout=10.0,
)


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def control(url: str, route: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url + route, data=data, method="PUT" if data else "GET")
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.load(answer)


def main() -> None:
    import os

    out, steps, scenarios = sys.argv[1], int(sys.argv[2]), [json.loads(a) for a in sys.argv[3:]]
    url = os.environ["HF_ENDPOINT"]
    keep = Keep()
    logging.getLogger("motlab.data.remote").addHandler(keep)
    results = {}
    for scenario in scenarios:
        control(url, "/_faults", {k: scenario.get(k) for k in ("spec", "seed", "chunked")})
        keep.lines = []
        start = time.perf_counter()
        train: list[torch.Tensor] = []
        val: list[torch.Tensor] = []
        error = None
        dm = C4DataModule(**{**SETTINGS, **scenario.get("settings", {})})
        try:
            dm.setup("fit")
            batches = iter(dm.train_dataloader())
            train = [next(batches) for _ in range(steps)]
            val = list(dm.val_dataloader())
        except HubReadError as e:
            error = str(e)
        except Exception as e:  # any other failure: that scenario's tests fail, not the rest
            error = f"{type(e).__name__}: {e}"
        dm.close()
        results[scenario["name"]] = {
            "train": train,
            "val": val,
            "logged": list(keep.lines),
            "faults": control(url, "/_faults"),
            "error": error,
            "seconds": time.perf_counter() - start,
        }
    torch.save({"settings": SETTINGS, "results": results}, out)


if __name__ == "__main__":
    main()
