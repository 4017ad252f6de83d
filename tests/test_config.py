"""Configuration: presets, placement of routed blocks, the registry's errors."""

from __future__ import annotations

import pytest

from motlab.config import PRESETS, GPTConfig
from motlab.layers import FFN_REGISTRY, MoTConfig, ffn_config


def test_presets_match_the_paper() -> None:
    assert PRESETS["medium"] == dict(d_model=512, d_ff=2048, n_layers=8, n_heads=8)
    cfg = GPTConfig(size="base")
    assert (cfg.d_model, cfg.d_ff, cfg.n_layers, cfg.n_heads) == (768, 3072, 12, 12)


def test_explicit_sizes_override_the_preset() -> None:
    cfg = GPTConfig(size="medium", n_layers=2)
    assert cfg.n_layers == 2 and cfg.d_model == 512


@pytest.mark.parametrize(
    "placement,expected",
    [
        ("second_half", [4, 5, 6, 7]),
        ("every_other", [1, 3, 5, 7]),
        ("all", list(range(8))),
        ("none", []),
        ([0, 7], [0, 7]),
    ],
)
def test_moe_block_placement(placement, expected) -> None:
    cfg = GPTConfig(ffn={"variant": "mot"}, moe_blocks=placement)
    assert cfg.routed_blocks() == expected
    assert [i for i in range(8) if cfg.block_ffn(i).variant == "mot"] == expected


def test_ffn_dict_becomes_the_variant_dataclass() -> None:
    cfg = GPTConfig(ffn={"variant": "mot", "group_size": 16, "n_experts": 16})
    assert isinstance(cfg.ffn, MoTConfig) and cfg.ffn.group_size == 16
    assert cfg.group_size == 16
    assert GPTConfig(ffn={"variant": "mot"}, moe_blocks="none").group_size == 1


def test_unknown_variant_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown feed-forward variant 'moe'") as err:
        GPTConfig(ffn={"variant": "moe"})
    for name in FFN_REGISTRY:
        assert name in str(err.value)


def test_unknown_key_lists_valid_keys() -> None:
    with pytest.raises(ValueError, match="unknown key\\(s\\) \\['groups'\\].*group_size"):
        ffn_config({"variant": "mot", "groups": 4})


def test_bad_size_and_placement() -> None:
    with pytest.raises(ValueError, match="unknown model size 'huge'"):
        GPTConfig(size="huge")
    with pytest.raises(ValueError, match="unknown moe_blocks"):
        GPTConfig(moe_blocks="first_half")
    with pytest.raises(ValueError, match="out of range"):
        GPTConfig(moe_blocks=[9])
    with pytest.raises(ValueError, match="n_experts \\(3\\) to divide"):
        GPTConfig(ffn={"variant": "mot", "n_experts": 3})


def test_ffn_values_of_the_wrong_type_are_named() -> None:
    """model.net.ffn is free-form to the CLI parser: its value types are checked by the variant."""
    with pytest.raises(ValueError, match=r"model\.net\.ffn\.n_experts='abc' is not int"):
        ffn_config({"variant": "mot", "n_experts": "abc"})
    with pytest.raises(ValueError, match=r"model\.net\.ffn\.discrete=1 is not bool"):
        ffn_config({"variant": "mot", "discrete": 1})
    assert ffn_config({"variant": "token_choice", "capacity_factor": 1}).capacity_factor == 1
    assert ffn_config({"variant": "token_choice", "capacity_factor": None}).capacity_factor is None


def test_from_dict_is_the_one_way_from_a_saved_dict() -> None:
    """A saved config (checkpoint, hyper-parameters, save_model) becomes a GPTConfig by one
    rule: ``_`` keys are metadata and left out; an unknown key is named."""
    saved = {"size": "mini", "vocab_size": 64, "ffn": {"variant": "mot", "group_size": 2}}
    cfg = GPTConfig.from_dict({**saved, "__path__": "conf/mot.yaml"})
    assert cfg == GPTConfig(**saved)
    with pytest.raises(ValueError, match=r"unknown model.net key\(s\) \['n_expert'\]"):
        GPTConfig.from_dict({**saved, "n_expert": 8})
