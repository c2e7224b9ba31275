"""The queries of the `eventsourcing` integration's recorders, and their connection pool.

The integration (``integrations/eventsourcing.py``) maps the library's recorder calls onto
these: an aggregate is a stream, a notification id is an event_id, and an aggregate's
originator_version is its stream version shifted by the offset kept in the metadata of the
stream's first event (one indexed look-up, :func:`_version_offset`). Tracking records and
snapshots live in the tables ``eventsourcing_tracking`` and ``eventsourcing_snapshots``,
created with the store's schema.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
import psycopg_pool
from psycopg import sql as pgsql

from ..config import Settings
from .pooler import configure_pooled, pooled_kwargs

__all__ = ["VERSION_KEY", "RecorderQueries", "open_pool"]

Conn = psycopg.Connection[Any]

#: The metadata key that keeps an event's originator_version.
VERSION_KEY = "originator_version"


def open_pool(settings: Settings, size: int) -> psycopg_pool.ConnectionPool[Conn]:
    """An autocommit pool on the store's `dsn` (PgBouncer-safe when the store is pooled)."""
    kwargs = pooled_kwargs(settings) if settings.pooled else settings.connect_kwargs()
    return psycopg_pool.ConnectionPool(
        settings.dsn,
        min_size=1,
        max_size=max(size, 2) * 2,
        kwargs={**kwargs, "autocommit": True},
        configure=configure_pooled if settings.pooled else None,
        open=True,
        name="eventstore-actors-eventsourcing",
    )


def _version_offset(schema: str, stream_id: str) -> pgsql.Composed:
    """originator_version - stream_version for a stream (0 when its first version is 1)."""
    return pgsql.SQL(
        "COALESCE((SELECT (convert_from(f.metadata, 'UTF8')::jsonb->>{key})::bigint - 1"
        " FROM {events} f WHERE f.stream_id = {sid} AND f.stream_version = 1), 0)"
    ).format(
        key=pgsql.Literal(VERSION_KEY),
        events=pgsql.SQL("{}.events").format(pgsql.Identifier(schema)),
        sid=pgsql.SQL(stream_id),
    )


def _ordered(select: pgsql.Composed, order_by: pgsql.Composable, desc: bool, limit: bool) -> Any:
    statement = select + pgsql.SQL(" ORDER BY {}{}").format(
        order_by, pgsql.SQL(" DESC" if desc else "")
    )
    return statement + pgsql.SQL(" LIMIT %(limit)s") if limit else statement


class RecorderQueries:
    """The recorders' statements for one schema, composed once."""

    def __init__(self, schema: str) -> None:
        ident = pgsql.Identifier(schema)
        self._stream = pgsql.SQL(
            "SELECT e.stream_version + o.off AS v, e.event_type, e.data"
            " FROM {schema}.streams s"
            " CROSS JOIN LATERAL (SELECT {offset} AS off) o"
            " JOIN {schema}.events e ON e.stream_id = s.stream_id"
            " WHERE s.stream_uuid = %(id)s"
            " AND (%(gt)s::bigint IS NULL OR e.stream_version + o.off > %(gt)s)"
            " AND (%(lte)s::bigint IS NULL OR e.stream_version + o.off <= %(lte)s)"
        ).format(schema=ident, offset=_version_offset(schema, "s.stream_id"))
        self._offsets = pgsql.SQL(
            "SELECT s.stream_uuid, {offset} FROM {schema}.streams s"
            " WHERE s.stream_uuid = ANY(%s) AND s.stream_version > 0"
        ).format(offset=_version_offset(schema, "s.stream_id"), schema=ident)
        self._notifications = pgsql.SQL(
            "SELECT e.event_id, s.stream_uuid, e.stream_version + {offset}, e.event_type, e.data"
            " FROM {schema}.events e JOIN {schema}.streams s ON s.stream_id = e.stream_id"
            " WHERE e.event_id >= %(start)s"
            " AND (%(stop)s::bigint IS NULL OR e.event_id <= %(stop)s)"
        ).format(schema=ident, offset=_version_offset(schema, "e.stream_id"))
        self._max_event_id = pgsql.SQL("SELECT last_event_id FROM {}.event_counter").format(ident)
        tracking = pgsql.SQL("{}.eventsourcing_tracking").format(ident)
        self._track = pgsql.SQL(
            "INSERT INTO {t} AS t (application_name, notification_id) VALUES (%s, %s)"
            " ON CONFLICT (application_name) DO UPDATE SET notification_id ="
            " excluded.notification_id WHERE t.notification_id < excluded.notification_id"
            " RETURNING 1"
        ).format(t=tracking)
        self._max_tracking = pgsql.SQL(
            "SELECT notification_id FROM {t} WHERE application_name = %s"
        ).format(t=tracking)
        snapshots = pgsql.SQL("{}.eventsourcing_snapshots").format(ident)
        self._insert_snapshots = pgsql.SQL(
            "INSERT INTO {t} (originator_id, originator_version, topic, state)"
            " SELECT * FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::bytea[])"
        ).format(t=snapshots)
        self._snapshots = pgsql.SQL(
            "SELECT originator_version, topic, state FROM {t} WHERE originator_id = %(id)s"
            " AND (%(gt)s::bigint IS NULL OR originator_version > %(gt)s)"
            " AND (%(lte)s::bigint IS NULL OR originator_version <= %(lte)s)"
        ).format(t=snapshots)

    # Aggregates ---------------------------------------------------------------------------

    def stream_events(
        self,
        conn: Conn,
        stream_uuid: str,
        gt: int | None,
        lte: int | None,
        desc: bool,
        limit: int | None,
    ) -> list[tuple[int, str, bytes]]:
        """(originator_version, topic, state) of one aggregate's events, in version order."""
        statement = _ordered(
            self._stream, pgsql.Identifier("e", "stream_version"), desc, limit is not None
        )
        params = {"id": stream_uuid, "gt": gt, "lte": lte, "limit": limit}
        rows = conn.execute(statement, params, prepare=True).fetchall()
        return [(v, topic, bytes(state)) for v, topic, state in rows]

    def offsets(self, conn: Conn, keys: list[str]) -> dict[str, int]:
        """The version offsets of those of `keys` that name existing streams."""
        rows = conn.execute(self._offsets, (keys,)).fetchall()
        return {key: int(offset) for key, offset in rows}

    # Notifications ------------------------------------------------------------------------

    def notifications(
        self, conn: Conn, start: int, stop: int | None, limit: int, topics: Sequence[str]
    ) -> list[tuple[int, str, int, str, bytes]]:
        """(event_id, stream_uuid, originator_version, topic, state) from `start` on."""
        statement = self._notifications
        params: dict[str, Any] = {"start": start, "stop": stop, "limit": limit}
        if topics:
            statement += pgsql.SQL(" AND e.event_type = ANY(%(topics)s)")
            params["topics"] = list(topics)
        statement += pgsql.SQL(" ORDER BY e.event_id LIMIT %(limit)s")
        rows = conn.execute(statement, params, prepare=True).fetchall()
        return [(i, s, v, t, bytes(state)) for i, s, v, t, state in rows]

    def max_event_id(self, conn: Conn) -> int | None:
        row = conn.execute(self._max_event_id, prepare=True).fetchone()
        return int(row[0]) if row and row[0] else None

    # Tracking -----------------------------------------------------------------------------

    def track(self, conn: Conn, application_name: str, notification_id: int) -> bool:
        """Record a tracking position; False when this one or a later one is recorded."""
        params = (application_name, notification_id)
        return conn.execute(self._track, params, prepare=True).fetchone() is not None

    def max_tracking(self, conn: Conn, application_name: str) -> int | None:
        row = conn.execute(self._max_tracking, (application_name,), prepare=True).fetchone()
        return None if row is None else int(row[0])

    # Snapshots ----------------------------------------------------------------------------

    def insert_snapshots(
        self,
        conn: Conn,
        ids: list[str],
        versions: list[int],
        topics: list[str],
        states: list[bytes],
    ) -> None:
        conn.execute(self._insert_snapshots, (ids, versions, topics, states))

    def snapshots(
        self,
        conn: Conn,
        originator_id: str,
        gt: int | None,
        lte: int | None,
        desc: bool,
        limit: int | None,
    ) -> list[tuple[int, str, bytes]]:
        statement = _ordered(
            self._snapshots, pgsql.Identifier("originator_version"), desc, limit is not None
        )
        params = {"id": originator_id, "gt": gt, "lte": lte, "limit": limit}
        rows = conn.execute(statement, params, prepare=True).fetchall()
        return [(v, topic, bytes(state)) for v, topic, state in rows]


def listen(conn: Conn, channel: str) -> None:
    """Start listening for the store's commit notifications on a session connection."""
    conn.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(channel)))


def unlisten(conn: Conn) -> None:
    conn.execute("UNLISTEN *")
