"""Subscription rows: the last acked position of each named subscription.

Besides the store's own writes (on a subscription's dedicated connection), `InTransaction`
writes a checkpoint on the caller's connection, in its current transaction (exactly-once
projections): schema-qualified SQL, nothing prepared, a plain tuple row factory and a
savepoint, so the caller's session is left as it was and a failure leaves its transaction
usable. The store never commits or rolls back the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from ..errors import CheckpointConflictError
from ..sql import statement
from .errors import translate
from .outbox import SameDatabase, check_connection, rollback_to_savepoint

__all__ = [
    "ALL_STREAMS",
    "InTransaction",
    "advance",
    "advance_fenced",
    "advance_many",
    "advance_unheld",
    "claim",
    "delete",
    "load_or_create",
]

#: The stream_uuid under which all-streams subscriptions are stored.
ALL_STREAMS = "$all"

Conn = psycopg.Connection[Any]

_STATUS = psycopg.pq.TransactionStatus
_SAVEPOINT = "eventstore_actors_ack"
#: The subscriptions' advisory lock (sql/subscriptions/lock.sql), for one transaction, and
#: how long to wait for it (a stopping subscription lets go of it within a round trip).
_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%(key)s, 0))"
_UNHELD_WAIT = "SET LOCAL lock_timeout = '1s'"


def load_or_create(conn: Conn, stream_uuid: str, name: str, start_from: int) -> int:
    """The stored checkpoint; a new subscription starts at `start_from`."""
    key = {"stream_uuid": stream_uuid, "subscription_name": name, "last_seen": start_from}
    with conn.pipeline():
        conn.execute(statement("subscriptions/create"), key)
        cur = conn.execute(statement("subscriptions/read"), key)
    row = cur.fetchone()
    return int(row[0]) if row else start_from


def read(conn: Conn, stream_uuid: str, name: str) -> int | None:
    """The stored checkpoint of the subscription (None: it has no row)."""
    key = {"stream_uuid": stream_uuid, "subscription_name": name}
    row = conn.execute(statement("subscriptions/read"), key).fetchone()
    return None if row is None else int(row[0])


def create(conn: Conn, stream_uuid: str, name: str, last_seen: int) -> None:
    """Create the subscription's row at `last_seen`, unless it has one."""
    key = {"stream_uuid": stream_uuid, "subscription_name": name, "last_seen": last_seen}
    conn.execute(statement("subscriptions/create"), key)


def advance(conn: Conn, stream_uuid: str, name: str, position: int) -> None:
    """Move the checkpoint forward to `position` (never backwards)."""
    conn.execute(
        statement("subscriptions/ack"),
        {"stream_uuid": stream_uuid, "subscription_name": name, "last_seen": position},
    )


def advance_many(conn: Conn, rows: Sequence[tuple[str, str, int]]) -> None:
    """Move several subscriptions' checkpoints forward in one statement: `rows` of
    (stream_uuid, subscription_name, position), each never moved backwards."""
    conn.execute(
        statement("subscriptions/ack_many"),
        {
            "stream_uuids": [r[0] for r in rows],
            "subscription_names": [r[1] for r in rows],
            "positions": [r[2] for r in rows],
        },
    )


def advance_fenced(
    conn: Conn, stream_uuid: str, name: str, position: int, fence: int
) -> bool | None:
    """Move the checkpoint of a subscription acked in its callers' transactions forward to
    `position`, iff the stored checkpoint has reached `fence` (their acks that the
    subscription saw are committed), never waiting on a row an open transaction holds.

    True: stored (or it was there already); None: the row is held by an open transaction
    (try again later) or gone; False: it is behind `fence` (a caller's transaction rolled
    back: the events it had acked come again on the next start, so nothing may pass them).
    """
    params = {
        "stream_uuid": stream_uuid,
        "subscription_name": name,
        "last_seen": position,
        "fence": fence,
    }
    row = conn.execute(statement("subscriptions/ack_fenced"), params).fetchone()
    if row is None or row[0] is None:
        return None
    return int(row[0]) >= fence


def advance_unheld(conn: Conn, stream_uuid: str, name: str, position: int, key: str) -> bool:
    """Move the checkpoint forward to `position` iff nobody holds the subscription's lock
    (`key`, see `storage.locks.lock_key`; taken for this transaction only, waiting up
    to `_UNHELD_WAIT` for a holder that is letting go). False: a subscriber holds it (a later
    run of the name), and nothing was written."""
    try:
        with conn.transaction():
            conn.execute(_UNHELD_WAIT)
            conn.execute(_LOCK, {"key": key})
            advance(conn, stream_uuid, name, position)
    except psycopg.errors.LockNotAvailable:
        return False
    return True


def claim(conn: Conn, stream_uuid: str, name: str, holder: str, stall_after: float) -> None:
    """Record which store instance holds the subscription now (see `subscriptions.info`),
    with its `stall_after` and a first vouch (see `subscriptions.health`)."""
    conn.execute(
        statement("subscriptions/claim"),
        {
            "stream_uuid": stream_uuid,
            "subscription_name": name,
            "holder": holder,
            "stall_after": stall_after,
        },
    )


def delete(conn: Conn, stream_uuid: str, name: str) -> bool:
    cur = conn.execute(
        statement("subscriptions/delete"), {"stream_uuid": stream_uuid, "subscription_name": name}
    )
    return cur.rowcount > 0


class InTransaction:
    """Checkpoint writes in callers' transactions, for one store (its schema and database)."""

    def __init__(self, schema: str, fingerprint: tuple[Any, ...]) -> None:
        self._same_database = SameDatabase(fingerprint)
        # Compare and set: the stored checkpoint must not have passed `floor` (the position
        # the caller's batch began after, or its own last ack): if it has, another holder of
        # the subscription acked these events (a take-over), and writing would apply them twice.
        self._query = sql.SQL(
            "UPDATE {}.subscriptions SET last_seen = %(last_seen)s, last_ack_at = now() "
            "WHERE stream_uuid = %(stream_uuid)s AND subscription_name = %(subscription_name)s "
            "AND last_seen < %(last_seen)s AND last_seen <= %(floor)s"
        ).format(sql.Identifier(schema))
        self._stored = sql.SQL(
            "SELECT last_seen FROM {}.subscriptions "
            "WHERE stream_uuid = %(stream_uuid)s AND subscription_name = %(subscription_name)s"
        ).format(sql.Identifier(schema))
        self._forget_parked = sql.SQL(
            "DELETE FROM {}.parked_events "
            "WHERE stream_uuid = %(stream_uuid)s AND subscription_name = %(subscription_name)s "
            "AND event_id = %(event_id)s"
        ).format(sql.Identifier(schema))

    @staticmethod
    def check(conn: Any) -> Conn:
        """TypeError/ValueError unless `conn` can take the write now (nothing is written)."""
        return check_connection(conn)

    def advance(self, conn: Conn, stream_uuid: str, name: str, position: int, floor: int) -> None:
        """Move the checkpoint to `position` in `conn`'s current transaction (an autocommit
        connection outside a transaction block: in a transaction of its own, committed).

        CheckpointConflictError, with nothing written, when the stored checkpoint is already
        at `position` or above `floor`: those events were acked already (by this subscription
        in an earlier transaction, or by another holder after a take-over).
        """
        params = {
            "stream_uuid": stream_uuid,
            "subscription_name": name,
            "last_seen": position,
            "floor": floor,
        }
        self._run(conn, self._write, params)

    def forget_replayed(
        self, conn: Conn, stream_uuid: str, name: str, position: int, event_id: int
    ) -> None:
        """The ack of a replayed parked event (at `position`, at or below the checkpoint) in
        `conn`'s current transaction: its row leaves the parked list iff the caller commits;
        the checkpoint stays where it is.

        CheckpointConflictError, with nothing written, when the row is gone already: another
        holder of the subscription replayed and acknowledged the event.
        """
        params = {
            "stream_uuid": stream_uuid,
            "subscription_name": name,
            "last_seen": position,
            "event_id": event_id,
        }
        self._run(conn, self._forget, params)

    def _run(
        self,
        conn: Conn,
        work: Callable[[psycopg.Cursor[tuple[Any, ...]], dict[str, Any]], None],
        params: dict[str, Any],
    ) -> None:
        try:
            self._same_database.check(conn)
            if conn.autocommit and conn.info.transaction_status == _STATUS.IDLE:
                with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
                    work(cur, params)
                return
            conn.execute(f"SAVEPOINT {_SAVEPOINT}", prepare=False)
            try:
                with conn.cursor(row_factory=tuple_row) as cur:
                    work(cur, params)
            except BaseException:
                rollback_to_savepoint(conn, _SAVEPOINT)
                raise
            conn.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}", prepare=False)
        except psycopg.Error as exc:
            raise translate(exc, conn, "ack") from None

    def _write(self, cur: psycopg.Cursor[tuple[Any, ...]], params: dict[str, Any]) -> None:
        cur.execute(self._query, params, prepare=False)
        if cur.rowcount > 0:
            return
        row = cur.execute(self._stored, params, prepare=False).fetchone()
        if row is not None:  # (no row: the subscription was deleted; nothing to move)
            stored = int(row[0])
            raise CheckpointConflictError(
                params["stream_uuid"],
                params["subscription_name"],
                stored,
                params["floor"],
                position=params["last_seen"],
            )

    def _forget(self, cur: psycopg.Cursor[tuple[Any, ...]], params: dict[str, Any]) -> None:
        cur.execute(self._forget_parked, params, prepare=False)
        if cur.rowcount > 0:
            return
        row = cur.execute(self._stored, params, prepare=False).fetchone()
        if row is not None:  # (no row: the subscription was deleted; nothing to remove)
            stream, name, event_id = (
                params["stream_uuid"],
                params["subscription_name"],
                params["event_id"],
            )
            raise CheckpointConflictError(
                stream,
                name,
                int(row[0]),
                params["last_seen"],
                position=params["last_seen"],
                detail=(
                    f"the ack of the replayed parked event {event_id} (position "
                    f"{params['last_seen']}) is refused: it is no longer parked, another "
                    "holder of the subscription replayed and acknowledged it"
                ),
            )
