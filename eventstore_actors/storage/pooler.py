"""Compatibility with a transaction pooler (PgBouncer, pool_mode=transaction) on `dsn`.

Consecutive transactions of one client may run on different server connections, shared
with other clients, and PgBouncer 1.18 refuses the `options` startup parameter: nothing may
rely on session state. So on such connections nothing is prepared (prepare_threshold=None
also overrides the prepare=True of some statements), every statement names the store's
schema (`qualify`, applied by the connections' cursor class), explicit transactions begin
with their isolation level (BEGIN ISOLATION LEVEL READ COMMITTED), and TimeZone is set with
SET, a parameter PgBouncer tracks per client and sets again on every server connection it
assigns (it only decides the zone of the datetimes psycopg returns: the instants are exact
whatever the server's zone).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import psycopg
import psycopg.conninfo
from psycopg import sql as pgsql

from ..config import Settings
from .schema import FUNCTIONS, TABLES

__all__ = ["configure_pooled", "needs_session", "pooled_kwargs", "qualify"]

#: The names of the store's tables and functions, as they appear unqualified in its SQL.
_NAMES = sorted({*TABLES, *FUNCTIONS}, key=len, reverse=True)
#: String literals, quoted identifiers, dollar-quoted bodies and comments are skipped; a name
#: is qualified unless it is already (after a dot), is a qualifier itself (before a dot), or
#: is part of a longer word or of a %(name)s placeholder.
_TOKENS = re.compile(
    r"('(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\$\$.*?\$\$|--[^\n]*)"
    r"|(?<![.\w$])(?<!%\()(" + "|".join(_NAMES) + r")\b(?!\s*\.)(?!\)s)",
    re.S,
)


@lru_cache(maxsize=4096)
def qualify(schema: str, query: str) -> str:
    """`query` with the store's tables and functions named with their schema."""
    prefix = f'"{schema}".'

    def replace(match: re.Match[str]) -> str:
        return match.group(0) if match.group(1) else prefix + match.group(2)

    return _TOKENS.sub(replace, query)


#: What needs a session of its own (a session-level advisory lock or unlock, LISTEN): on a
#: pooled connection it would stay on a server connection the pooler shares with others,
#: after its holder is gone (a member no one is, a lock nobody can release). Looked for
#: outside string literals, quoted identifiers, dollar-quoted bodies and comments.
_SESSION_ONLY = re.compile(
    r"(?<![\w.$])pg_(?:try_)?advisory_(?:un)?lock(?:_shared|_all)?\s*\("
    r"|(?:^|;)\s*(?:UN)?LISTEN\b",
    re.I | re.M,
)
_SKIPPED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\$\$.*?\$\$|--[^\n]*", re.S)


@lru_cache(maxsize=4096)
def needs_session(query: str) -> bool:
    """Whether `query` takes a session-level advisory lock or LISTENs (see `_SESSION_ONLY`)."""
    return _SESSION_ONLY.search(_SKIPPED.sub(" ", query)) is not None


@lru_cache(maxsize=64)
def _qualifying_cursor(schema: str) -> type[psycopg.Cursor[Any]]:
    """A cursor class that runs every statement schema-qualified (see `qualify`) and never
    prepares one, whatever its caller asks (prepare=True) or the connection's threshold; it
    refuses what needs a session of its own (`_SESSION_ONLY`)."""

    def text(cursor: psycopg.Cursor[Any], query: Any) -> Any:
        if isinstance(query, bytes):
            query = query.decode()
        elif isinstance(query, pgsql.Composable):
            query = query.as_string(cursor)
        if not isinstance(query, str):
            return query
        if needs_session(query):  # a programming error: nothing is sent
            raise RuntimeError(
                "a session-level advisory lock or LISTEN on a `dsn` connection of a store with "
                "a session_dsn (dsn may be a transaction pooler): it must go through a "
                "storage.sessions.Session, on session_dsn"
            )
        return qualify(schema, query)

    class QualifyingCursor(psycopg.Cursor[Any]):
        def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
            kwargs["prepare"] = False
            return super().execute(text(self, query), *args, **kwargs)

        def executemany(self, query: Any, *args: Any, **kwargs: Any) -> None:
            return super().executemany(text(self, query), *args, **kwargs)

        def stream(self, query: Any, *args: Any, **kwargs: Any) -> Any:
            return super().stream(text(self, query), *args, **kwargs)

        def copy(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
            return super().copy(text(self, statement), *args, **kwargs)

    return QualifyingCursor


def pooled_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection keywords for `dsn` when it may be a transaction pooler: those of
    `Settings.connect_kwargs` without the startup `options`, nothing prepared, and
    schema-qualified statements."""
    kwargs = settings.connect_kwargs()
    given = psycopg.conninfo.conninfo_to_dict(settings.dsn)
    if given.get("options"):
        kwargs["options"] = given["options"]  # the DSN's own, if the pooler accepts them
    else:
        del kwargs["options"]
    kwargs["prepare_threshold"] = None
    kwargs["cursor_factory"] = _qualifying_cursor(settings.schema)
    return kwargs


def configure_pooled(conn: psycopg.Connection[Any]) -> None:
    """What `pooled_kwargs` cannot say at connect time (see the module docstring)."""
    conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
    conn.execute("SET TimeZone TO 'UTC'")
