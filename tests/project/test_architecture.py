"""The shape of the package, checked from its source (issue 18): no import cycle anywhere, and
SQL only under `storage/` (and the files under `sql/`, read by `eventstore_actors.sql`).

The import graph is read with `ast`, so every import counts: at module level, inside
`if TYPE_CHECKING:` blocks and inside function bodies (a cycle deferred into a function is still
a cycle in the design). An import of a package (`from eventstore_actors import X`, or `from .
import X` where X is not a submodule) is an edge to its `__init__`, so a cycle through a
package's `__init__` is found too. The implicit import of a module's parent packages is not
an edge: a package re-exporting its submodules is the facade, not a cycle.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = "eventstore_actors"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE


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
    assert f"{PACKAGE}.storage.connection" in graph[f"{PACKAGE}.runtime"]
    assert f"{PACKAGE}.subscriptions.messages" in graph[f"{PACKAGE}.aio.subscription"]


def test_find_cycle_reports_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_package_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_storage_imports_nothing_above_it() -> None:
    """storage/ is the lowest layer: it never imports the subscriptions, the notifications,
    the actors, the store or its async facade (they ask storage, not the other way round)."""
    above = ("subscriptions", "notifications", "actors", "aio", "store", "writer")
    upward = {
        name: sorted(
            d
            for d in deps
            if any(d == f"{PACKAGE}.{a}" or d.startswith(f"{PACKAGE}.{a}.") for a in above)
        )
        for name, deps in import_graph().items()
        if name.startswith(f"{PACKAGE}.storage.")
    }
    assert not {k: v for k, v in upward.items() if v}


#: What reads as SQL in a string: a statement's opening words, a session setting, a call of
#: a PostgreSQL function (pg_...). Upper-case keywords only, so prose does not match.
_SQL = re.compile(
    r"\b(?:SELECT|INSERT\s+INTO|UPDATE\s+\S+\s+SET|DELETE\s+FROM|CREATE|ALTER|DROP|TRUNCATE"
    r"|LISTEN|NOTIFY|UNLISTEN|RESET|SHOW|BEGIN|COMMIT|ROLLBACK|WITH\s+\w+\s+AS)\b"
    r"|\bSET\s+(?:LOCAL\s+|SESSION\s+)?\w+\s*(?:=|TO\b)"
    r"|\bpg_\w+\s*\("
)

#: Modules outside storage/ that still speak SQL, to move into storage/ in the next steps (the
#: list may only shrink: `test_the_allow_list_names_only_modules_with_sql` fails on a module
#: that no longer needs its entry). A name ending in "." covers a whole package.
SQL_ALLOWED = {
    f"{PACKAGE}.notifications.listener": "LISTEN on the notification channel",
    f"{PACKAGE}.bench.": "the benchmark: raw-psycopg baselines and its own setup",
}


def _is_storage(name: str) -> bool:
    return name.startswith(f"{PACKAGE}.storage.") or name == f"{PACKAGE}.sql"


def _allowed(name: str) -> bool:
    return any(name.startswith(key) if key.endswith(".") else name == key for key in SQL_ALLOWED)


def sql_in(path: Path) -> list[str]:
    """Where a module speaks SQL: `statement(...)` calls and SQL strings (docstrings aside),
    as "line: what"."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if called == "statement":
                found.append(f"{node.lineno}: statement(...)")
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and _SQL.search(node.value)
        ):
            found.append(f"{node.lineno}: {node.value.strip()[:60]!r}")
    return sorted(found, key=lambda f: int(f.split(":")[0]))


def test_sql_in_sees_statements_and_sql_strings(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        '"""SELECT in a docstring is prose."""\n'
        "def f(c):\n"
        '    c.execute(statement("subscriptions/read"))\n'
        '    c.execute("SELECT pg_advisory_xact_lock(hashtextextended(%(key)s, 0))")\n'
        '    c.execute("SET synchronous_commit = off")\n'
        '    log.info("Select a subscription, then set it up")\n'
    )
    assert [f.split(":")[0] for f in sql_in(module)] == ["3", "4", "5"]


def test_sql_is_only_in_storage() -> None:
    """Outside storage/ no module composes or runs a statement of its own, nor imports the SQL
    files (`eventstore_actors.sql`), but for the allow-list."""
    graph = import_graph()
    modules = _modules()
    leaks = {}
    for name, (path, _) in modules.items():
        if _is_storage(name) or _allowed(name):
            continue
        found = sql_in(path)
        if f"{PACKAGE}.sql" in graph[name]:
            found.append("imports eventstore_actors.sql")
        if found:
            leaks[name] = found
    assert not leaks, "SQL outside storage/: " + "; ".join(
        f"{name} ({', '.join(found)})" for name, found in sorted(leaks.items())
    )


def test_the_allow_list_names_only_modules_with_sql() -> None:
    modules = _modules()
    for key in SQL_ALLOWED:
        names = [n for n in modules if (n.startswith(key) if key.endswith(".") else n == key)]
        assert names, f"{key} is not a module of the package"
        assert any(sql_in(modules[n][0]) for n in names), f"{key} speaks no SQL: drop it"
