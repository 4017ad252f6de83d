"""The layer traffic counter: exact on a layer whose writes are known, one row per config."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def layer_traffic(benchmark_script) -> ModuleType:
    return benchmark_script("layer_traffic")


SHAPES = {"d_model": 16, "d_ff": 64, "batch_size": 32, "seq_len": 4}


def test_dense_writes_exactly_its_hidden_activation_and_its_gradient(layer_traffic) -> None:
    """Dense FFN outside its matmuls: ReLU forward and backward, d_ff values per token each."""
    row = layer_traffic.measure(REPO / "conf" / "dense.yaml", **SHAPES)
    assert row["other_by_op"] == {"relu": 4.0, "threshold_backward": 4.0}
    assert row["other_writes"] == 2 * SHAPES["d_ff"] / SHAPES["d_model"]


def test_every_main_config_prints_a_json_row(layer_traffic, capsys) -> None:
    args = [f"--{k.replace('_', '-')}={v}" for k, v in SHAPES.items()]
    layer_traffic.main(args)
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["config"] for r in rows] == layer_traffic.CONFIGS
    by_config = {r["config"]: r for r in rows}
    assert by_config["token_choice"]["other_writes"] > by_config["dense"]["other_writes"] > 0


def test_missing_config_is_named(layer_traffic, capsys) -> None:
    with pytest.raises(SystemExit):
        layer_traffic.main(["--config", "conf/nope.yaml"])
    assert "conf/nope.yaml" in capsys.readouterr().err
