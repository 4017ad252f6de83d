"""Fixtures for the analysis tests: synthetic TensorBoard runs (``tests/fixtures/tbruns.py``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest


def load_tbruns() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "fixtures" / "tbruns.py"
    spec = importlib.util.spec_from_file_location("motlab_test_tbruns", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tbruns() -> ModuleType:
    """The helper module that writes synthetic runs."""
    return load_tbruns()


@pytest.fixture
def two_runs(tmp_path: Path, tbruns: ModuleType) -> tuple[Path, Path]:
    """(dense, mot) run dirs; mot reaches dense's final loss 3.0 at exactly half the steps."""
    return tbruns.baseline_and_twice_as_fast(tmp_path)
