"""Fixtures for the analysis tests: synthetic TensorBoard runs (``tests/fixtures/tbruns.py``)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest


@pytest.fixture
def two_runs(tmp_path: Path, tbruns: ModuleType) -> tuple[Path, Path]:
    """(dense, mot) run dirs; mot reaches dense's final loss 3.0 at exactly half the steps."""
    return tbruns.baseline_and_twice_as_fast(tmp_path)
