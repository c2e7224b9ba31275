"""Creating, initialising, dropping and resetting a store's database objects.

Every function is idempotent and takes the same DSN forms as `EventStore.start`. They touch
only what the store created (see storage/schema.py), and fail with a one-line ConfigError
(StoreUnavailableError when the connection is lost), never a raw psycopg error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from . import hints, logs
from .config import redact, resolve_dsn, scrub, validate_schema
from .errors import ConfigError, StoreUnavailableError
from .storage import databases, keys
from .storage import schema as schema_ops
from .storage.errors import is_connection_loss, reason

__all__ = ["create", "drop", "init", "migrate", "reset", "rotate_master_key"]

log = logs.get_logger("eventstore_actors.admin")


@contextmanager
def _connect(dsn: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    try:
        # Nothing prepared: dsn may be PgBouncer in transaction pooling mode (the migrations
        # run in one transaction each, with SET LOCAL search_path, so they work through it).
        conn = psycopg.Connection.connect(dsn, autocommit=True, prepare_threshold=None)
    except psycopg.OperationalError as exc:
        message = scrub(f"cannot connect to {redact(dsn)}: {reason(exc)}", dsn)
        raise ConfigError(hints.missing_database(message, dsn) or message) from None
    with conn:
        try:
            yield conn
        except psycopg.Error as exc:
            if is_connection_loss(exc, conn):
                raise StoreUnavailableError(f"database unavailable: {_one_line(exc)}") from None
            raise ConfigError(f"the database refused: {_one_line(exc)}") from None


def _one_line(exc: psycopg.Error) -> str:
    """The server's message and detail on one line (the CLI prints exactly one line)."""
    parts = [exc.diag.message_primary or reason(exc), exc.diag.message_detail or ""]
    return " ".join(" ".join(p.split()) for p in parts if p)


def create(dsn: str | None = None, schema: str = "public") -> bool:
    """Create the database named in the DSN if missing, then the tables. True when anything
    was created, False when both were there already (nothing to do)."""
    schema = validate_schema(schema)
    dsn = resolve_dsn(dsn)
    dbname = str(psycopg.conninfo.conninfo_to_dict(dsn).get("dbname") or "")
    created = False
    if dbname:
        with _connect(psycopg.conninfo.make_conninfo(dsn, dbname="postgres")) as conn:
            if databases.ensure_database(conn, dbname):
                log.info("database created", database=dbname)
                created = True
    return init(dsn, schema) or created


@contextmanager
def _store_connection(
    dsn: str | None, schema: str
) -> Iterator[tuple[psycopg.Connection[tuple[object, ...]], str]]:
    """A connection for administering `schema`, after checking the arguments."""
    schema = validate_schema(schema)
    with _connect(resolve_dsn(dsn)) as conn:
        yield conn, schema


def init(dsn: str | None = None, schema: str = "public") -> bool:
    """Create the tables in an existing database; True when they were created, False when the
    store was there already (nothing to do).

    Refuses (ConfigError, nothing changed) a schema that is not a store yet but already holds
    objects under the store's names (a `snapshots` table of the application, say).
    """
    with _store_connection(dsn, schema) as (conn, schema):
        if schema_ops.init(conn, schema):
            log.info("store initialised", schema=schema)
            return True
        return False


def migrate(dsn: str | None = None, schema: str = "public") -> int:
    """Upgrade a store created by an earlier release in place; returns the schema version now.

    One transaction under the migration lock, keeping every event, stream, checkpoint and
    snapshot; idempotent, and safe when several processes run it at once.
    """
    return _migrate(dsn, schema)[1]


def _migrate(dsn: str | None, schema: str) -> tuple[int | None, int]:
    """`migrate`, returning (the version before, the version now): the command line says
    when there was nothing to do."""
    with _store_connection(dsn, schema) as (conn, schema):
        before, now = schema_ops.migrate(conn, schema)
        if before != now:
            log.info("store migrated", schema=schema, from_version=before, to_version=now)
        return before, now


def drop(dsn: str | None = None, schema: str = "public") -> bool:
    """Drop the store's tables and functions, then its schema if it is left empty (never
    "public"). True when a store was dropped, False when the schema held none.

    Refuses (ConfigError, nothing dropped) a schema that is not a store but holds objects
    under the store's names; objects the store did not create are never dropped.
    """
    with _store_connection(dsn, schema) as (conn, schema):
        dropped = schema_ops.drop(conn, schema)
    if dropped:
        log.info("store dropped", schema=schema)
    return dropped


def reset(dsn: str | None = None, schema: str = "public") -> None:
    """Empty every table and restart ids at 1 (tests and benchmarks)."""
    dsn = resolve_dsn(dsn)
    with _store_connection(dsn, schema) as (conn, schema):
        if schema_ops.installed_version(conn, schema) is None:
            raise ConfigError(hints.not_initialised(schema, dsn))
        schema_ops.reset(conn, schema)


def rotate_master_key(
    dsn: str | None = None, schema: str = "public", *, old: bytes, new: bytes
) -> int:
    """Re-wrap every data key of the schema from the master key `old` to `new` (32 bytes
    each, ConfigError otherwise) in one transaction; events are not touched. Returns how many
    keys were re-wrapped. Keys already wrapped by `new` are left as they are, so running it
    again (after stores still on `old` created keys meanwhile) finishes the job; a key that
    neither unwraps (a wrong `old`) raises ConfigError and nothing changes. Restart the
    stores with `new` afterwards: `EventStore.start` checks a master key against the data
    keys (see docs/personal-data.md)."""
    from .lifecycle.encryption import rewrapper

    rewrap = rewrapper(old, new)
    dsn = resolve_dsn(dsn)
    with _store_connection(dsn, schema) as (conn, schema):
        version = schema_ops.installed_version(conn, schema)
        if version is None:
            raise ConfigError(hints.not_initialised(schema, dsn))
        if version < 4:
            raise ConfigError(schema_ops.outdated(schema, version))
        count = keys.rewrap_all(conn, schema, rewrap)
    log.info("master key rotated", schema=schema, keys=count)
    return count
