"""The package's import graph: no cycles, and lower layers never import higher ones.

Every module of ``bsi_d2`` is parsed (not imported) and each ``import bsi_d2.x`` /
``from bsi_d2.x import y`` in it becomes an edge, marked lazy when it sits inside a function.
A cycle of module-level imports fails at import time, one closed by a function-level import
hides the tangle until it runs; an import of a higher layer, even a lazy one, makes the lower
layer unusable without the higher.
"""

from __future__ import annotations

import ast
import pkgutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

import bsi_d2

PACKAGE_DIR = Path(bsi_d2.__file__).parent
# lowest first; a module may import its own layer and those listed before it. The root package
# (``bsi_d2/__init__.py``: the version) sits below everything; config (the keys and their
# defaults) imports only the taxonomy; phantom is above postprocess (its truth is computed with
# it); the entry points come last.
LAYERS = (
    "bsi_d2",
    "taxonomy",
    "config",
    "structures",
    "io",
    "preprocess",
    "data",
    "postprocess",
    "evaluation",
    "engine",
    "report",
    "pacs",
    "inference",
    "followup",
    "phantom",
    "workflows",
    "web",
    "commands",
    "cli",
)

# Imports of a higher layer the code has today, (importer, imported), each a module or a package
# (then every module under it). The lead engineer empties this list; a new upward import fails
# the test instead of joining it.
KNOWN_UPWARD: set[tuple[str, str]] = set()  # empty: every import points down


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    lazy: bool  # inside a function: runs when called, not when the module is imported
    line: int


def package_modules(root: Path = PACKAGE_DIR) -> dict[str, Path]:
    """Module name -> source file, for the package at ``root`` and every module under it (found
    by pkgutil without importing any)."""
    modules = {root.name: root / "__init__.py"}
    pending = [(root, root.name)]
    while pending:
        folder, prefix = pending.pop()
        for info in pkgutil.iter_modules([str(folder)], prefix=f"{prefix}."):
            leaf = info.name.rpartition(".")[2]
            if info.ispkg:
                modules[info.name] = folder / leaf / "__init__.py"
                pending.append((folder / leaf, info.name))
            else:
                modules[info.name] = folder / f"{leaf}.py"
    return modules


def module_imports(name: str, source: str, modules: set[str], is_package: bool) -> list[Edge]:
    """The edges from module ``name`` (its ``source``) to modules in ``modules``."""
    root = name.split(".")[0]
    package = name if is_package else name.rpartition(".")[0]
    edges: list[Edge] = []

    def known(target: str) -> str | None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            targets: list[str] = []
            if isinstance(child, ast.Import):
                targets = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parent = package
                    for _ in range(child.level - 1):
                        parent = parent.rpartition(".")[0]
                    base = f"{parent}.{base}" if base else parent
                # "from pkg import sub" imports the submodule; "from mod import name" the module
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in child.names
                ]
            for target in targets:
                if target == root or target.startswith(f"{root}."):
                    found = known(target)
                    if found is not None and found != name:
                        edges.append(Edge(name, found, inner, child.lineno))
            visit(child, inner)

    visit(ast.parse(source), False)
    return edges


def import_graph(root: Path = PACKAGE_DIR) -> list[Edge]:
    modules = package_modules(root)
    edges: list[Edge] = []
    for name, path in modules.items():
        source = path.read_text(encoding="utf-8")
        edges += module_imports(name, source, set(modules), path.name == "__init__.py")
    return edges


def find_cycles(edges: list[Edge]) -> list[list[str]]:
    """Groups of modules that import one another in a circle (strongly connected components of
    more than one module), each sorted; empty when the graph is acyclic."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.importer, set()).add(edge.imported)
        graph.setdefault(edge.imported, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(cycles)


def layer_of(module: str) -> str:
    """``bsi_d2.io.dicom`` -> ``io``; a top-level module is its own layer, the root ``bsi_d2``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _matches(edge: Edge, entry: tuple[str, str]) -> bool:
    """Whether ``edge`` is the import ``entry`` names (a module, or any module under a package)."""
    return all(
        name == prefix or name.startswith(f"{prefix}.")
        for name, prefix in zip((edge.importer, edge.imported), entry, strict=True)
    )


def upward_imports(
    edges: list[Edge], layers: tuple[str, ...] = LAYERS, allowed: Iterable[tuple[str, str]] = ()
) -> list[str]:
    """Each import of a higher layer not in ``allowed``, as 'importer:line -> imported'."""
    rank = {layer: i for i, layer in enumerate(layers)}
    unknown = sorted({layer_of(m) for e in edges for m in (e.importer, e.imported)} - set(rank))
    if unknown:
        raise ValueError(f"modules in no layer: add {unknown} to the layers")
    out = []
    for edge in edges:
        low, high = layer_of(edge.importer), layer_of(edge.imported)
        if rank[high] > rank[low] and not any(_matches(edge, entry) for entry in allowed):
            lazy = " (in a function)" if edge.lazy else ""
            out.append(f"{edge.importer}:{edge.line} -> {edge.imported}{lazy}")
    return sorted(set(out))


# -- the checker on hand-made graphs --------------------------------------------------------------
def _edges(*pairs: tuple[str, str], lazy: bool = False) -> list[Edge]:
    return [Edge(a, b, lazy, 1) for a, b in pairs]


def test_find_cycles_finds_a_cycle_and_only_the_cycle() -> None:
    edges = _edges(("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d"))
    assert find_cycles(edges) == [["p.a", "p.b", "p.c"]]
    assert find_cycles(_edges(("p.a", "p.b"), ("p.b", "p.c"), ("p.a", "p.c"))) == []


def test_a_cycle_closed_by_a_function_level_import_is_found() -> None:
    # the shape bsi_d2.io had: dicom imported readers at module level, readers imported dicom
    # (and pseudonym imported readers) inside functions
    edges = _edges(("p.io.dicom", "p.io.readers"), ("p.io.readers", "p.io.pseudonym"))
    edges += _edges(("p.io.readers", "p.io.dicom"), ("p.io.pseudonym", "p.io.readers"), lazy=True)
    assert find_cycles([e for e in edges if not e.lazy]) == []
    assert find_cycles(edges) == [["p.io.dicom", "p.io.pseudonym", "p.io.readers"]]


def test_upward_imports_names_the_edge_unless_allowed() -> None:
    layers = ("p", "low", "high")
    edges = _edges(("p.high.x", "p.low.y"), ("p.low.y", "p.high.x"))
    assert upward_imports(edges, layers) == ["p.low.y:1 -> p.high.x"]
    assert upward_imports(edges, layers, allowed={("p.low.y", "p.high.x")}) == []
    assert upward_imports(edges, layers, allowed={("p.low", "p.high")}) == []  # packages
    assert upward_imports(edges, layers, allowed={("p.low", "p.high.z")}) != []


def test_imports_are_parsed_at_module_and_function_level() -> None:
    modules = {"p", "p.io", "p.io.base", "p.io.dicom", "p.engine", "p.report"}
    source = (
        "import os\n"
        "from p.io import base\n"
        "from .base import X\n"
        "import p.engine as engine\n"
        "def f():\n"
        "    from p.report import render\n"
    )
    edges = module_imports("p.io.dicom", source, modules, is_package=False)
    assert [(e.imported, e.lazy) for e in edges] == [
        ("p.io.base", False),
        ("p.io.base", False),
        ("p.engine", False),
        ("p.report", True),
    ]


# -- the package ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def edges() -> list[Edge]:
    return import_graph()


def test_every_subpackage_has_a_layer() -> None:
    found = {layer_of(m) for m in package_modules()}
    assert found <= set(LAYERS), f"add {sorted(found - set(LAYERS))} to LAYERS"


def test_no_import_cycle_at_module_level(edges: list[Edge]) -> None:
    assert find_cycles([e for e in edges if not e.lazy]) == []


def test_no_import_cycle_through_function_level_imports(edges: list[Edge]) -> None:
    # a lazy import hides a cycle from Python, not from a reader of the code
    assert find_cycles(edges) == []


def test_readers_and_dicom_never_import_each_other(edges: list[Edge]) -> None:
    # both import bsi_d2.io.base; the DICOM reader is found through the registry
    pair = {"bsi_d2.io.readers", "bsi_d2.io.dicom"}
    assert [e for e in edges if {e.importer, e.imported} == pair] == []


def test_no_layer_imports_a_higher_one(edges: list[Edge]) -> None:
    assert upward_imports(edges, allowed=KNOWN_UPWARD) == []


def test_known_upward_imports_still_exist(edges: list[Edge]) -> None:
    # an entry the code no longer needs is removed, so the list only shrinks
    stale = [entry for entry in KNOWN_UPWARD if not any(_matches(e, entry) for e in edges)]
    assert sorted(stale) == []
