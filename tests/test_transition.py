"""Transition tuning: MoT → token choice over the same tensors (METHOD.md §5)."""

from __future__ import annotations

import dataclasses
import typing

import docstring_parser
import pytest
import torch

import motlab
from motlab.layers import MoT, TokenChoice, TokenChoiceConfig
from motlab.transition import (
    ROUTING_KEYS,
    TransitionConfig,
    convert_config,
    convert_model,
    discrete_mot,
    routing_mode,
    switch_in_place,
)

V, T = 64, 8


def _mot_model(**ffn) -> motlab.GPT:
    torch.manual_seed(0)
    cfg = motlab.GPTConfig(
        size=None,
        d_model=16,
        d_ff=32,
        n_layers=4,
        n_heads=2,
        vocab_size=V,
        seq_len=T,
        ffn={"variant": "mot", "group_size": 4, "n_experts": 4, **ffn},
    )
    return motlab.GPT(cfg)


def test_conversion_keeps_every_tensor_bit_identical_and_changes_routing() -> None:
    mot = _mot_model()
    tc = convert_model(mot)
    assert routing_mode(mot) == "mot" and routing_mode(tc) == "token_choice"
    mot_state, tc_state = mot.state_dict(), tc.state_dict()
    for key, value in tc_state.items():
        assert torch.equal(value, mot_state[key]), key
    assert set(mot_state) - set(tc_state) == {f"blocks.{i}.ffn.log_temperature" for i in (2, 3)}
    for i in (0, 1):  # dense blocks untouched
        assert type(tc.blocks[i].ffn).__name__ == "DenseFFN"
    assert all(isinstance(tc.blocks[i].ffn, TokenChoice) for i in (2, 3))
    tokens = torch.randint(0, V, (4, T))
    assert not torch.allclose(mot(tokens), tc(tokens))


def test_converted_layer_equals_hand_built_token_choice() -> None:
    mot = _mot_model()
    tc = convert_model(mot, {"capacity_factor": 1.5, "load_balancing_weight": 0.02})
    hand = TokenChoice(
        16,
        32,
        TokenChoiceConfig(
            n_experts=4, capacity_factor=1.5, load_balancing_weight=0.02, d_expert=32
        ),
    )
    hand.experts.load_state_dict(mot.blocks[3].ffn.experts.state_dict())
    x = torch.randn(4, T, 16)
    out_tc, aux_tc = tc.blocks[3].ffn(x)
    out_hand, aux_hand = hand(x)
    torch.testing.assert_close(out_tc, out_hand, rtol=0, atol=0)
    torch.testing.assert_close(
        aux_tc.losses["load_balancing_loss"], aux_hand.losses["load_balancing_loss"]
    )


def test_flop_matched_mot_512_keeps_its_small_experts() -> None:
    cfg = motlab.GPTConfig(size="medium", ffn={"variant": "mot", "n_experts": 512})
    tc = convert_config(cfg).ffn
    assert (tc.n_experts, tc.expert_size(2048), tc.top_k, tc.capacity_factor) == (512, 128, 1, 1.25)


def test_single_sequence_inference_after_conversion_only() -> None:
    mot = _mot_model().eval()
    one = torch.randint(0, V, (1, T))
    with pytest.raises(ValueError, match="group_size=4"):
        mot(one)
    assert convert_model(mot)(one).shape == (1, T, V)


def test_conversion_of_other_variants_fails_clearly() -> None:
    cfg = motlab.GPTConfig(
        size="mini", ffn={"variant": "expert_choice", "group_size": 4, "n_experts": 4}
    )
    with pytest.raises(ValueError, match="converts a MoT model.*expert_choice"):
        convert_config(cfg)
    with pytest.raises(ValueError, match="dense"):
        convert_config(motlab.GPTConfig(size="mini"))
    with pytest.raises(ValueError, match="keeps the MoT experts"):
        convert_config(_mot_model().cfg, {"n_experts": 8})


def test_switch_in_place_keeps_parameters_and_optimizer_state() -> None:
    model = _mot_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens = torch.randint(0, V, (4, T))
    model(tokens).sum().backward()
    opt.step()
    w1 = model.blocks[3].ffn.experts.w1
    state_before = opt.state[w1]["exp_avg"].clone()
    switch_in_place(model)
    assert isinstance(model.blocks[3].ffn, TokenChoice)
    assert model.blocks[3].ffn.experts.w1 is w1
    assert routing_mode(model) == "token_choice"
    assert torch.equal(opt.state[w1]["exp_avg"], state_before)
    opt.zero_grad()
    logits, aux = model.forward_with_aux(tokens)
    (logits.sum() + aux.total_loss()).backward()
    opt.step()  # the optimiser keeps training the very same tensors
    assert not torch.equal(opt.state[w1]["exp_avg"], state_before)


def test_discrete_mot_is_a_temporary_mode() -> None:
    model = _mot_model().eval()
    tokens = torch.randint(0, V, (4, T))
    soft = model(tokens)
    with discrete_mot(model):
        assert routing_mode(model) == "mot_discrete"
        hard = model(tokens)
    assert routing_mode(model) == "mot"
    assert not torch.allclose(soft, hard)
    assert all(not m.discrete for m in model.modules() if isinstance(m, MoT))


def test_generate_pads_mot_batches_with_filler_and_returns_real_rows() -> None:
    model = _mot_model()
    prompt = torch.randint(0, V, (1, 3))
    out = motlab.generate(model, prompt, max_new_tokens=6, temperature=0)
    assert out.shape == (1, 9) and torch.equal(out[:, :3], prompt)
    # Greedy decoding of a real row inside a fixed filler batch equals a manual decode.
    filler = torch.randint(0, V, (3, T))
    out = motlab.generate(model, prompt, max_new_tokens=2, temperature=0, filler_WT=filler)
    batch = torch.cat([prompt, filler[:, :3]])
    first = model(batch)[0, -1].argmax()
    assert out[0, 3] == first
    tc = convert_model(model)
    out_tc = motlab.generate(
        tc,
        prompt,
        max_new_tokens=4,
        temperature=1.0,
        top_k=5,
        generator=torch.Generator().manual_seed(0),
    )
    assert out_tc.shape == (1, 7)


def test_the_switch_takes_its_routing_keys_from_token_choice() -> None:
    """model.transition's routing keys are token choice's: same types, defaults and help;
    the conversion's own key, calibration, follows them."""
    fields = [f.name for f in dataclasses.fields(TransitionConfig)]
    assert fields == ["switch_at", *ROUTING_KEYS, "calibration"]
    ours, theirs = typing.get_type_hints(TransitionConfig), typing.get_type_hints(TokenChoiceConfig)
    defaults = {f.name: f.default for f in dataclasses.fields(TokenChoiceConfig)}

    def helps(parsed) -> dict[str, str]:
        return {p.arg_name: " ".join(p.description.split()) for p in parsed.params}

    token_choice = helps(docstring_parser.parse_from_object(TokenChoiceConfig))
    switch = helps(docstring_parser.parse(TransitionConfig.__doc__))  # what --help shows
    for key in ROUTING_KEYS:
        assert ours[key] == theirs[key] and getattr(TransitionConfig(), key) == defaults[key]
        assert token_choice[key] in switch[key]
    assert "switch_at" in switch and TransitionConfig().switch_at is None
    assert "calibration" in switch and TransitionConfig().calibration == "none"
    assert typing.get_args(ours["calibration"]) == ("none", "centre", "standardise")
    assert TransitionConfig(switch_at=5, top_k=2).routing() == {
        "top_k": 2, "capacity_factor": 1.25, "load_balancing_weight": 0.01, "z_loss_weight": 0.0
    }  # fmt: skip
