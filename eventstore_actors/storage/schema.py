"""Installing, checking, emptying and removing a store's tables."""

from __future__ import annotations

import psycopg
from psycopg import sql as pgsql

from ..errors import ConfigError
from ..sql import statement
from .migrations import SCHEMA_VERSION, pending, script

__all__ = [
    "SCHEMA_VERSION",
    "drop",
    "init",
    "installed_version",
    "migrate",
    "not_initialised",
    "outdated",
    "reset",
    "too_new",
]

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
    """Create the latest schema in one transaction; True when the store was missing.

    An existing store at this release's version is left as it is; an older one is not
    upgraded behind the user's back (ConfigError naming `migrate`).
    """
    with conn.transaction():
        _lock(conn, schema)
        before = installed_version(conn, schema)
        if before is not None:
            _check_version(before, schema, upgrade=False)
            return False
        conn.execute(pgsql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(pgsql.Identifier(schema)))
        _apply(conn, schema, pending(None))
    return True


def migrate(conn: Conn, schema: str) -> tuple[int | None, int]:
    """Upgrade the store in `schema` to this release's version, in one transaction.

    Returns (version before, version now). Idempotent; concurrent runs wait on the migration
    lock and then find nothing to do.
    """
    with conn.transaction():
        _lock(conn, schema)
        before = installed_version(conn, schema)
        if before is None:
            raise ConfigError(not_initialised(schema))
        _check_version(before, schema, upgrade=True)
        _apply(conn, schema, pending(before))
    return before, SCHEMA_VERSION


def _apply(conn: Conn, schema: str, versions: list[int]) -> None:
    _use(conn, schema)
    for version in versions:
        conn.execute(script(version))


def _check_version(version: int, schema: str, *, upgrade: bool) -> None:
    if version > SCHEMA_VERSION:
        raise ConfigError(too_new(schema, version))
    if version < SCHEMA_VERSION and not upgrade:
        raise ConfigError(outdated(schema, version))


def outdated(schema: str, version: int) -> str:
    """What to tell a user whose store predates this release."""
    flag = "" if schema == "public" else f" --schema {schema}"
    return (
        f"schema {schema!r} holds an event store at schema version {version}, this release "
        f"needs {SCHEMA_VERSION}: run `eventstore-actors migrate{flag}` "
        "(or admin.migrate(dsn, schema)) to upgrade it in place"
    )


def too_new(schema: str, version: int) -> str:
    """What to tell a user whose store was written by a newer release."""
    return (
        f"schema {schema!r} holds an event store at schema version {version}, newer than this "
        f"release understands ({SCHEMA_VERSION}): upgrade the eventstore-actors package"
    )


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
