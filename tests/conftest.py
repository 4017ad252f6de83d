"""Shared test fixtures: the offline C4 sample and GPT-2 tokenizer that sit beside the checkout.

Tests never touch the network: the Hugging Face hub is switched off before any test imports
`datasets`. Point ``MOTLAB_DATA`` / ``MOTLAB_TOKENIZER`` elsewhere to use other local copies.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


def _required(env: str, default: Path) -> Path:
    path = Path(os.environ.get(env, default))
    if not path.exists():
        raise FileNotFoundError(
            f"test resource {path} not found; set {env} to a local copy "
            "(see README, 'Running offline')"
        )
    return path


@pytest.fixture(scope="session")
def c4_dir() -> Path:
    """Directory in C4's layout: ``en/c4-train.*.json.gz`` and ``en/c4-validation.*.json.gz``."""
    return _required("MOTLAB_DATA", SHARED / "data")


@pytest.fixture(scope="session")
def tokenizer_path() -> Path:
    """GPT-2's ``tokenizer.json``."""
    return _required("MOTLAB_TOKENIZER", SHARED / "tokenizers" / "gpt2" / "tokenizer.json")


@pytest.fixture(scope="session")
def tbruns() -> ModuleType:
    """``tests/fixtures/tbruns.py``: synthetic TensorBoard runs with known answers (imported by
    name, as every module in ``tests/fixtures``, which pytest puts on the path)."""
    return importlib.import_module("tbruns")


@pytest.fixture(scope="session")
def benchmark_script() -> Callable[[str], ModuleType]:
    """Load a script of ``benchmarks/`` as a module, by its name (``"layer_traffic"``): the
    scripts are not a package, so they are loaded from their files."""
    loaded: dict[str, ModuleType] = {}

    def load(name: str) -> ModuleType:
        if name not in loaded:
            path = REPO_ROOT / "benchmarks" / f"{name}.py"
            spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", path)
            assert spec is not None and spec.loader is not None, path
            loaded[name] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(loaded[name])
        return loaded[name]

    return load


@pytest.fixture
def lightning_messages():
    """The messages logged to Lightning's console logger (where motlab's rank-zero information
    goes) while the test runs; pytest's caplog does not see them (the logger does not
    propagate)."""
    import logging

    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = Keep()
    logger = logging.getLogger("lightning.pytorch")
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
