"""Installing, checking, emptying and removing a store's tables.

A store never adopts or drops what it did not create: a schema is a store when it holds the
store's own `schema_version` table (recognised by its columns), and `init` refuses a schema
that already holds other objects under the store's names.
"""

from __future__ import annotations

import time

import psycopg
from psycopg import sql as pgsql

from .. import logs
from ..errors import ConfigError
from ..sql import statement
from .migrations import SCHEMA_VERSION, pending, script

__all__ = [
    "FUNCTIONS",
    "RELATIONS",
    "SCHEMA_VERSION",
    "TABLES",
    "drop",
    "holds_events",
    "init",
    "installed_version",
    "migrate",
    "not_initialised",
    "outdated",
    "reset",
    "too_new",
]

log = logs.get_logger("eventstore_actors.admin")

#: Everything `sql/schema/v1.sql` and the migrations create in the store's schema (a test
#: compares these with a fresh install: a migration that adds objects must add them here and
#: to admin/drop_tables). BASE_TABLES: those of version 1, which every store has.
BASE_TABLES = ("schema_version", "event_counter", "streams", "events", "subscriptions", "snapshots")
TABLES = (
    *BASE_TABLES,
    "links",
    "parked_events",
    "eventsourcing_tracking",
    "eventsourcing_snapshots",
    # schema version 4: personal data
    "data_keys",
    "forgotten_subjects",
    "archive_files",
    # schema version 5: crypto (forget generation)
    "forget_generation",
    # schema version 7: the store's identity, tombstones of hard deletes
    "store_identity",
    "hard_deletes",
)
RELATIONS = (
    *TABLES,
    "streams_stream_id_seq",
    "subscriptions_subscription_id_seq",
    "schema_version_pkey",
    "event_counter_pkey",
    "streams_pkey",
    "streams_stream_uuid_key",
    "events_pkey",
    "events_stream_version_key",
    "subscriptions_pkey",
    "subscriptions_stream_name_key",
    "snapshots_pkey",
    # schema version 2
    "events_event_uuid_key",
    "streams_stream_version_idx",
    "streams_created_at_idx",
    "streams_deleted_at_idx",
    "streams_status_idx",
    "links_pkey",
    "links_stream_event_key",
    "links_event_id_idx",
    "parked_events_pkey",
    "eventsourcing_tracking_pkey",
    "eventsourcing_snapshots_pkey",
    # schema version 4
    "streams_retention_idx",
    "events_subject_idx",
    "data_keys_pkey",
    "forgotten_subjects_pkey",
    "archive_files_pkey",
    "archive_files_range_key",
    "archive_files_url_key",
    "archive_files_archive_id_seq",
    # schema version 5
    "parked_events_event_id_idx",
    # schema version 5: crypto
    "forget_generation_pkey",
    # schema version 7
    "store_identity_pkey",
    "hard_deletes_pkey",
)
FUNCTIONS = (
    "append_events",
    "append_events_v2",
    "refuse_event_change",
    # schema version 2
    "refuse_stream_delete",
    "delete_stream",
    "link_events",
    # schema version 3
    "refuse_deleted_stream_append",
    # schema version 4: personal data
    "refuse_forgotten_subject",
    "refuse_forgotten_subjects",
    "append_events_v4",
    # schema version 5: links to archived events
    "link_events_v5",
    # schema version 5: crypto
    "bump_forget_generation",
    # schema version 7: lives of streams
    "archived_event_live",
)

#: The columns that tell the store's own schema_version table from another tool's
#: (Flyway's, say, has a text `version`).
_MARKER_COLUMNS = {("version", "integer"), ("applied_at", "timestamp with time zone")}

_KINDS = {
    "r": "table",
    "p": "table",
    "v": "view",
    "m": "materialized view",
    "f": "foreign table",
    "i": "index",
    "I": "index",
    "S": "sequence",
    "c": "type",
}

Conn = psycopg.Connection[tuple[object, ...]]


def _lock(conn: Conn, schema: str) -> None:
    # Concurrent installs or migrations of one schema wait for each other.
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
        (f"eventstore_actors.migrate.{schema}",),
    )


def _use(conn: Conn, schema: str) -> None:
    # pg_temp last: the functions created here keep this search_path (SET ... FROM CURRENT),
    # so a temporary table named like one of the store's tables never stands in for it.
    conn.execute(pgsql.SQL("SET LOCAL search_path TO {}, pg_temp").format(pgsql.Identifier(schema)))


def _is_store(conn: Conn, schema: str) -> bool:
    """Whether `schema` holds the store's own schema_version table."""
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute AS a "
        "JOIN pg_class AS c ON c.oid = a.attrelid JOIN pg_namespace AS n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = 'schema_version' AND c.relkind = 'r' "
        "AND a.attnum > 0 AND NOT a.attisdropped",
        (schema,),
    ).fetchall()
    return {(str(name), str(kind)) for name, kind in rows} == _MARKER_COLUMNS


def _namesakes(conn: Conn, schema: str) -> list[tuple[str, str]]:
    """(kind, name) of the objects in `schema` that bear a name the store uses."""
    rows = conn.execute(
        "SELECT c.relkind::text, c.relname::text FROM pg_class AS c "
        "JOIN pg_namespace AS n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %(schema)s AND c.relname = ANY(%(relations)s) "
        "UNION ALL SELECT 'c', t.typname::text FROM pg_type AS t "
        "JOIN pg_namespace AS n ON n.oid = t.typnamespace "
        "WHERE n.nspname = %(schema)s AND t.typtype <> 'c' AND t.typname = ANY(%(relations)s) "
        "UNION ALL SELECT 'function', p.proname::text FROM pg_proc AS p "
        "JOIN pg_namespace AS n ON n.oid = p.pronamespace "
        "WHERE n.nspname = %(schema)s AND p.proname = ANY(%(functions)s) "
        "ORDER BY 2, 1",
        {"schema": schema, "relations": list(RELATIONS), "functions": list(FUNCTIONS)},
    ).fetchall()
    return [(_KINDS.get(str(kind), str(kind)), str(name)) for kind, name in rows]


def _describe(objects: list[tuple[str, str]]) -> str:
    return ", ".join(f"{kind} {name}" for kind, name in objects)


def _schema_exists(conn: Conn, schema: str) -> bool:
    row = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
    return row is not None


def init(conn: Conn, schema: str) -> bool:
    """Create the latest schema in one transaction; True when the store was missing.

    An existing store at this release's version is left as it is; an older one is not
    upgraded behind the user's back (ConfigError naming `migrate`). Refuses (ConfigError,
    nothing changed) a schema that is not a store yet but already holds a table, function or
    other object under one of the store's names: adopting it would mix the application's
    data with the store's and let `drop` delete it.
    """
    with conn.transaction():
        _lock(conn, schema)
        before = installed_version(conn, schema)
        if before is not None:
            _check_version(before, schema, upgrade=False)
            return False
        namesakes = _namesakes(conn, schema)
        if namesakes:
            raise ConfigError(
                f"schema {schema!r} already holds {_describe(namesakes)}, not created by "
                "eventstore-actors: nothing was changed; rename them or use another schema"
            )
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
        versions = pending(before)
        if versions:
            _lock_tables(conn, schema)
        _apply(conn, schema, versions)
    return before, SCHEMA_VERSION


#: The order in which the store's sessions take its tables: every append, link and delete
#: (of this release and of release 1) begins with the counter row, then the streams, then
#: the events. A migration takes them in the same order, all of them before it changes
#: anything, so that it queues behind writers instead of deadlocking with them.
_LOCK_ORDER = (
    "event_counter",
    "streams",
    "hard_deletes",
    "events",
    "links",
    "parked_events",
    "subscriptions",
    "snapshots",
    "eventsourcing_tracking",
    "eventsourcing_snapshots",
)
#: How long one attempt may wait for the tables after the counter, and how long a migration
#: goes on trying before it gives up (nothing changed then).
_LOCK_ATTEMPT_MS = 500
_LOCK_GIVE_UP_S = 300.0


def _lock_tables(conn: Conn, schema: str) -> None:
    """Lock every table of the store (ACCESS EXCLUSIVE) before a migration changes any.

    The counter first, waiting as long as it takes: writers hold it only for their own short
    transactions, and those that come later queue behind the migration. Then the others,
    within _LOCK_ATTEMPT_MS: a session that holds one of them and waits for the counter (a
    reader in a transaction, an application transaction with an append in it) would
    otherwise deadlock with us, so the attempt gives everything back (a savepoint) and tries
    again. Bounded well below deadlock_timeout, so we give way before PostgreSQL has to abort
    anyone.
    """
    rows = conn.execute(
        "SELECT c.relname::text FROM pg_class AS c JOIN pg_namespace AS n "
        "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r' "
        "AND c.relname = ANY(%s)",
        (schema, list(_LOCK_ORDER)),
    ).fetchall()
    present = {str(r[0]) for r in rows}
    names = [pgsql.Identifier(schema, t) for t in _LOCK_ORDER if t in present]
    if not names:
        return
    first = pgsql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(names[0])
    rest = pgsql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
        pgsql.SQL(", ").join(names[1:])
    )
    row = conn.execute("SELECT current_setting('statement_timeout')").fetchone()
    timeout = str(row[0]) if row else "0"
    give_up = time.monotonic() + _LOCK_GIVE_UP_S
    pause = 0.02
    while True:
        try:
            with conn.transaction():
                conn.execute(first)
                if len(names) > 1:
                    conn.execute(
                        "SELECT set_config('statement_timeout', %s, true)", (str(_LOCK_ATTEMPT_MS),)
                    )
                    conn.execute(rest)
                    conn.execute("SELECT set_config('statement_timeout', %s, true)", (timeout,))
            return
        except (psycopg.errors.QueryCanceled, psycopg.errors.DeadlockDetected):
            if time.monotonic() > give_up:
                raise ConfigError(
                    f"cannot migrate schema {schema!r}: other sessions kept its tables busy for "
                    f"{_LOCK_GIVE_UP_S:.0f} s; nothing was changed, run the migration again"
                ) from None
            log.info("migration waits for the store's tables", schema=schema)
            time.sleep(pause)
            pause = min(0.5, pause * 2)


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
    if not _is_store(conn, schema):
        return None
    query = pgsql.SQL("SELECT max(version) FROM {}.schema_version").format(pgsql.Identifier(schema))
    found = conn.execute(query).fetchone()
    return int(found[0]) if found and found[0] is not None else None  # type: ignore[call-overload]


def holds_events(conn: Conn, schema: str) -> bool:
    """Whether `schema` holds a store with at least one event (psycopg.Error if it holds no
    store)."""
    query = pgsql.SQL("SELECT EXISTS (SELECT 1 FROM {}.events)").format(pgsql.Identifier(schema))
    row = conn.execute(query).fetchone()
    return bool(row and row[0])


def drop(conn: Conn, schema: str) -> bool:
    """Remove the store's own objects, then its schema if nothing else is left in it (never
    "public"). True when a store was dropped; False when there was none (nothing to do).

    Refuses (ConfigError, nothing dropped) a schema that holds objects under the store's names
    without being a store, or a store missing some of its tables. Nothing is dropped with
    CASCADE: an application object that depends on the store's tables stops the drop.
    """
    with conn.transaction():
        _lock(conn, schema)
        if not _schema_exists(conn, schema):
            return False
        namesakes = _namesakes(conn, schema)
        if not _is_store(conn, schema):
            if namesakes:
                raise ConfigError(
                    f"schema {schema!r} holds no eventstore-actors store, yet it holds "
                    f"{_describe(namesakes)}: nothing was dropped"
                )
            return False
        present = {name for kind, name in namesakes if kind == "table"}
        missing = [t for t in BASE_TABLES if t not in present]  # a v1 store has no links
        if missing:
            raise ConfigError(
                f"schema {schema!r} holds an incomplete store (missing {', '.join(missing)}): "
                "nothing was dropped; `eventstore-actors init` repairs it"
            )
        _use(conn, schema)
        conn.execute(statement("admin/drop_tables"))
        if schema != "public":
            _drop_schema_if_empty(conn, schema)
    return True


def _drop_schema_if_empty(conn: Conn, schema: str) -> None:
    # DROP SCHEMA without CASCADE fails when anything is left in it: then the schema stays.
    try:
        with conn.transaction():
            conn.execute(pgsql.SQL("DROP SCHEMA {}").format(pgsql.Identifier(schema)))
    except psycopg.errors.DependentObjectsStillExist:
        log.info("schema kept: it holds objects the store did not create", schema=schema)


#: The `eventsourcing` module's tables (from version 2 on): emptied by `reset` too.
_EVENTSOURCING_TABLES = ("eventsourcing_tracking", "eventsourcing_snapshots")


def reset(conn: Conn, schema: str) -> None:
    """Empty every table (the `eventsourcing` module's too) and restart ids at 1."""
    with conn.transaction():
        _lock(conn, schema)
        _use(conn, schema)
        conn.execute(statement("admin/reset"))
        for table in _EVENTSOURCING_TABLES:
            found = conn.execute(
                "SELECT to_regclass(%s) IS NOT NULL", (f'"{schema}".{table}',)
            ).fetchone()
            if found and found[0]:
                conn.execute(pgsql.SQL("TRUNCATE {}").format(pgsql.Identifier(schema, table)))
