"""Installing, checking, emptying and removing a store's tables."""

from __future__ import annotations

import psycopg
from psycopg import sql as pgsql

from ..sql import statement

__all__ = ["SCHEMA_VERSION", "drop", "init", "installed_version", "not_initialised", "reset"]

#: The schema version this release writes and expects.
SCHEMA_VERSION = 1

Conn = psycopg.Connection[tuple[object, ...]]


def _lock(conn: Conn, schema: str) -> None:
    # Concurrent installs or migrations of one schema wait for each other.
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
        (f"eventstore_actors.migrate.{schema}",),
    )


def _use(conn: Conn, schema: str) -> None:
    conn.execute(pgsql.SQL("SET LOCAL search_path TO {}").format(pgsql.Identifier(schema)))


def init(conn: Conn, schema: str) -> bool:
    """Create the schema's tables in one transaction; True when anything was missing."""
    with conn.transaction():
        _lock(conn, schema)
        before = installed_version(conn, schema)
        conn.execute(pgsql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(pgsql.Identifier(schema)))
        _use(conn, schema)
        conn.execute(statement(f"schema/v{SCHEMA_VERSION}"))
    return before is None


def not_initialised(schema: str) -> str:
    """What to tell a user whose schema holds no store."""
    flag = "" if schema == "public" else f" --schema {schema}"
    return (
        f"schema {schema!r} is not initialised: run `eventstore-actors init{flag}` "
        "(or admin.init(dsn, schema))"
    )


def installed_version(conn: Conn, schema: str) -> int | None:
    """The schema version installed in `schema`, or None when the store is not installed."""
    row = conn.execute(
        "SELECT to_regclass(format('%%I.schema_version', %s::text)) IS NOT NULL", (schema,)
    ).fetchone()
    if not row or not row[0]:
        return None
    query = pgsql.SQL("SELECT max(version) FROM {}.schema_version").format(pgsql.Identifier(schema))
    found = conn.execute(query).fetchone()
    return int(found[0]) if found and found[0] is not None else None  # type: ignore[call-overload]


def drop(conn: Conn, schema: str) -> bool:
    """Remove the store: its tables in "public", the whole schema otherwise. True if it existed."""
    with conn.transaction():
        _lock(conn, schema)
        existed = installed_version(conn, schema) is not None
        if schema == "public":
            _use(conn, schema)
            conn.execute(statement("admin/drop_tables"))
        else:
            conn.execute(
                pgsql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(pgsql.Identifier(schema))
            )
    return existed


def reset(conn: Conn, schema: str) -> None:
    """Empty every table and restart ids at 1."""
    with conn.transaction():
        _lock(conn, schema)
        _use(conn, schema)
        conn.execute(statement("admin/reset"))
