"""The paper's initialisation realises the nominal standard deviation sqrt(0.1 / fan_in), and
``model.net.init`` sets it per part without touching anything else."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

from motlab.checkpoint import config_to_dict, net_config_mismatch
from motlab.config import GPTConfig
from motlab.layers.init import TRUNCATED_STD, InitConfig, rescale_, trunc_normal_fan_in_
from motlab.model import GPT


def test_truncated_std_of_a_unit_normal_cut_at_two() -> None:
    assert TRUNCATED_STD == pytest.approx(0.87963, abs=1e-5)


@pytest.mark.parametrize("fan_in", [64, 512, 2048])
def test_realised_std_is_the_nominal_one(fan_in: int) -> None:
    torch.manual_seed(0)
    w = trunc_normal_fan_in_(torch.empty(1_000_000), fan_in=fan_in)
    nominal = math.sqrt(0.1 / fan_in)
    # 10^6 samples: the sample std is within ~0.1 % of the true one (5 standard errors < 0.4 %).
    assert w.std().item() == pytest.approx(nominal, rel=4e-3)
    assert w.mean().item() == pytest.approx(0.0, abs=5 * nominal / 1000)
    cut = 2 * nominal / TRUNCATED_STD  # two standard deviations of the normal before the cut
    assert w.abs().max().item() <= cut
    assert w.abs().max().item() > 0.99 * cut  # the cut is where it is said to be


# ---------------------------------------------------------------------------- model.net.init

REFERENCE = Path(__file__).resolve().parents[1] / "fixtures" / "init_reference.json"
"""sha256 (first 16 hex digits) of every tensor of :func:`small_model` for each spec below,
written by :func:`fingerprint` with the code from before ``model.net.init`` existed."""

SPECS = {
    "dense": {"variant": "dense"},
    "mot": {"variant": "mot", "group_size": 4, "n_experts": 8},
    "mot_learnable": {
        "variant": "mot",
        "group_size": 4,
        "n_experts": 16,
        "learnable_temperature": True,
    },
    "token_choice": {"variant": "token_choice", "n_experts": 4},
    "expert_choice": {"variant": "expert_choice", "group_size": 4, "n_experts": 4},
}

PARTS = {
    "router": ("ffn.experts.router",),
    "experts": ("ffn.experts.w1", "ffn.experts.w2"),
    "dense": ("ffn.w1", "ffn.w2"),
    "attention": ("attn.qkv.weight", "attn.proj.weight"),
    "head": ("head.weight",),
}
"""What each ``model.net.init`` key names, as suffixes of state-dict keys."""


def small_model(ffn: dict, seed: int = 1234, d_model: int = 32, **init: float) -> GPT:
    torch.manual_seed(seed)
    cfg = GPTConfig(
        size=None,
        d_model=d_model,
        d_ff=2 * d_model,
        n_layers=2,
        n_heads=2,
        vocab_size=100,
        seq_len=16,
        ffn=ffn,
        init=InitConfig(**init),
    )
    return GPT(cfg)


def fingerprint(model: GPT) -> dict[str, str]:
    return {
        k: hashlib.sha256(v.detach().contiguous().numpy().tobytes()).hexdigest()[:16]
        for k, v in model.state_dict().items()
    }


@pytest.mark.parametrize("name", list(SPECS))
def test_default_init_is_the_papers_bit_for_bit(name: str) -> None:
    reference = json.loads(REFERENCE.read_text())[name]
    assert fingerprint(small_model(SPECS[name])) == reference


def _fan_in(key: str, tensor: torch.Tensor) -> int:
    """Fan-in of a weight as motlab lays it out: (in, out) matrices and (E, in, out) experts,
    but nn.Linear's (out, in)."""
    if key.endswith(".weight"):  # nn.Linear
        return tensor.shape[1]
    return tensor.shape[-2]


@pytest.mark.parametrize("part", list(PARTS))
def test_each_init_key_reaches_the_parameters_it_names(part: str) -> None:
    """Scale 1.0 for one part: its tensors have the realised std sqrt(1 / fan_in) and are the
    default draw times sqrt(1 / 0.1); every other tensor is bit for bit the default's."""
    ffn = {"variant": "dense"} if part == "dense" else {"variant": "mot", "group_size": 2}
    # d_model 256: the smallest tensor named (the router, 256 × 32) has 8,192 samples.
    default = small_model(ffn, d_model=256).state_dict()
    scaled = small_model(ffn, d_model=256, **{part: 1.0}).state_dict()
    named = [k for k in default if k.endswith(PARTS[part])]
    assert named, f"no tensors for model.net.init.{part}"
    for key, value in scaled.items():
        if key not in named:
            assert torch.equal(value, default[key]), key
            continue
        torch.testing.assert_close(value, default[key] * math.sqrt(10.0))
        nominal = math.sqrt(1.0 / _fan_in(key, value))
        # Five standard errors of a normal sample's std, sigma / sqrt(2n) (the ±2σ-truncated
        # normal's is smaller): within sampling error, 4 % for the router, 0.7 % for w1.
        rel = 5 / math.sqrt(2 * value.numel())
        assert value.std().item() == pytest.approx(nominal, rel=rel), (key, rel)
        cut = 2 * nominal / TRUNCATED_STD
        assert value.abs().max().item() <= cut * (1 + 1e-6), key


def test_rescaling_equals_drawing_with_the_scale() -> None:
    """The rescaled draw is the truncated normal drawn with the other scale from the same
    random numbers (up to rounding): the cut scales with the standard deviation."""
    torch.manual_seed(0)
    drawn = trunc_normal_fan_in_(torch.empty(10_000), fan_in=64, scale=0.1)
    torch.manual_seed(0)
    direct = trunc_normal_fan_in_(torch.empty(10_000), fan_in=64, scale=2.5)
    torch.testing.assert_close(rescale_(drawn, 2.5), direct, rtol=1e-5, atol=1e-7)


def test_router_scale_zero_starts_mot_with_uniform_merge_weights() -> None:
    model = small_model({"variant": "mot", "group_size": 4, "n_experts": 8}, router=0.0)
    assert not model.blocks[1].ffn.experts.router.any()
    x_RGD = torch.randn(3, 4, 32)
    weights_RGE, _ = model.blocks[1].ffn.merge_weights(x_RGD)
    torch.testing.assert_close(weights_RGE, torch.full_like(weights_RGE, 0.25))


@pytest.mark.parametrize(
    ("key", "value"), [("router", -0.1), ("experts", 0.0), ("head", float("nan"))]
)
def test_bad_init_scale_names_the_key(key: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"model.net.init.{key} must be"):
        InitConfig(**{key: value})


def test_init_scales_round_trip_through_a_saved_config_and_do_not_block_loading() -> None:
    """A saved config's plain dict rebuilds the scales; the weights, not the init, are what a
    checkpoint hands over, so a resume or init_from with other scales is no mismatch."""
    cfg = small_model({"variant": "mot", "group_size": 4, "n_experts": 8}, router=1.0).cfg
    saved = config_to_dict(cfg)
    assert saved["init"]["router"] == 1.0
    assert GPTConfig(**saved).init == cfg.init
    other = config_to_dict(small_model({"variant": "mot", "group_size": 4, "n_experts": 8}).cfg)
    assert net_config_mismatch(saved, other) == ""
    old = {k: v for k, v in saved.items() if k != "init"}  # written before model.net.init
    assert GPTConfig(**old).init == InitConfig()
