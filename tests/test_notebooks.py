"""The notebooks run top to bottom on the local C4 sample (nbclient, no network).

Each notebook trains tiny models through ``motlab fit`` (in-process), so these are the slowest
tests of the suite (about a minute each on two cores); runs go to a temporary directory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import ModuleType

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CELL_TIMEOUT_S = 600
STALE_LOSS = 99.0


def seed_earlier_runs(runs: Path, tbruns: ModuleType) -> None:
    """What a kept ``$MOTLAB_RUNS`` holds from an earlier session: other runs of the same names
    (TensorBoard logs of 1000 steps at loss 99; a MoT checkpoint in ``version_9``, so that this
    session's run lands in ``version_10``, after it by number but before it by name)."""
    for name in ("dense", "mot"):
        tbruns.write_curve(runs / name / "version_0", range(0, 1001, 100), lambda s: STALE_LOSS)
    stale = runs / "mot" / "version_9" / "checkpoints" / "last.ckpt"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an earlier run's checkpoint, not this one")


def outputs_text(nb) -> str:
    return "\n".join(
        out.get("text", "") + "".join(out.get("data", {}).get("text/plain", ""))
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    )


def committed_without_outputs(nb) -> bool:
    return all(
        not cell.get("outputs") and cell.get("execution_count") is None
        for cell in nb.cells
        if cell.cell_type == "code"
    )


@pytest.mark.parametrize("name", ["01_quickstart.ipynb", "02_routing.ipynb"])
def test_notebook_runs(name, tmp_path, monkeypatch, c4_dir, tokenizer_path, tbruns):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert committed_without_outputs(nb), f"{name}: strip outputs before committing"
    monkeypatch.setenv("MOTLAB_DATA", str(c4_dir))
    monkeypatch.setenv("MOTLAB_TOKENIZER", str(tokenizer_path))
    monkeypatch.setenv("MOTLAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.delenv("MOTLAB_CHECKPOINT", raising=False)
    seed_earlier_runs(tmp_path / "runs", tbruns)
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
    text = outputs_text(nb)
    if name == "01_quickstart.ipynb":
        # The runs just trained are read, not merged with the earlier ones of the same name.
        assert (tmp_path / "runs/dense/version_1/config.yaml").is_file()
        target = float(re.search(r"dense's final val/loss = ([0-9.]+)", text).group(1))
        assert target < STALE_LOSS / 2
        assert "left out version_0" in text  # and the notebook says so
    else:
        assert re.search(r"checkpoint: .*mot/version_10/checkpoints/last\.ckpt", text)
