"""Router calibration at the MoT → token-choice conversion (model.transition.calibration)."""

from __future__ import annotations

import threading

import pytest
import torch

import motlab
from motlab.calibration import calibrate_routers, offset_direction
from motlab.layers import TokenChoice
from motlab.transition import TransitionConfig, convert_model

V, T, D = 64, 8, 16


def _trained_looking_mot(seed: int = 0) -> motlab.GPT:
    """A small MoT whose LayerNorms have the non-zero biases training gives them."""
    torch.manual_seed(seed)
    cfg = motlab.GPTConfig(
        size=None,
        d_model=D,
        d_ff=32,
        n_layers=4,
        n_heads=2,
        vocab_size=V,
        seq_len=T,
        ffn={"variant": "mot", "group_size": 4, "n_experts": 8},
    )
    model = motlab.GPT(cfg)
    with torch.no_grad():
        for block in model.blocks:
            block.ln_ffn.weight.uniform_(0.5, 1.5)
            block.ln_ffn.bias.normal_(0.0, 0.3)
    return model


def _skew(model: motlab.GPT, offsets_E: torch.Tensor) -> None:
    """Add offsets_E to every routed layer's per-expert logits, for every input."""
    with torch.no_grad():
        for block in model.blocks[2:]:
            w_D = offset_direction(block.ln_ffn).float()
            block.ffn.experts.router.add_(w_D[:, None] * offsets_E[None, :])


def _router_inputs(model: motlab.GPT, tokens_BT: torch.Tensor) -> dict[int, torch.Tensor]:
    inputs: dict[int, torch.Tensor] = {}
    handles = [
        model.blocks[i].ffn.register_forward_pre_hook(
            lambda m, args, i=i: inputs.__setitem__(i, args[0].reshape(-1, D))
        )
        for i in (2, 3)
    ]
    model(tokens_BT)
    for h in handles:
        h.remove()
    return inputs


def test_offset_direction_gives_one_for_every_layer_norm_output() -> None:
    model = _trained_looking_mot()
    norm = model.blocks[2].ln_ffn
    z_ND = norm(torch.randn(1000, D) * 5 + 3)
    ones = z_ND.double() @ offset_direction(norm)
    torch.testing.assert_close(ones, torch.ones(1000).double(), rtol=0, atol=1e-5)  # fp32 z


def test_offset_direction_of_an_untrained_norm_is_refused() -> None:
    with pytest.raises(ValueError, match="no usable bias.*untrained"):
        offset_direction(torch.nn.LayerNorm(D))


def test_per_expert_offsets_are_invisible_to_mot_and_decide_token_choice() -> None:
    """Why calibration is needed: MoT's group softmax ignores a per-expert shift; token choice's
    argmax over experts does not."""
    model = _trained_looking_mot()
    tokens_BT = torch.randint(0, V, (8, T))
    before = model(tokens_BT)
    offsets_E = torch.zeros(8)
    offsets_E[3] = 5.0
    _skew(model, offsets_E)
    torch.testing.assert_close(model(tokens_BT), before, rtol=1e-4, atol=1e-5)
    tc = convert_model(model)
    _, aux = tc.forward_with_aux(tokens_BT)
    assert aux.stats["block2/tokens_per_expert"][3] == aux.stats["block2/tokens_per_expert"].sum()


@pytest.mark.parametrize("method", ["centre", "standardise"])
def test_calibration_centres_each_experts_logits_and_spreads_the_load(method: str) -> None:
    mot = _trained_looking_mot()
    offsets_E = torch.linspace(0, 3, 8)
    _skew(mot, offsets_E)
    mot_state = {k: v.clone() for k, v in mot.state_dict().items()}
    calib_BT, held_out_BT = torch.randint(0, V, (16, T)), torch.randint(0, V, (16, T))

    plain = convert_model(mot, {"capacity_factor": 1.0})
    tc = convert_model(mot, {"capacity_factor": 1.0})
    reports = calibrate_routers(tc, calib_BT, method)

    # The MoT model is untouched, and so is everything but the routers of the converted one.
    for key, value in mot.state_dict().items():
        assert torch.equal(value, mot_state[key]), key
    for key, value in tc.state_dict().items():
        same = torch.equal(value, plain.state_dict()[key])
        assert same != key.endswith("experts.router"), key

    assert [r.block for r in reports] == [2, 3]
    assert all(r.fold_error < 1e-4 for r in reports)
    inputs = _router_inputs(tc, calib_BT)
    for i in (2, 3):
        logits_NE = inputs[i] @ tc.blocks[i].ffn.experts.router
        torch.testing.assert_close(logits_NE.mean(0), torch.zeros(8), atol=1e-4, rtol=0)
        std_E = logits_NE.std(0, unbiased=False)
        if method == "standardise":  # one common spread, the RMS of the experts' before
            rms = reports[i - 2].std_E.pow(2).mean().sqrt()
            torch.testing.assert_close(std_E, rms.expand(8), rtol=1e-4, atol=1e-6)
        else:
            torch.testing.assert_close(std_E, reports[i - 2].std_E, rtol=1e-4, atol=1e-6)

    def dropped(model: motlab.GPT) -> float:
        _, aux = model.forward_with_aux(held_out_BT)
        return float(aux.stats["block2/dropped_fraction"] + aux.stats["block3/dropped_fraction"])

    assert dropped(tc) < dropped(plain) - 0.2  # on a batch it was not calibrated on


def test_calibration_sums_statistics_over_processes() -> None:
    """Two ranks, each calibrating on its half of a batch with the statistics summed across
    them (an all-reduce, here between two threads), get the router of the whole batch. (No
    capacity limit: with one, a half batch drops other tokens than the whole.)"""
    mot = _trained_looking_mot()
    tokens_BT = torch.randint(0, V, (16, T))
    unlimited = {"capacity_factor": None}
    whole = convert_model(mot, unlimited)
    calibrate_routers(whole, tokens_BT, "standardise")

    ranks = [convert_model(mot, unlimited) for _ in range(2)]
    barrier, slots = threading.Barrier(2, timeout=30), [torch.empty(0), torch.empty(0)]

    def all_reduce_sum(rank: int):
        def fn(stats: torch.Tensor) -> torch.Tensor:
            slots[rank] = stats.clone()
            barrier.wait()
            total = slots[0] + slots[1]
            barrier.wait()
            return total

        return fn

    threads = [
        threading.Thread(
            target=calibrate_routers,
            args=(ranks[r], tokens_BT[8 * r : 8 * r + 8], "standardise", all_reduce_sum(r)),
        )
        for r in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for model in ranks:
        for i in (2, 3):
            torch.testing.assert_close(
                model.blocks[i].ffn.experts.router, whole.blocks[i].ffn.experts.router
            )


def test_calibration_needs_token_choice_and_a_known_method() -> None:
    mot = _trained_looking_mot()
    with pytest.raises(ValueError, match="convert the MoT first"):
        calibrate_routers(mot, torch.randint(0, V, (4, T)), "centre")
    with pytest.raises(ValueError, match="unknown router calibration 'mean'"):
        calibrate_routers(convert_model(mot), torch.randint(0, V, (4, T)), "mean")
    with pytest.raises(ValueError, match="model.transition.calibration must be one of"):
        TransitionConfig(calibration="mean")  # type: ignore[arg-type]
    tc = convert_model(mot)
    router = tc.blocks[2].ffn.experts.router.clone()
    assert calibrate_routers(tc, torch.randint(0, V, (4, T)), "none") == []
    assert torch.equal(tc.blocks[2].ffn.experts.router, router)
    assert isinstance(tc.blocks[2].ffn, TokenChoice)
