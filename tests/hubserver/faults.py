"""Network faults the local hub injects into file bodies, on request.

A spec is a comma-separated list of faults, each with the probability that it hits a response:

* ``reset:P`` — the body is cut off after a random part of it by a connection reset (RST);
* ``status:CODE:P`` — the request is answered with CODE (500, 502, 503, or 429 with a
  ``Retry-After`` header) instead of the file;
* ``stall:SECONDS:P`` — the body stops after a random part for SECONDS, then goes on;
* ``truncate:P`` — the body ends after a random part, the connection closed cleanly, although
  the headers announced the whole length.

For each response the faults are drawn in the order given; the first that hits is applied
(at most one per response). Draws come from one seeded generator, so a client that makes its
requests in a fixed order meets the same faults every time.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass

KINDS = ("reset", "status", "stall", "truncate")
STATUS_CODES = (429, 500, 502, 503, 504)


@dataclass(frozen=True)
class Fault:
    kind: str
    probability: float
    code: int = 0  # status
    seconds: float = 0.0  # stall

    @property
    def name(self) -> str:
        """How the fault is counted: ``reset``, ``status:503``, ``stall``, ``truncate``."""
        return f"status:{self.code}" if self.kind == "status" else self.kind


def parse_spec(spec: str) -> list[Fault]:
    """``"reset:0.2,status:503:0.1"`` -> faults; a clear error for anything else."""
    faults = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        kind, *args = item.split(":")
        try:
            if kind in ("reset", "truncate") and len(args) == 1:
                fault = Fault(kind, float(args[0]))
            elif kind == "status" and len(args) == 2:
                fault = Fault(kind, float(args[1]), code=int(args[0]))
                if fault.code not in STATUS_CODES:
                    raise ValueError(f"status code must be one of {STATUS_CODES}")
            elif kind == "stall" and len(args) == 2:
                fault = Fault(kind, float(args[1]), seconds=float(args[0]))
            else:
                raise ValueError("expected reset:P, truncate:P, status:CODE:P or stall:SECONDS:P")
        except ValueError as e:
            raise ValueError(f"bad fault {item!r}: {e}") from e
        if not 0.0 <= fault.probability <= 1.0:
            raise ValueError(f"bad fault {item!r}: probability must be in [0, 1]")
        faults.append(fault)
    return faults


class FaultPlan:
    """Draws the fault (if any) of each response and counts what was injected, per file."""

    def __init__(self, spec: str = "", seed: int = 0) -> None:
        self._lock = threading.Lock()
        self.configure(spec, seed)

    def configure(self, spec: str, seed: int) -> None:
        """Replace the faults (and reset the generator and the counts)."""
        faults = parse_spec(spec)
        with self._lock:
            self.spec = spec
            self.seed = seed
            self.faults = faults
            self._rng = random.Random(seed)
            self.counts: dict[str, Counter[str]] = {}
            self.events: list[dict] = []

    def draw(self, path: str, size: int) -> tuple[Fault | None, int]:
        """The fault for the next response of ``size`` bytes of file ``path``, and the byte of
        the body at which a body fault strikes (at least 1: some data always gets through)."""
        with self._lock:
            for fault in self.faults:
                if self._rng.random() < fault.probability:
                    at = 1 + int(self._rng.random() * max(size - 1, 1)) if size > 1 else 0
                    return fault, at
        return None, 0

    def record(self, path: str, fault: Fault, start: int, at: int) -> None:
        """Count a fault that was injected into a response for ``path`` starting at byte
        ``start``, striking at byte ``start + at`` of the file."""
        with self._lock:
            self.counts.setdefault(path, Counter())[fault.name] += 1
            self.events.append({"file": path, "fault": fault.name, "byte": start + at})

    def report(self) -> dict:
        with self._lock:
            total: Counter[str] = Counter()
            for c in self.counts.values():
                total.update(c)
            return {
                "spec": self.spec,
                "seed": self.seed,
                "files": {p: dict(c) for p, c in sorted(self.counts.items())},
                "total": dict(total),
                "events": list(self.events),
            }


def make_rng(seed: int) -> random.Random:
    return random.Random(seed)
