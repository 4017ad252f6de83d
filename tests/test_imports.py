"""The package's import graph: one-way (no circle among motlab's modules), and motlab sweep
reaches the CLI only through its public parser (no private name, no subclass of MotCLI).

Read from the source (every module's syntax tree, imports inside functions included), so an
import that only runs on some path counts as much as one at the top of a file.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "motlab"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every import in module ``name``: the module imported from (a
    motlab module or package) and the names taken from it (empty for ``import x``)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.append((base, [alias.name for alias in node.names]))
    return found


def _edges(name: str) -> set[str]:
    """The motlab modules that module ``name`` imports (``from motlab.x import y`` counts as
    an import of ``motlab.x.y`` when that is a module, else of ``motlab.x``)."""
    edges = set()
    for module, names in _imports(name):
        if module in MODULES:
            edges.add(module)
        edges |= {f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES}
    return edges - {name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_circle() -> None:
    graph = {name: _edges(name) for name in MODULES}
    assert len(graph) > 50 and graph["motlab.sweep.figure"] == {"motlab.sweep.report"}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_sweep_uses_the_cli_only_through_its_public_parser() -> None:
    taken = {
        (name, module, tuple(names))
        for name in MODULES
        if name.startswith("motlab.sweep")
        for module, names in _imports(name)
        if module == "motlab.cli"
    }
    assert taken == {("motlab.sweep.check", "motlab.cli", ("fit_parser",))}
    for name in MODULES:
        if name.startswith("motlab.sweep"):
            tree = ast.parse(MODULES[name].read_text())
            bases = [ast.unparse(b) for c in ast.walk(tree) if isinstance(c, ast.ClassDef)
                     for b in c.bases]  # fmt: skip
            assert not any("CLI" in b for b in bases), (name, bases)


def test_no_module_takes_a_private_name_from_another() -> None:
    private = sorted(
        (name, module, n)
        for name in MODULES
        for module, names in _imports(name)
        if module.startswith("motlab") and module != name
        for n in names
        if n.startswith("_")
    )
    assert private == []
