"""``motlab variants``: every registered variant with its keys and their docstrings."""

from __future__ import annotations

import dataclasses

import docstring_parser

from motlab.cli import main as motlab_main
from motlab.layers import FFN_REGISTRY, config_fields
from motlab.layers.init import InitConfig
from motlab.variants import main


def test_lists_every_variant_and_key_with_its_help(capsys) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    for name, (config_cls, _) in FFN_REGISTRY.items():
        assert f"{name}: " in out
        helps = {
            p.arg_name: p.description for p in docstring_parser.parse_from_object(config_cls).params
        }
        for field in config_fields(config_cls):
            assert f"  {field.name}: " in out
            assert helps[field.name].splitlines()[0] in out  # every key is documented


def test_lists_the_init_scales_with_their_defaults_and_help(capsys) -> None:
    """model.net.init follows the variants, even when one variant is asked for."""
    assert main(["mot"]) == 0
    out = capsys.readouterr().out
    assert "\nmodel.net.init (every variant): " in out
    doc = docstring_parser.parse_from_object(InitConfig)
    helps = {p.arg_name: p.description for p in doc.params}
    for field in dataclasses.fields(InitConfig):
        assert f"  {field.name}: float = 0.1\n" in out  # the paper's default
        assert helps[field.name].splitlines()[0] in out


def test_one_variant_through_the_motlab_command(capsys) -> None:
    try:
        motlab_main(["variants", "token_choice"])
    except SystemExit as e:
        assert e.code == 0
    out = capsys.readouterr().out
    assert out.startswith("token_choice: ")
    assert "capacity_factor: float | None = 1.25" in out
    assert "mot:" not in out


def test_unknown_variant(capsys) -> None:
    assert main(["moe"]) == 2
    assert "valid: " in capsys.readouterr().out


def test_every_builtin_field_has_a_docstring() -> None:
    for config_cls, _ in FFN_REGISTRY.values():
        documented = {p.arg_name for p in docstring_parser.parse_from_object(config_cls).params
                      if p.description}  # fmt: skip
        assert {f.name for f in dataclasses.fields(config_cls)} <= documented, config_cls
