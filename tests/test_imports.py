"""The import graph of ``reconcile``: no circle, and nothing below the report layer imports it.

Every module of the package is parsed with ``ast`` (never imported), and every import statement
anywhere in it is an edge: at module level and inside functions alike, ``import a.b`` and
``from a import b``, relative imports resolved against the module's package. A function-level
import is a dependency as real as a top-level one (it only runs later): two modules that import
each other inside functions still cannot be understood, tested or moved apart.

What is not an edge, and why:
- imports under ``if TYPE_CHECKING:`` never run (annotations only);
- the implicit import of a parent package (``import reconcile.records`` runs
  ``reconcile/__init__.py`` first): every module would depend on the package root, which says
  nothing about how the code is layered;
- ``importlib.import_module(name)`` with a computed name (registries that load an adapter by
  name): not visible to ``ast``, and they point down by construction.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "reconcile"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

# The top layer: the package's API facade, the command line and what drives a whole run. These may
# import ``reconcile.report`` (STYLE.md habit 10: records <- counter/adapters <- reconcile/explain
# <- report <- cli). Every other module outside ``reconcile.report`` sits below the report layer.
MAY_IMPORT_REPORT = frozenset({
    "reconcile",  # compare() returns ModelReport
    "reconcile.__main__",
    "reconcile.cli",
    "reconcile.pipeline",  # collect -> explain -> render, then write the files
    "reconcile.zoo",  # the zoo page: runs the pipeline over many models and renders its page
    "reconcile.llm.render",  # a language model's phases, rendered with the report's sentences
})


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[tuple[ast.stmt, int]]:
    """Every import statement that can run (with its line), at any depth."""
    out: list[tuple[ast.stmt, int]] = []
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append((node, node.lineno))
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)  # the body never runs
            continue
        todo.extend(ast.iter_child_nodes(node))
    return out


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _targets(node: ast.stmt, module: str, is_package: bool, known: dict[str, Path]) -> list[str]:
    """The reconcile modules one import statement imports."""

    def within(name: str) -> str | None:
        # the longest prefix of a dotted name that is a module of ours (``import reconcile.a.b``
        # imports ``reconcile.a.b``; ``from reconcile.a import f`` imports ``reconcile.a``)
        while name:
            if name in known:
                return name
            name = name.rpartition(".")[0]
        return None

    found: list[str | None] = []
    if isinstance(node, ast.Import):
        found = [within(a.name) for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            package = module if is_package else module.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{node.module}" if node.module else package
        else:
            base = node.module or ""
        if base != PACKAGE and not base.startswith(PACKAGE + "."):
            return []
        for a in node.names:
            sub = f"{base}.{a.name}"
            # ``from reconcile import pipeline`` imports the submodule; ``from reconcile import
            # __version__`` imports the package itself
            found.append(sub if sub in known else within(base))
    return sorted({t for t in found if t is not None and t != module})


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported reconcile module: line of the first such import}."""
    known = _modules()
    graph: dict[str, dict[str, int]] = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: dict[str, int] = {}
        for node, line in _imports(tree):
            for target in _targets(node, name, path.name == "__init__.py", known):
                edges[target] = min(line, edges.get(target, line))
        graph[name] = edges
    return graph


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle (a path that returns to its start) per strongly connected component of more than
    one module (Tarjan), each with the line of every import along it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:
        # iterative Tarjan: the package is small, but recursion limits are not worth a thought
        work = [(v, iter(sorted(graph.get(v, {}))))]
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        while work:
            node, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, {})))))
                    break
                if w in on_stack:
                    low[node] = min(low[node], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == node:
                            break
                    if len(comp) > 1:
                        components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            connect(v)

    cycles = []
    for comp in components:
        members = set(comp)
        start = comp[0]
        # shortest way back to ``start`` inside the component (breadth first)
        prev: dict[str, str] = {}
        frontier = [start]
        end = None
        while frontier and end is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v]):
                    if w not in members:
                        continue
                    if w == start:
                        end = v
                        break
                    if w not in prev:
                        prev[w] = v
                        nxt.append(w)
                if end is not None:
                    break
            frontier = nxt
        path = [start]
        v = end
        while v is not None and v != start:
            path.insert(1, v)
            v = prev.get(v)
        path.append(start)
        cycles.append(path)
    return cycles


def _describe(graph: dict[str, dict[str, int]], path: list[str]) -> str:
    return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(path, path[1:])) + f" -> {path[-1]}"


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The parser itself, on statements whose targets are known by reading them."""
    src = (
        "from __future__ import annotations\n"
        "import os\n"
        "from typing import TYPE_CHECKING\n"
        "from reconcile import records, __version__\n"  # a submodule, and a name of the root
        "from . import views\n"  # relative, from a plain module: reconcile.views
        "from .counter import formulas\n"  # relative, a submodule of a subpackage
        "import reconcile.counter.core\n"
        "if TYPE_CHECKING:\n"
        "    from reconcile import cli\n"  # never runs: no edge
        "def f():\n"
        "    from reconcile.explain.core import explain\n"  # inside a function: reconcile.explain.core
        "    return explain\n"
    )
    tree = ast.parse(src)
    known = _modules()
    found = sorted({t for node, _ in _imports(tree) for t in _targets(node, "reconcile.x", False, known)})
    assert found == ["reconcile", "reconcile.counter.core", "reconcile.counter.formulas", "reconcile.explain.core",
                     "reconcile.records", "reconcile.views"]
    # from inside a package's __init__, ``.`` is the package itself
    init = ast.parse("from .core import count\nfrom .. import records\n")
    found = sorted({t for node, _ in _imports(init) for t in _targets(node, "reconcile.counter", True, known)})
    assert found == ["reconcile.counter.core", "reconcile.records"]


def test_find_cycles_reports_the_circle_as_a_path() -> None:
    # a -> b -> c -> a is one circle; d -> a hangs off it; e <-> f is another
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}, "e": {"f": 5}, "f": {"e": 6}}
    assert find_cycles(graph) == [["a", "b", "c", "a"], ["e", "f", "e"]]
    assert find_cycles({"a": {"b": 1}, "b": {}}) == []
    assert _describe(graph, ["e", "f", "e"]) == "e (line 5) -> f (line 6) -> e"


def test_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 50, "the package was not found"  # it has well over 50 modules
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(_describe(graph, c) for c in cycles)


def _part(module: str) -> str:
    """The part of the package a module belongs to: its subpackage, or itself at the top level."""
    return ".".join(module.split(".")[:2])


def test_no_cycle_between_the_parts_of_the_package() -> None:
    """Coarser than modules: ``report.markdown -> roofline.core`` and ``roofline.render ->
    report.numbers`` form no module circle, yet report and roofline would each need the other."""
    graph = import_graph()
    parts: dict[str, dict[str, int]] = {}
    via: dict[tuple[str, str], str] = {}
    for m, edges in graph.items():
        parts.setdefault(_part(m), {})
        for t, line in edges.items():
            a, b = _part(m), _part(t)
            if a != b and b not in parts[a]:
                parts[a][b] = line
                via[a, b] = f"{m} imports {t} (line {line})"
    cycles = find_cycles(parts)
    assert not cycles, "circles between parts of the package:\n" + "\n".join(
        " -> ".join(c) + "\n    " + "\n    ".join(via[a, b] for a, b in zip(c, c[1:])) for c in cycles)


# What ``records`` (the frozen result types every layer shares) may stand on: modules that import
# no other part of reconcile.
BELOW_RECORDS = frozenset({"reconcile.components", "reconcile.rollup", "reconcile.errors", "reconcile._version"})


def test_records_stands_only_on_leaves() -> None:
    graph = import_graph()
    seen: set[str] = set()
    todo = ["reconcile.records"]
    while todo:
        for t in graph[todo.pop()]:
            if t not in seen:
                seen.add(t)
                todo.append(t)
    assert seen <= BELOW_RECORDS, f"records reaches up to {sorted(seen - BELOW_RECORDS)}"


def test_nothing_below_the_report_layer_imports_report() -> None:
    graph = import_graph()
    bad = [f"{m} imports {t} (line {line})"
           for m, edges in sorted(graph.items()) for t, line in sorted(edges.items())
           if (t == "reconcile.report" or t.startswith("reconcile.report."))
           and not (m == "reconcile.report" or m.startswith("reconcile.report."))
           and m not in MAY_IMPORT_REPORT]
    assert not bad, "modules below the report layer import it:\n" + "\n".join(bad)


@pytest.mark.parametrize("module", sorted(MAY_IMPORT_REPORT))
def test_the_top_layer_exists(module: str) -> None:
    # a module renamed away would leave a stale exemption behind
    assert module in _modules()
