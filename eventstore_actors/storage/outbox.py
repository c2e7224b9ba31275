"""Appends in the caller's own transaction (the outbox pattern): `conn=`.

The events are written on the caller's psycopg connection, in its current transaction, by
the same append_events_v4 function the writer uses, so every rule holds alike: expected
versions, idempotent retries, the counter row lock taken first. That lock is held until the
caller commits or rolls back: global order holds, and other appenders wait meanwhile.

Nothing of the caller's session is changed: the SQL is schema-qualified (the function fixes
its own search_path), nothing is prepared, results are read with a plain tuple row factory.
Inside the caller's transaction the append runs under a savepoint, so a refused append (a
wrong expected version, a duplicate) leaves that transaction usable and holding nothing of
ours; the caller's transaction is never committed or rolled back here. Only an autocommit
connection outside a transaction block gets a transaction of its own, committed at once.

The NOTIFY is sent at the caller's commit with an origin that is not the store's writer's, so
the store's listener reports it and subscribers receive the events after that commit.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, cast

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from ..errors import EventStoreError, StoreUnavailableError
from ..events import AppendResult, ExpectedVersion
from ..sql import statement
from . import links
from .appender import AppendRequest, Written, compare_replays, group_outcomes, group_params
from .asyncconn import BorrowedAsyncConnection
from .connection import FINGERPRINT
from .errors import is_gone, translate
from .pooler import qualify

__all__ = [
    "Outbox",
    "SameDatabase",
    "check_connection",
    "fingerprint",
    "holds_counter_lock",
    "rollback_to_savepoint",
]

_STATUS = psycopg.pq.TransactionStatus
_SAVEPOINT = "eventstore_actors_append"


def check_connection(conn: Any) -> psycopg.Connection[Any]:
    """The caller's connection, refused (TypeError/ValueError) unless it can take an append
    now. The database it is connected to is checked by `Outbox.append`."""
    if isinstance(conn, psycopg.AsyncConnection):
        raise TypeError(
            "conn is a psycopg AsyncConnection: pass it to the asyncio API "
            "(eventstore_actors.aio.AsyncEventStore), whose calls take one"
        )
    if not isinstance(conn, (psycopg.Connection, BorrowedAsyncConnection)):
        raise TypeError(f"conn must be a psycopg 3 Connection, got {type(conn).__qualname__}")
    if is_gone(conn):
        raise ValueError("conn is closed")
    status = conn.info.transaction_status
    if status == _STATUS.INERROR:
        raise ValueError(
            "conn is in a failed transaction: roll it back (or to a savepoint) before appending"
        )
    if status not in (_STATUS.IDLE, _STATUS.INTRANS):
        raise ValueError("conn is busy (a query or COPY in progress on it)")
    # A borrowed AsyncConnection (the asyncio API) offers the same API, run on its loop.
    return cast(psycopg.Connection[Any], conn)


class SameDatabase:
    """Checks that callers' connections reach the store's database (once per backend)."""

    def __init__(self, fingerprint: tuple[Any, ...]) -> None:
        self._fingerprint = fingerprint
        #: Connections already checked to reach the store's database (by backend pid).
        self._checked: weakref.WeakKeyDictionary[psycopg.Connection[Any], int] = (
            weakref.WeakKeyDictionary()
        )

    def check(self, conn: psycopg.Connection[Any]) -> None:
        """ValueError, before anything is written, when `conn` reaches another database."""
        pid = conn.info.backend_pid
        if self._checked.get(conn) == pid:
            return
        with conn.cursor(row_factory=tuple_row) as cur:
            found = cur.execute(FINGERPRINT, prepare=False).fetchone()
        if found != self._fingerprint:
            raise ValueError(
                "conn is connected to another database than the event store's "
                f"({conn.info.dbname!r} on {conn.info.host}:{conn.info.port}): nothing was written"
            )
        self._checked[conn] = pid


class Outbox:
    """Appends on callers' connections for one store (its schema, channel and database)."""

    def __init__(self, schema: str, channel: str, origin: str, fingerprint: tuple[Any, ...]):
        self._channel = channel
        # Not the writer's origin: the store's own listener skips only that one.
        self._origin = f"{origin}.outbox"
        self._same_database = SameDatabase(fingerprint)
        #: Per thread: the callers' connections whose open transaction appended (and so
        #: holds the counter row lock until it ends); see `lock_holders`.
        self._holders = threading.local()
        self._query = sql.SQL(
            "SELECT part, status, first_event_id, last_event_id, first_version, "
            "actual_version, created_at FROM {}.append_events_v4("
            "%(stream_uuids)s, %(expected)s, %(counts)s, %(units)s, %(check)s, "
            "%(event_uuids)s::uuid[], %(event_types)s, %(correlation_ids)s, "
            "%(causation_ids)s, %(data)s, %(metadata)s, %(subjects)s::text[], "
            "%(channel)s, %(origin)s)"
        ).format(sql.Identifier(schema))
        self._stored_content = qualify(schema, statement("append/stored_content"))
        self._link = qualify(schema, statement("link/link_events"))

    def append(self, conn: psycopg.Connection[Any], request: AppendRequest) -> list[AppendResult]:
        """Write `request` in `conn`'s current transaction (see the module docstring)."""
        params = group_params([request], self._channel, self._origin)
        own = conn.autocommit and conn.info.transaction_status == _STATUS.IDLE
        committing = False
        try:
            self._same_database.check(conn)
            if own:
                with conn.transaction():
                    outcome = self._run(conn, request, params)
                    if not isinstance(outcome, Written):
                        raise outcome  # rolls the transaction back
                    committing = True
            else:
                conn.execute(f"SAVEPOINT {_SAVEPOINT}", prepare=False)
                try:
                    outcome = self._run(conn, request, params)
                except BaseException:
                    rollback_to_savepoint(conn)
                    raise
                if not isinstance(outcome, Written):
                    rollback_to_savepoint(conn)
                    raise outcome
                if outcome.rows:
                    conn.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}", prepare=False)
                    self._held(conn)
                else:  # a retry of a stored append: nothing to keep, not even the lock
                    rollback_to_savepoint(conn)
        except psycopg.Error as exc:
            raise translate(exc, conn, "append", committing=committing) from None
        return outcome.results

    def link(
        self,
        conn: psycopg.Connection[Any],
        stream_uuid: str,
        expected: int | ExpectedVersion,
        event_ids: list[int],
        found: links.Found | None = None,
    ) -> AppendResult:
        """`link_to_stream` in `conn`'s current transaction, like `append` (the counter row
        lock is taken there, so a link after an append of the same transaction never waits
        for that transaction). links.ArchivedEvents when some of the events are archived and
        not in `found` (the archived events looked up): what it did is rolled back then (the
        counter row lock it took included), so that the caller reads the files, through the
        store's own connections, without holding it, and calls again."""
        params = links.params(stream_uuid, expected, event_ids, self._channel, self._origin, found)
        own = conn.autocommit and conn.info.transaction_status == _STATUS.IDLE
        committing = False

        def run() -> AppendResult:
            with conn.cursor(row_factory=tuple_row) as cur:
                row = cur.execute(self._link, params, prepare=False).fetchone()
            assert row is not None
            return links.outcome(stream_uuid, expected, event_ids, *row)

        try:
            self._same_database.check(conn)
            if own:
                with conn.transaction():
                    result = run()  # a contract error rolls the transaction back
                    committing = True
            else:
                conn.execute(f"SAVEPOINT {_SAVEPOINT}", prepare=False)
                try:
                    result = run()
                except BaseException:
                    rollback_to_savepoint(conn)
                    raise
                conn.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}", prepare=False)
                self._held(conn)
        except psycopg.Error as exc:
            raise translate(exc, conn, "link", committing=committing) from None
        return result

    def _held(self, conn: psycopg.Connection[Any]) -> None:
        held = getattr(self._holders, "conns", None)
        if held is None:
            held = self._holders.conns = weakref.WeakSet()
        held.add(conn)

    def lock_holders(self, but: psycopg.Connection[Any] | None = None) -> list[int]:
        """The backend pids of the connections of this thread (other than `but`) whose
        transaction may still hold the counter row lock: an append with conn= in a
        transaction not yet ended. No round trip (`holds_counter_lock` tells for sure)."""
        held = getattr(self._holders, "conns", None)
        if not held:
            return []
        pids = []
        for conn in list(held):
            if conn.closed or conn.info.transaction_status == _STATUS.IDLE:
                held.discard(conn)  # committed or rolled back: the lock is gone
            elif conn is not but:
                pids.append(conn.info.backend_pid)
        return pids

    def _run(
        self, conn: psycopg.Connection[Any], request: AppendRequest, params: dict[str, Any]
    ) -> Written | EventStoreError:
        with conn.cursor(row_factory=tuple_row) as cur:
            rows = cur.execute(self._query, params, prepare=False).fetchall()
        outcomes = group_outcomes([request], rows)
        return compare_replays(conn, [request], outcomes, self._stored_content)[0]


def rollback_to_savepoint(conn: psycopg.Connection[Any], savepoint: str = _SAVEPOINT) -> None:
    """Undo our part of the caller's transaction (and the locks it took), leaving it usable."""
    if is_gone(conn):
        return
    try:
        conn.execute(f"ROLLBACK TO SAVEPOINT {savepoint}", prepare=False)
        conn.execute(f"RELEASE SAVEPOINT {savepoint}", prepare=False)
    except psycopg.Error:
        pass  # the caller's transaction is failed then: theirs to roll back


def fingerprint(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    """What tells the store's database apart: the cluster's system identifier and the name."""
    found = conn.execute(FINGERPRINT).fetchone()
    if found is None:
        raise StoreUnavailableError("cannot identify the store's database")
    return tuple(found)


def holds_counter_lock(conn: psycopg.Connection[Any], schema: str, pids: list[int]) -> bool:
    """Whether one of the backends `pids` holds a lock taken to write the counter row of
    `schema` (held to the end of its transaction). Behind a transaction pooler the pids
    are the pooler's: no match then."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks WHERE pid = ANY(%s) "
        "AND locktype = 'relation' AND relation = %s::regclass AND granted "
        "AND mode IN ('RowShareLock', 'RowExclusiveLock'))",
        (pids, f'"{schema}".event_counter'),
    ).fetchone()
    return bool(row and row[0])
