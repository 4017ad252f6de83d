"""The notebooks run top to bottom on the local C4 sample (nbclient, no network).

Each notebook trains tiny models through ``motlab fit`` (in-process), so these are the slowest
tests of the suite (about a minute each on two cores); runs go to a temporary directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CELL_TIMEOUT_S = 600


def committed_without_outputs(nb) -> bool:
    return all(
        not cell.get("outputs") and cell.get("execution_count") is None
        for cell in nb.cells
        if cell.cell_type == "code"
    )


@pytest.mark.parametrize("name", ["01_quickstart.ipynb", "02_routing.ipynb"])
def test_notebook_runs(name, tmp_path, monkeypatch, c4_dir, tokenizer_path):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert committed_without_outputs(nb), f"{name}: strip outputs before committing"
    monkeypatch.setenv("MOTLAB_DATA", str(c4_dir))
    monkeypatch.setenv("MOTLAB_TOKENIZER", str(tokenizer_path))
    monkeypatch.setenv("MOTLAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.delenv("MOTLAB_CHECKPOINT", raising=False)
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute(env=dict(os.environ))
    images = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if "image/png" in out.get("data", {})
    ]
    assert len(images) >= 2, f"{name}: expected figures in the outputs"
    assert list((tmp_path / "runs").iterdir()), "the notebook wrote its runs elsewhere"
