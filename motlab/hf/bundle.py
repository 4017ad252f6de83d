"""The remote code of an export, made from motlab's own sources at export time.

transformers loads a custom model from the ``.py`` files in its directory
(``trust_remote_code=True``): ``config.json`` names ``configuration_motlab.MotlabConfig`` and
``modeling_motlab.MotlabForCausalLM`` in its ``auto_map``, and relative imports between the files
(``from .motlab_model import GPT``) are copied along. So an export ships copies of the motlab
modules the model needs — :mod:`motlab.hf.modeling`, :mod:`motlab.model`, the attention, the
feed-forward layers it is built of and what they import — each with its ``from motlab.x import
y`` statements pointed at the copy of the module that defines ``y`` (``motlab/layers/mot.py``
becomes ``motlab_layers_mot.py``). Nothing is written twice: what runs in transformers is the
code motlab trains with.

A feed-forward variant registered from outside the package (a research script, a test) is
exported from its class definitions: the config and layer classes, the module-level definitions
they use, and the imports those need, found from the module's syntax tree.

The copies import only torch, transformers, the standard library and each other; an import of
anything else is an error that names the module and the import.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from motlab.layers.registry import FFN_REGISTRY, FFNLayer

PACKAGE = "motlab"
MODELING = "motlab.hf.modeling"
CONFIGURATION = "motlab.hf.configuration"
FILE_NAMES = {MODELING: "modeling_motlab", CONFIGURATION: "configuration_motlab"}
"""transformers' names for the two files ``auto_map`` points at."""
EXTRA = "motlab_extra"
"""Prefix of the files holding definitions copied from modules outside motlab."""
ALLOWED = frozenset({"torch", "transformers", "__future__", *sys.stdlib_module_names})
"""Top-level packages the exported code may import."""


class BundleError(ValueError):
    """The model's code cannot be exported as self-contained remote code."""


@dataclass(frozen=True)
class Bundle:
    """The Python files of an export, by file name (``modeling_motlab.py``: its source)."""

    files: dict[str, str]
    variants: list[str]
    """The feed-forward variants the model is built of."""


def bundle(model: nn.Module) -> Bundle:
    """The remote code that builds ``model`` (a :class:`~motlab.model.GPT`): modeling and
    configuration files, the motlab modules they import, and every feed-forward variant the
    model's layers are instances of, registered when the modeling file is imported."""
    bundler = _Bundler()
    bundler.add_module(CONFIGURATION)
    bundler.add_module(MODELING)
    names = variants_of(model)
    registry = _defining_module("motlab.layers.registry", "register_variant")
    bundler.add_module(registry)
    lines = [
        "",
        "",
        "# The feed-forward variants this model is built of, in motlab's registry (motlab export).",
        f"from .{file_name(registry)} import register_variant as _register_variant  # noqa: E402",
    ]
    for i, name in enumerate(names):
        config_cls, layer_cls = FFN_REGISTRY[name]
        for alias, cls in ((f"_Config{i}", config_cls), (f"_Layer{i}", layer_cls)):
            source = bundler.add_class(cls)
            lines.append(f"from .{source} import {cls.__name__} as {alias}  # noqa: E402")
        lines.append(f"_register_variant({name!r}, _Config{i}, _Layer{i})")
    files = {f"{file_name(m)}.py": src for m, src in bundler.files.items()}
    files[f"{file_name(MODELING)}.py"] += "\n".join(lines) + "\n"
    return Bundle(files, names)


def variants_of(model: nn.Module) -> list[str]:
    """Registry names of the feed-forward layers in ``model``, in the order they first occur."""
    by_layer = {variant.layer: name for name, variant in FFN_REGISTRY.items()}
    found: list[str] = []
    for module in model.modules():
        if isinstance(module, FFNLayer):
            name = by_layer.get(type(module))
            if name is None:
                raise BundleError(
                    f"{type(module).__name__} is not a registered feed-forward variant "
                    "(register_variant): the export cannot name it"
                )
            if name not in found:
                found.append(name)
    return found


def file_name(module: str) -> str:
    """The file (without ``.py``) a motlab module is copied to: ``motlab_layers_mot``."""
    return FILE_NAMES.get(module) or re.sub(r"\W", "_", module.replace(".", "_"))


class _Bundler:
    def __init__(self) -> None:
        self.files: dict[str, str] = {}
        """Source of every file, by motlab module (or origin module after ``EXTRA.``)."""
        self.extracted: dict[str, set[str]] = {}

    def add_module(self, module: str) -> None:
        """Copy motlab ``module`` with its motlab imports rewritten, and what it imports."""
        if module in self.files:
            return
        path = _source_path(module)
        source = path.read_text()
        self.files[module] = ""  # taken, while its imports are followed
        tree = ast.parse(source, str(path))
        edits: list[tuple[ast.stmt, list[str]]] = []
        needed: list[str] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    _check_allowed(alias.name, module, f"import {alias.name}")
            elif isinstance(node, ast.ImportFrom):
                imported = _absolute(node, module, path)
                if imported.split(".")[0] != PACKAGE:
                    _check_allowed(imported, module, f"from {imported} import ...")
                    continue
                by_module: dict[str, list[str]] = {}
                for alias in node.names:
                    where = _defining_module(imported, alias.name)
                    text = alias.name if alias.asname is None else f"{alias.name} as {alias.asname}"
                    by_module.setdefault(where, []).append(text)
                needed += by_module
                lines = [
                    f"from .{file_name(m)} import {', '.join(n)}" for m, n in by_module.items()
                ]
                edits.append((node, lines))
        relative = Path(*module.split(".")).with_suffix(".py").as_posix()
        header = (
            f"# motlab export: {relative} of motlab, its motlab imports pointed at the copies "
            "beside it.\n"
        )
        self.files[module] = header + _replace(source, edits, module)
        for where in needed:
            self.add_module(where)

    def add_class(self, cls: type) -> str:
        """Make ``cls`` importable in the bundle; the file (without ``.py``) it is in."""
        module = cls.__module__
        if module.split(".")[0] == PACKAGE:
            if _defining_module(module, cls.__name__) != module:
                raise BundleError(f"{module}.{cls.__qualname__} is not defined at module level")
            self.add_module(module)
            return file_name(module)
        if cls.__qualname__ != cls.__name__:
            raise BundleError(
                f"{module}.{cls.__qualname__}: a variant's classes must be defined at module "
                "level to be exported"
            )
        return self._extract(module, {cls.__name__})

    def _extract(self, module: str, names: Iterable[str]) -> str:
        """Copy from a module outside motlab the definitions of ``names`` and of the
        module-level names they use (recursively), with the imports those need."""
        key = f"{EXTRA}.{module}"
        self.extracted.setdefault(key, set()).update(names)
        loaded = sys.modules.get(module)
        path = Path(getattr(loaded, "__file__", None) or "")
        if not path.is_file():
            raise BundleError(
                f"the source of module {module!r} cannot be found (defined interactively?): "
                "define the variant in a file to export it"
            )
        source = path.read_text()
        tree = ast.parse(source, str(path))
        lines = source.splitlines(keepends=True)
        bindings = _top_level_bindings(tree)
        queue = sorted(self.extracted[key])
        seen: set[str] = set()
        statements: dict[int, ast.stmt] = {}
        imports: list[str] = []
        needed: list[str] = []
        while queue:
            name = queue.pop()
            if name in seen or name not in bindings:
                continue  # a builtin, or a local name of a function
            seen.add(name)
            node = bindings[name]
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                line, where = self._import_of(node, name, module, path)
                imports.append(line)
                if where is not None:
                    needed.append(where)
            else:
                statements[node.lineno] = node
                queue += [n.id for n in ast.walk(node) if isinstance(n, ast.Name)]
        future = [
            ast.get_source_segment(source, node) or ""
            for node in tree.body
            if isinstance(node, ast.ImportFrom) and node.module == "__future__"
        ]
        body = []
        for _, node in sorted(statements.items()):
            first = min([d.lineno for d in getattr(node, "decorator_list", [])] + [node.lineno])
            body.append("".join(lines[first - 1 : node.end_lineno]))
        header = f"# motlab export: what this model needs of module {module} (outside motlab).\n"
        head = "\n".join([*future, *sorted(set(imports))])
        self.files[key] = header + head + "\n\n\n" + "\n\n".join(body)
        for where in needed:
            self.add_module(where)
        return file_name(key)

    def _import_of(
        self, node: ast.Import | ast.ImportFrom, name: str, module: str, path: Path
    ) -> tuple[str, str | None]:
        """The import line that binds ``name`` in the copy, and the motlab module it needs."""
        if isinstance(node, ast.Import):
            alias = next(a for a in node.names if (a.asname or a.name.split(".")[0]) == name)
            _check_allowed(alias.name, module, f"import {alias.name}")
            text = alias.name if alias.asname is None else f"{alias.name} as {alias.asname}"
            return f"import {text}", None
        alias = next(a for a in node.names if (a.asname or a.name) == name)
        imported = _absolute(node, module, path)
        rename = "" if alias.asname is None else f" as {alias.asname}"
        if imported.split(".")[0] == PACKAGE:
            where = _defining_module(imported, alias.name)
            return f"from .{file_name(where)} import {alias.name}{rename}", where
        _check_allowed(imported, module, f"from {imported} import {alias.name}")
        return f"from {imported} import {alias.name}{rename}", None


def _source_path(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        raise BundleError(f"no Python source for module {module}")
    return Path(spec.origin)


def _absolute(node: ast.ImportFrom, module: str, path: Path) -> str:
    """The absolute module name a ``from ... import`` statement of ``module`` imports from."""
    if not node.level:
        return node.module or ""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    parts = package.split(".")
    base = parts[: len(parts) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def _check_allowed(imported: str, module: str, statement: str) -> None:
    top = imported.split(".")[0]
    if top not in ALLOWED and top != PACKAGE:
        raise BundleError(
            f"{module} has `{statement}`: the exported code may import only torch, "
            "transformers and the standard library (and motlab, whose modules it copies)"
        )


def _top_level_bindings(tree: ast.Module) -> dict[str, ast.stmt]:
    """Every name bound at a module's top level (also inside top-level ``if``/``try``) and the
    statement that binds it last."""
    found: dict[str, ast.stmt] = {}

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                found[node.name] = node
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    for n in ast.walk(target):
                        if isinstance(n, ast.Name):
                            found[n.id] = node
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    found[alias.asname or alias.name.split(".")[0]] = node
            elif isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    found[alias.asname or alias.name] = node
            elif isinstance(node, ast.If):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)

    visit(tree.body)
    return found


_TREES: dict[str, tuple[ast.Module, Path]] = {}


def _defining_module(module: str, name: str) -> str:
    """The motlab module that defines ``name`` as imported from ``module``, following
    re-exports (``from motlab.layers import Aux`` → ``motlab.layers.aux``)."""
    if module not in _TREES:
        path = _source_path(module)
        _TREES[module] = ast.parse(path.read_text(), str(path)), path
    tree, path = _TREES[module]
    node = _top_level_bindings(tree).get(name)
    if node is None:
        if importlib.util.find_spec(f"{module}.{name}") is not None:
            raise BundleError(
                f"`from {module} import {name}` imports a module; the export copies names "
                f"(write `from {module}.{name} import ...`)"
            )
        raise BundleError(f"{module} has no module-level {name!r}")
    if isinstance(node, ast.ImportFrom):
        alias = next(a for a in node.names if (a.asname or a.name) == name)
        source = _absolute(node, module, path)
        if source.split(".")[0] != PACKAGE:
            raise BundleError(
                f"{module}.{name} comes from {source}; import it from there, not through motlab"
            )
        return _defining_module(source, alias.name)
    if isinstance(node, ast.Import):
        raise BundleError(f"{module}.{name} is a module; import names from motlab modules")
    return module


def _replace(source: str, edits: list[tuple[ast.stmt, list[str]]], module: str) -> str:
    """``source`` with each statement replaced by its lines (at the statement's indentation)."""
    lines = source.splitlines(keepends=True)
    for node, new in sorted(edits, key=lambda e: e[0].lineno, reverse=True):
        start, end = node.lineno - 1, (node.end_lineno or node.lineno) - 1
        prefix = lines[start][: node.col_offset]
        suffix = lines[end][node.end_col_offset :]
        if prefix.strip():
            raise BundleError(
                f"{module}:{node.lineno}: an import that shares its line with other code cannot "
                "be rewritten for the export"
            )
        text = prefix + ("\n" + prefix).join(new) + suffix
        lines[start : end + 1] = [text]
    return "".join(lines)
