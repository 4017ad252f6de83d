"""The keys of a ``motlab fit`` configuration: which are valid, where each given key came from,
what a mistyped one was meant to be, and the keys a configuration says it cannot run without.

jsonargparse checks every key while it parses, but its error names neither the file the key came
from nor the keys valid in its place, comes after the whole usage (about a hundred lines), and
for a key of a nested dataclass (``model.optim.learning_rate``) ends in its internal
``NestedArg(...)`` wording; a key of ``model.net.ffn``, a free-form mapping to the parser, is
checked only when the model is built, without its file. So motlab reads the command line itself
first (:func:`check_config_keys`): each ``--config`` file as plain YAML, each ``--key`` flag, and
walks every key down the parser's own tree of keys — its arguments, the fields of the
dataclasses they hold (``model.optim``), every registered variant's keys for ``model.net.ffn`` —
naming each unknown key with its file or flag and the closest valid keys (:mod:`difflib`).
Sections whose keys depend on a class chosen in the config (``trainer.logger``,
``trainer.callbacks``, ``trainer.strategy``, ...) are left to jsonargparse, which knows the class.

A config file can list keys it needs set, with what each one is (``required:``, e.g.
``conf/transition.yaml``'s ``model.init_from``); :func:`missing_required` names those unset.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NET_KEYS_FROM_DATA: dict[str, str] = {"seq_len": "data.seq_len", "vocab_size": "data.tokenizer"}
"""``model.net`` keys that ``motlab fit`` binds from the data module, and the key a user sets
for each: messages about them name the latter."""

REQUIRED = "required"
"""The top-level key under which a config file lists the keys it cannot run without."""

NOT_KEYS = {"--help", "-h", "--print_config", "--config", "-c"}
"""Command-line options that are not configuration keys."""


def user_key(net_key: str) -> str:
    """The key a user sets for ``model.net.{net_key}``: ``data.seq_len`` for ``seq_len``."""
    return NET_KEYS_FROM_DATA.get(net_key, f"model.net.{net_key}")


class ConfigKeyError(ValueError):
    """Keys of a configuration that are unknown (or required and unset), each named with where
    it came from; the message is the whole report, one problem per line."""


# ------------------------------------------------------------------------ the tree of keys


@dataclass(frozen=True)
class _Node:
    kind: str
    """``group`` (a section: its keys are arguments), ``fields`` (a dataclass's fields or the
    keys of ``model.net.ffn``: ``children``), ``open`` (a class chosen in the config: left to
    jsonargparse), ``value`` (takes a value, has no keys) or ``linked`` (set from another key)."""
    children: frozenset[str] = frozenset()
    source: str | None = None
    """For ``linked``: the key it is set from."""


class KeyTree:
    """The keys a jsonargparse parser accepts, as a tree walked one dotted part at a time."""

    def __init__(self, parser: Any) -> None:
        from jsonargparse._link_arguments import ActionLink  # link targets are not set directly

        self._nodes: dict[str, _Node] = {}
        dests = {a.dest: a for a in parser._actions if isinstance(a.dest, str)}
        names = {d for d in dests if d != "help" and not d.endswith(".help")}
        children: dict[str, set[str]] = {"": set()}
        for dest in names:
            parent, _, last = dest.rpartition(".")
            children.setdefault(parent, set()).add(last)
        for dest in names:
            action = dests[dest]
            if isinstance(action, ActionLink):
                sources = [s[0] if isinstance(s, tuple) else s for s in action.source]
                net_key = dest.removeprefix("model.net.")
                source = NET_KEYS_FROM_DATA.get(net_key) or ", ".join(map(str, sources))
                self._nodes[dest] = _Node("linked", source=source)
            elif dest in children:
                self._nodes[dest] = _Node("group", frozenset(children[dest]))
            else:
                self._nodes[dest] = _hinted(action, has_help=f"{dest}.help" in dests)
        self._nodes[""] = _Node("group", frozenset(children[""]))
        self.leaves = sorted(d for d, n in self._nodes.items() if d and n.kind != "group")

    def kind(self, key: str) -> str | None:
        """The kind of node ``key`` is (see ``_Node.kind``); None for no argument."""
        node = self._nodes.get(key)
        return None if node is None else node.kind

    def problem(self, key: str) -> tuple[str, str] | None:
        """None if ``key`` (dotted) is valid, else what is wrong and the way out: the valid keys
        closest to it, or those in its place."""
        parts = key.split(".")
        node, at = self._nodes[""], ""
        for i, part in enumerate(parts):
            here = f"{at}.{part}" if at else part
            if node.kind in ("group", "fields") and part not in node.children:
                return f"unknown key {key}", self._hint(parts, i, at, node.children)
            if node.kind == "group":
                node, at = self._nodes[here], here
            elif node.kind == "fields":
                if i < len(parts) - 1:
                    return f"unknown key {key}", f"{here} takes a value, not keys"
                return None
            elif node.kind == "open":
                return None
            else:
                return self._not_settable(key, at, node)
        return self._not_settable(key, at, node) if node.kind == "linked" else None

    def _not_settable(self, key: str, at: str, node: _Node) -> tuple[str, str]:
        if node.kind == "linked":
            return f"{at} is not set directly", f"it is set from {node.source}: give that"
        return f"unknown key {key}", f"{at} takes a value, not keys"

    def _hint(self, parts: list[str], i: int, at: str, valid: frozenset[str]) -> str:
        """The closest valid keys to ``parts`` wrong at part ``i`` (under ``at``): close
        spellings of that part, completed with the parts after it where they fit, and keys of
        the same name elsewhere (``model.seq_len``: ``data.seq_len``)."""
        part, rest = parts[i], parts[i + 1 :]
        where = f"{at}." if at else ""
        guesses = []
        for close in difflib.get_close_matches(part, sorted(valid), n=3, cutoff=0.6):
            whole = ".".join([f"{where}{close}", *rest])
            guesses.append(whole if self.problem(whole) is None else f"{where}{close}")
        if not rest:
            key = ".".join(parts)
            guesses += [
                leaf
                for leaf in self.leaves
                if leaf.rpartition(".")[2] == part
                and leaf != key
                and self._nodes[leaf].kind != "linked"
            ]
        if guesses:
            return f"did you mean {' or '.join(dict.fromkeys(guesses))}?"
        section = f"the keys of {at}" if at else "the top-level keys"
        shown = sorted(valid)
        more = f", ... ({len(shown) - 12} more)" if len(shown) > 12 else ""
        return f"{section}: {', '.join(shown[:12])}{more}"


def _hinted(action: Any, has_help: bool) -> _Node:
    """The node of an argument with a type: a dataclass's fields, ``model.net.ffn``'s keys of
    every variant, a class chosen in the config (it has a ``.help`` option), or a value."""
    hint = getattr(action, "_typehint", None)
    members = _members(hint)
    from motlab.layers import FFNConfig

    if any(FFNConfig in getattr(m, "__mro__", ()) for m in members):
        return _Node("fields", frozenset(ffn_keys()))
    for member in members:
        if isinstance(member, type) and dataclasses.is_dataclass(member):
            return _Node("fields", frozenset(f.name for f in dataclasses.fields(member)))
    return _Node("open" if has_help else "value")


def _members(hint: Any) -> list[Any]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(hint) for m in _members(arg)]
    return [hint]


def ffn_keys() -> set[str]:
    """Every key ``model.net.ffn`` can hold: ``variant`` and the keys of every variant (which
    of them fit the variant chosen is checked when the model is built)."""
    from motlab.layers import FFN_REGISTRY, config_fields

    return {"variant"} | {f.name for v in FFN_REGISTRY.values() for f in config_fields(v.config)}


# ------------------------------------------------------------------ the keys on a command line


@dataclass(frozen=True)
class Given:
    """A configuration key as given: dotted, and where (``bad.yaml``, ``--trainer.max_step``)."""

    key: str
    origin: str


def config_files(argv: Sequence[str]) -> list[str]:
    """The ``--config`` files of a subcommand's arguments, in order."""
    files, args = [], list(argv)
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            files.append(args[i + 1])
        elif arg.startswith("--config="):
            files.append(arg.split("=", 1)[1])
    return files


def read_config_file(path: str) -> dict[str, Any]:
    """A ``--config`` file as a plain mapping; a missing or unreadable file is a
    :class:`ConfigKeyError` naming it (and, when missing, the closest file beside it)."""
    import yaml

    file = Path(path)
    if not file.is_file():
        near = sorted(p.name for p in file.parent.glob(f"*{file.suffix}"))
        close = difflib.get_close_matches(file.name, near, n=1, cutoff=0.6)
        hint = f"; did you mean {file.parent / close[0]}?" if close else ""
        raise ConfigKeyError(f"--config {path}: no such file{hint}")
    try:
        loaded = yaml.safe_load(file.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigKeyError(f"--config {path}: not a YAML file ({str(e).splitlines()[0]})") from e
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigKeyError(f"--config {path}: holds a {type(loaded).__name__}, not a mapping")
    return loaded


def given_keys(argv: Sequence[str], tree: KeyTree) -> Iterator[Given]:
    """Every key of a subcommand's arguments, with its origin: the keys of each ``--config``
    file (as deep as ``tree`` has keys: a chosen class's arguments are left whole) and every
    ``--key`` flag."""
    for arg in argv:
        if not arg.startswith("--") or arg.split("=", 1)[0] in NOT_KEYS:
            continue
        if arg.startswith("--print_config"):
            continue
        key = arg[2:].split("=", 1)[0].rstrip("+")
        yield Given(key, f"--{key}")
    for path in config_files(argv):
        yield from _file_keys(read_config_file(path), "", path, tree)


def _file_keys(
    mapping: Mapping[str, Any], prefix: str, path: str, tree: KeyTree
) -> Iterator[Given]:
    for name, value in mapping.items():
        key = f"{prefix}{name}"
        kind = tree.kind(key)
        if kind == "group" and isinstance(value, Mapping):
            yield from _file_keys(value, f"{key}.", path, tree)
        elif kind == "fields" and isinstance(value, Mapping):
            yield from (Given(f"{key}.{k}", path) for k in value)
        else:
            yield Given(key, path)


def check_config_keys(parser: Any, argv: Sequence[str]) -> None:
    """Raise :class:`ConfigKeyError` naming every unknown key of ``argv`` (a subcommand's
    arguments as ``parser`` reads them), each with its file or flag and the closest valid keys.
    A missing or unreadable ``--config`` file is named the same way."""
    tree = KeyTree(parser)
    problems: dict[str, None] = {}
    for given in given_keys(argv, tree):
        if given.key == REQUIRED or given.key.startswith(f"{REQUIRED}."):
            continue
        found = tree.problem(given.key)
        if found is not None:
            what, way_out = found
            problems[f"{what} ({_origin(given)}); {way_out}"] = None
    problems.update(dict.fromkeys(_ffn_replaced_without_variant(argv)))
    if problems:
        raise ConfigKeyError("\n".join(problems))


def _ffn_replaced_without_variant(argv: Sequence[str]) -> Iterator[str]:
    """A ``model.net.ffn`` mapping without ``variant`` in a config file after one that chose a
    variant: the later mapping replaces the earlier whole, so the model would be dense."""
    chosen: tuple[str, str] | None = None
    for path in config_files(argv):
        ffn = ((read_config_file(path).get("model") or {}).get("net") or {}).get("ffn")
        if not isinstance(ffn, Mapping):
            continue
        if "variant" in ffn:
            chosen = (str(ffn["variant"]), path)
        elif set(ffn) - ffn_keys():
            continue  # its unknown keys are named (varient: mot)
        elif chosen is not None and chosen[0] != "dense":
            yield (
                f"model.net.ffn in {path} sets no variant, and replaces the whole model.net.ffn "
                f"of {chosen[1]} (variant {chosen[0]}): the model would be dense; add "
                f"'variant: {chosen[0]}' there, or change single keys with flags "
                "(--model.net.ffn.KEY VALUE)"
            )


def _origin(given: Given) -> str:
    return f"the flag {given.origin}" if given.origin.startswith("--") else f"in {given.origin}"


# ------------------------------------------------------------------------ required keys


def missing_required(config: Any, argv: Sequence[str]) -> list[str]:
    """What is missing of the keys the configuration requires: one line per key that a
    ``required:`` mapping (of any ``--config`` file, or the parsed ``config``) lists and that is
    unset (None or empty) in the parsed ``config``, naming the file that requires it."""
    required: dict[str, tuple[str, str]] = {}
    for path in config_files(argv):
        listed = read_config_file(path).get(REQUIRED) or {}
        for key, what in dict(listed).items():
            required[str(key)] = (str(what), path)
    for key, what in dict(config.get(REQUIRED) or {}).items():
        required.setdefault(str(key), (str(what), "--required"))
    lines = []
    for key, (what, path) in required.items():
        if config.get(key) in (None, "", [], {}):
            lines.append(f"{key} is not set, and {path} requires it ({what}): set --{key}")
    return lines
