"""The public inference API: load_model and the model's (B, T) → (B, T, V) contract."""

from __future__ import annotations

import pytest
import torch

import motlab


def test_save_and_load_model_roundtrip(tmp_path) -> None:
    cfg = motlab.GPTConfig(
        size="mini",
        vocab_size=64,
        seq_len=16,
        ffn={"variant": "mot", "group_size": 2, "n_experts": 4},
    )
    model = motlab.GPT(cfg)
    motlab.save_model(model, tmp_path / "m.pt")
    loaded = motlab.load_model(tmp_path / "m.pt")
    assert not loaded.training
    tokens = torch.randint(0, 64, (4, 16))
    logits = loaded(tokens)
    assert logits.shape == (4, 16, 64)
    torch.testing.assert_close(logits, model.eval()(tokens))
    with pytest.raises(ValueError, match="group_size=2"):
        loaded(tokens[:3])


def test_missing_checkpoint_is_named(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        motlab.load_model(tmp_path / "nope.ckpt")


def test_a_checkpoint_is_read_by_one_module(tmp_path) -> None:
    """The net as saved wins over the ``net`` hyper-parameter; data settings and steps read."""
    from motlab.checkpoint import (
        net_config_of,
        read_data_config,
        store_net_config,
        trained_steps,
    )

    saved_net = motlab.GPTConfig(size="mini", vocab_size=64)
    hparams = {"net": {"size": "mini", "vocab_size": 128}}
    ckpt = {"hyper_parameters": hparams, "global_step": 7}
    assert net_config_of(ckpt) == hparams["net"]
    store_net_config(ckpt, saved_net)
    assert net_config_of(ckpt)["vocab_size"] == 64
    assert net_config_of({"hyper_parameters": {}}) is None
    ckpt["datamodule_hyper_parameters"] = {"tokenizer": "gpt2"}
    torch.save(ckpt, tmp_path / "x.ckpt")
    assert trained_steps(tmp_path / "x.ckpt") == 7
    assert read_data_config(tmp_path / "x.ckpt") == {"tokenizer": "gpt2"}
    assert read_data_config(tmp_path / "missing.ckpt") == {}
