"""Creating, initialising, dropping and resetting a store's database objects.

Every function is idempotent and takes the same DSN forms as `EventStore.start`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import structlog
from psycopg import sql as pgsql

from .config import redact, resolve_dsn, validate_schema
from .errors import ConfigError
from .storage import schema as schema_ops
from .storage.connection import reason

__all__ = ["create", "drop", "init", "migrate", "reset"]

log = structlog.get_logger("eventstore_actors.admin")


@contextmanager
def _connect(dsn: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    try:
        conn = psycopg.Connection.connect(dsn, autocommit=True)
    except psycopg.OperationalError as exc:
        raise ConfigError(f"cannot connect to {redact(dsn)}: {reason(exc)}") from None
    with conn:
        yield conn


def create(dsn: str | None = None, schema: str = "public") -> None:
    """Create the database named in the DSN if missing, then the tables."""
    schema = validate_schema(schema)
    dsn = resolve_dsn(dsn)
    dbname = str(psycopg.conninfo.conninfo_to_dict(dsn).get("dbname") or "")
    if dbname:
        with _connect(psycopg.conninfo.make_conninfo(dsn, dbname="postgres")) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)
            ).fetchone()
            if not exists:
                try:
                    conn.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(dbname)))
                    log.info("database created", database=dbname)
                except psycopg.errors.DuplicateDatabase:
                    pass
    init(dsn, schema)


@contextmanager
def _store_connection(
    dsn: str | None, schema: str
) -> Iterator[tuple[psycopg.Connection[tuple[object, ...]], str]]:
    """A connection for administering `schema`, after checking the arguments."""
    schema = validate_schema(schema)
    with _connect(resolve_dsn(dsn)) as conn:
        yield conn, schema


def init(dsn: str | None = None, schema: str = "public") -> None:
    """Create the tables in an existing database."""
    with _store_connection(dsn, schema) as (conn, schema):
        if schema_ops.init(conn, schema):
            log.info("store initialised", schema=schema)


def migrate(dsn: str | None = None, schema: str = "public") -> int:
    """Upgrade a store created by an earlier release in place; returns the schema version now.

    One transaction under the migration lock, keeping every event, stream, checkpoint and
    snapshot; idempotent, and safe when several processes run it at once.
    """
    with _store_connection(dsn, schema) as (conn, schema):
        before, now = schema_ops.migrate(conn, schema)
        if before != now:
            log.info("store migrated", schema=schema, from_version=before, to_version=now)
        return now


def drop(dsn: str | None = None, schema: str = "public") -> None:
    """Drop the tables (schema "public") or the whole schema."""
    with _store_connection(dsn, schema) as (conn, schema):
        if schema_ops.drop(conn, schema):
            log.info("store dropped", schema=schema)


def reset(dsn: str | None = None, schema: str = "public") -> None:
    """Empty every table and restart ids at 1 (tests and benchmarks)."""
    with _store_connection(dsn, schema) as (conn, schema):
        if schema_ops.installed_version(conn, schema) is None:
            raise ConfigError(schema_ops.not_initialised(schema))
        schema_ops.reset(conn, schema)
