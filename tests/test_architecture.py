"""The shape of the package, checked from its source (issue 18): no import cycle anywhere.

The import graph is read with `ast`, so every import counts: at module level, inside
`if TYPE_CHECKING:` blocks and inside function bodies (a cycle deferred into a function is still
a cycle in the design). An import of a package (`from eventstore_actors import X`, or `from .
import X` where X is not a submodule) is an edge to its `__init__`, so a cycle through a
package's `__init__` is found too. The implicit import of a module's parent packages is not
an edge: a package re-exporting its submodules is the facade, not a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "eventstore_actors"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE


def _modules() -> dict[str, tuple[Path, bool]]:
    """Every module of the package: dotted name -> (file, is a package's __init__)."""
    found: dict[str, tuple[Path, bool]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        found[".".join(parts)] = (path, is_package)
    return found


def _target(name: str, modules: dict[str, tuple[Path, bool]]) -> str | None:
    """The longest prefix of `name` that is a module of the package."""
    parts = name.split(".")
    while parts and ".".join(parts) not in modules:
        parts.pop()
    return ".".join(parts) if parts else None


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (anywhere in its source)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        here = name if is_package else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if (target := _target(alias.name, modules)) is not None:
                        edges.add(target)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")
                    if node.level > 1:
                        base = base[: -(node.level - 1)]
                    source = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    source = node.module or ""
                for alias in node.names:
                    if f"{source}.{alias.name}" in modules:
                        edges.add(f"{source}.{alias.name}")
                    elif (target := _target(source, modules)) is not None:
                        edges.add(target)
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as [a, b, ..., a], or None when it is acyclic."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path: list[str] = []
        on_path: set[str] = set()
        stack: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        path.append(start)
        on_path.add(start)
        while stack:
            node, todo = stack[-1]
            if not todo:
                stack.pop()
                path.pop()
                on_path.discard(node)
                done.add(node)
                continue
            nxt = todo.pop(0)
            if nxt in on_path:
                return [*path[path.index(nxt) :], nxt]
            if nxt in done or nxt not in graph:
                continue
            stack.append((nxt, sorted(graph[nxt])))
            path.append(nxt)
            on_path.add(nxt)
    return None


def test_the_graph_sees_the_package_imports() -> None:
    graph = import_graph()
    # A module-level import, an import into a package's __init__, and a relative one.
    assert f"{PACKAGE}.store" in graph[PACKAGE]
    assert f"{PACKAGE}.storage.connection" in graph[f"{PACKAGE}.store"]
    assert f"{PACKAGE}.subscriptions.messages" in graph[f"{PACKAGE}.aio.subscription"]


def test_find_cycle_reports_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_package_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
