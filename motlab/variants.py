"""The ``motlab variants`` command: every feed-forward variant with its keys, from the registry.

Each key's line is the config field's type and default, and its help is the field's attribute
docstring (read with ``docstring_parser``, as LightningCLI's own help reads them), so what this
prints is what the variant's file says and cannot drift from it. The initialisation scales
(``model.net.init``, :class:`~motlab.layers.init.InitConfig`) follow, as every variant has them.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence

import docstring_parser

from motlab.layers import FFN_REGISTRY, config_fields
from motlab.layers.init import InitConfig


def _key_lines(config_cls: type) -> list[str]:
    """One line per field of ``config_cls`` (type and default), then its docstring, indented."""
    doc = docstring_parser.parse_from_object(config_cls)
    helps = {p.arg_name: p.description or "" for p in doc.params}
    types = {p.arg_name: p.type_name or "" for p in doc.params}
    lines = []
    for field in config_fields(config_cls):
        if field.default is not dataclasses.MISSING:
            default = repr(field.default)
        elif field.default_factory is not dataclasses.MISSING:
            default = repr(field.default_factory())
        else:
            default = "(required)"
        lines.append(f"  {field.name}: {types.get(field.name, '')} = {default}")
        for text in helps.get(field.name, "").splitlines():
            lines.append(f"      {text.strip()}")
    return lines


def describe(name: str) -> str:
    """The variant ``name``: its summary, its layer class and each key with type and default."""
    config_cls, layer_cls = FFN_REGISTRY[name]
    doc = docstring_parser.parse_from_object(config_cls)
    lines = [
        f"{name}: {doc.short_description or ''}".rstrip(),
        f"  layer {layer_cls.__module__}.{layer_cls.__name__}; "
        f"select with model.net.ffn.variant: {name}",
    ]
    return "\n".join(lines + _key_lines(config_cls))


def describe_init() -> str:
    """``model.net.init``, the initialisation scale per part, which applies to every variant
    (the router and experts keys to the routed ones)."""
    doc = docstring_parser.parse_from_object(InitConfig)
    summary = " ".join((doc.short_description or "").split())
    lines = [f"model.net.init (every variant): {summary}".rstrip()]
    lines += [f"  {text.strip()}" for text in (doc.long_description or "").splitlines()]
    return "\n".join(lines + _key_lines(InitConfig))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="motlab variants",
        description="List the feed-forward variants (model.net.ffn.variant) and their keys, "
        "then the initialisation scales (model.net.init) that every variant shares.",
    )
    p.add_argument(
        "names", nargs="*", help=f"variants to show (default: all of {list(FFN_REGISTRY)})"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    unknown = [n for n in args.names if n not in FFN_REGISTRY]
    if unknown:
        print(f"error: unknown variant(s) {unknown}; valid: {', '.join(FFN_REGISTRY)}")
        return 2
    blocks = [describe(name) for name in args.names or FFN_REGISTRY]
    print("\n\n".join([*blocks, describe_init()]))
    return 0
