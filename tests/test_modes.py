"""Routing modes: the routing a model runs now, and the evaluation modes its layers declare."""

from __future__ import annotations

import pytest
import torch

from motlab.config import GPTConfig
from motlab.layers import MoT, MoTConfig, TokenChoice, TokenChoiceConfig
from motlab.model import GPT
from motlab.modes import available_modes, evaluating_in, routed_layers, routing_mode


def _model(ffn: dict, **kw) -> GPT:
    torch.manual_seed(0)
    sizes = dict(size=None, d_model=16, d_ff=32, n_layers=4, n_heads=2, vocab_size=64, seq_len=8)
    return GPT(GPTConfig(**sizes, ffn=ffn, **kw))


MOT = {"variant": "mot", "group_size": 4, "n_experts": 4}


def test_the_routing_a_model_runs_now() -> None:
    assert routing_mode(_model({"variant": "dense"})) == "dense"
    assert routing_mode(_model(MOT, moe_blocks="none")) == "dense"
    assert routing_mode(_model({"variant": "token_choice", "n_experts": 4})) == "token_choice"
    mot = _model(MOT)
    assert routed_layers(mot) == [mot.blocks[2].ffn, mot.blocks[3].ffn]
    assert routing_mode(mot) == "mot" and available_modes(mot) == ["discrete"]
    assert routing_mode(_model({**MOT, "discrete": True})) == "mot_discrete"
    assert available_modes(_model({**MOT, "discrete": True})) == []  # already in it
    assert available_modes(_model({"variant": "token_choice", "n_experts": 4})) == []


def test_evaluating_in_a_mode_is_temporary_and_only_where_declared() -> None:
    mot = _model(MOT).eval()
    tokens = torch.randint(0, 64, (4, 8))
    soft = mot(tokens)
    with evaluating_in(mot, "discrete"):
        assert routing_mode(mot) == "mot_discrete"
        assert all(layer.mode == "discrete" for layer in routed_layers(mot))
        hard = mot(tokens)
    assert routing_mode(mot) == "mot" and not torch.allclose(soft, hard)
    tc = _model({"variant": "token_choice", "n_experts": 4})
    with evaluating_in(tc, "discrete"):  # token choice declares no such mode: unchanged
        assert routing_mode(tc) == "token_choice"


def test_a_layer_names_the_modes_it_has() -> None:
    mot = MoT(16, 32, MoTConfig(group_size=4, n_experts=4))
    with pytest.raises(ValueError, match="MoT has no evaluation mode 'sharp' .*discrete"):
        with mot.in_mode("sharp"):
            pass
    tc = TokenChoice(16, 32, TokenChoiceConfig(n_experts=4))
    with pytest.raises(ValueError, match="TokenChoice has no evaluation mode 'discrete'"):
        tc.set_mode("discrete")
    tc.set_mode(None)  # its own routing: always there
