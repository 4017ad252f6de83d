"""The inference switch: token choice is dropless in load_model and generation, and keeps its
training capacity in training and in-training validation (which Lightning runs in eval mode)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader

import motlab
from motlab import GPT, GPTConfig
from motlab.inference import capacity, set_capacity
from motlab.layers import TokenChoice
from motlab.lit import LitLM

V, SEQ = 64, 16
TOKEN_CHOICE = {"variant": "token_choice", "n_experts": 8}


def config() -> GPTConfig:
    return GPTConfig(size=None, d_model=32, d_ff=64, n_layers=2, n_heads=2, vocab_size=V,
                     seq_len=SEQ, moe_blocks="all", ffn=TOKEN_CHOICE)  # fmt: skip


def settings(model: torch.nn.Module) -> set:
    return {m.capacity_setting for m in model.modules() if isinstance(m, TokenChoice)}


def test_one_sequence_loses_tokens_to_capacity_and_none_dropless() -> None:
    """The issue's measurement: E = 32, one 32-token sequence, C = max(1, int(1.25 · 32 / 32))
    = 1 slot per expert."""
    torch.manual_seed(0)
    layer = motlab.layers.build_ffn(64, 256, motlab.layers.ffn_config({"variant": "token_choice"}))
    x = torch.randn(1, 32, 64)
    assert layer.capacity(32) == 1
    assert layer(x)[1].stats["dropped_fraction"] > 0.2
    layer.set_capacity("dropless")
    assert layer(x)[1].stats["dropped_fraction"] == 0
    layer.set_capacity(1.25)
    assert layer(x)[1].stats["dropped_fraction"] > 0.2
    layer.set_capacity("training")
    assert layer.capacity(32) == 1


def test_load_model_is_dropless_unless_asked(tmp_path) -> None:
    torch.manual_seed(0)
    motlab.save_model(GPT(config()), tmp_path / "tc.pt")
    model = motlab.load_model(tmp_path / "tc.pt")
    assert settings(model) == {"dropless"}
    tokens = torch.randint(0, V, (8, SEQ))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens[:1])[0], model(tokens)[0], rtol=0, atol=1e-5)
    assert settings(motlab.load_model(tmp_path / "tc.pt", capacity="training")) == {"training"}
    assert settings(motlab.load_model(tmp_path / "tc.pt", capacity=2.0)) == {2.0}
    with pytest.raises(ValueError, match="capacity must be 'dropless', 'training' or"):
        motlab.load_model(tmp_path / "tc.pt", capacity="none")


def test_capacity_context_restores_the_previous_setting() -> None:
    model = GPT(config())
    assert settings(model) == {"training"}  # a model built for training
    with capacity(model, "dropless"):
        assert settings(model) == {"dropless"}
        with capacity(model, 1.5):
            assert settings(model) == {1.5}
        assert settings(model) == {"dropless"}
    assert settings(model) == {"training"}
    previous = set_capacity(model, "dropless")
    assert set(previous.values()) == {"training"}


def test_in_training_validation_keeps_the_training_capacity() -> None:
    """Lightning validates in eval mode; val/loss is still the training objective's CE, with
    the training capacity (tokens dropped), not the dropless inference one."""
    torch.manual_seed(0)
    lit = LitLM(config())
    batch = torch.randint(0, V, (4, SEQ + 1))

    def cross_entropy(setting: str) -> float:
        with torch.no_grad(), capacity(lit.net, setting):
            logits = lit.net.eval()(batch[:, :-1])
        return float(F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten()))

    training, dropless = cross_entropy("training"), cross_entropy("dropless")
    assert training != pytest.approx(dropless, abs=1e-4)  # capacity binds on this batch
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_model_summary=False)  # fmt: skip
    [metrics] = trainer.validate(lit, dataloaders=DataLoader([batch], batch_size=None))
    assert metrics["val/loss"] == pytest.approx(training, abs=1e-5)
    assert settings(lit.net) == {"training"}
