"""No import circles inside distproc: its modules' imports, read statically, form a DAG.

Every import statement counts, wherever it stands: at module level, under
`if TYPE_CHECKING:`, in try/except or class bodies, and inside functions. A
circle among module-level imports bites at import time (whichever module is
imported first sees the other half-initialised); a type-only back reference
still ties two modules' designs together; and an import moved into a function
to dodge a circle only hides it (the issue's inventory/_hosts <-> ec2 and
agent/lease <-> runner circles were both of that kind). distproc's deliberate
laziness (boto3, asyncssh, the CLI's subcommands) is about when a module is
read, never about a back edge, so counting imports in functions costs nothing.

`from a.b import c` is an edge to a.b.c when that is a module, else to a.b
(its __init__, which holds c); relative imports are resolved against the
importing module's package. Only edges between distproc's own modules count;
`importlib.import_module` calls (distproc/__init__.py's lazy attributes) are not read.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "distproc"


def module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports_of(path: Path, modules: set[str], root: Path = ROOT) -> set[str]:
    """The distproc modules that the file at path imports, anywhere in it."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        for target in targets:
            # `import a.b.c` names a.b.c; keep the longest prefix that is one of our modules.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    files = sorted((root / PACKAGE).rglob("*.py"))
    modules = {module_name(p, root) for p in files}
    return {module_name(p, root): imports_of(p, modules, root) for p in files}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One concrete circle (a -> b -> ... -> a) for each strongly connected group of modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm; the graph is a few hundred nodes deep at most
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            group = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.add(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_circle_in(graph, group) for group in groups]


def _circle_in(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest circle through the group's first module, staying inside the group."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for succ in sorted(graph[node] & group):
                if succ == start:
                    return [*paths[node], start]
                if succ not in paths:
                    paths[succ] = [*paths[node], succ]
                    nxt.append(succ)
        frontier = nxt
    raise AssertionError(f"no circle through {start} in {sorted(group)}")


def test_distproc_has_no_import_circles() -> None:
    graph = import_graph()
    assert len(graph) > 50 and "distproc.run.runner" in graph  # the walk found the package
    found = cycles(graph)
    assert not found, "import circles in distproc:\n" + "\n".join("  " + " -> ".join(c) for c in found)


# -- the walker itself, on small made-up graphs and files ---------------------------------


def test_cycles_finds_each_circle_once_and_names_it() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"f"}, "f": {"e"}, "g": {"a"}}
    assert sorted(cycles(graph)) == [["a", "b", "c", "a"], ["e", "f", "e"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_imports_are_resolved_wherever_they_stand(tmp_path: Path) -> None:
    pkg = tmp_path / PACKAGE / "sub"
    pkg.mkdir(parents=True)
    (tmp_path / PACKAGE / "__init__.py").write_text("")
    (tmp_path / PACKAGE / "errors.py").write_text("")
    (tmp_path / PACKAGE / "lazy.py").write_text("")
    (tmp_path / PACKAGE / "typed.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "b.py").write_text("")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "import json\n"
        "from . import b\n"
        "from .. import errors\n"
        "from ..sub import thing\n"
        "if TYPE_CHECKING:\n"
        "    from distproc.typed import T\n"
        "def f():\n"
        "    from .. import lazy\n"
    )
    graph = import_graph(tmp_path)
    expected = {"sub.b", "errors", "sub", "typed", "lazy"}
    assert graph[f"{PACKAGE}.sub.a"] == {f"{PACKAGE}.{name}" for name in expected}
