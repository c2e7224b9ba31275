"""The queries of the `eventsourcing` integration's recorders, and their connection pool.

The integration (``integrations/eventsourcing.py``) maps the library's recorder calls onto
these: an aggregate is a stream, a notification id is an event_id, and an aggregate's
originator_version is its stream version shifted by the offset kept in the metadata of the
stream's lowest stored event (one indexed look-up, :func:`_version_offset`). Tracking records
and snapshots live in the tables ``eventsourcing_tracking`` and ``eventsourcing_snapshots``,
created with the store's schema.

Events come back as stored: `data` with its `subject` and whether that subject is forgotten
(the integration decrypts, or presents FORGOTTEN). Notifications are the store's own `$all`
read (`reader.read_all`: retention, archive and forgetting as for every other read); an
aggregate's events are one statement of their own, which also reads the last archived event_id
in the same snapshot: when something is archived and the answer may lack archived events (a
gap at the start, or nothing), the store's stream read fills them in from the archive
(`_archived_stream`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import psycopg
import psycopg_pool
from psycopg import sql as pgsql

from ..config import Settings
from . import reader
from .pooler import configure_pooled, pooled_kwargs

__all__ = ["VERSION_KEY", "EventRow", "NotificationRow", "RecorderQueries", "open_pool"]

Conn = psycopg.Connection[Any]

#: The metadata key that keeps an event's originator_version.
VERSION_KEY = "originator_version"

#: An aggregate's event: originator_version, topic, data as stored, subject (None: data in
#: clear; else encrypted), what the row's snapshot says of that subject (a
#: lifecycle.encryption.Flag: forgotten or not, or the forget generation of the store's reads).
EventRow = tuple[int, str, bytes, str | None, bool | int]
#: A notification: event_id, stream_uuid, then an `EventRow`'s columns.
NotificationRow = tuple[int, str, int, str, bytes, str | None, bool | int]

#: An event's subject and whether it is forgotten, read in the same snapshot as the event.
_SUBJECT = (
    "e.subject, CASE WHEN e.subject IS NULL THEN false ELSE EXISTS (SELECT 1 FROM"
    " {schema}.forgotten_subjects f WHERE f.subject = e.subject) END"
)
#: Rows of the store's reads (storage/reader.Row): their columns used here.
_ID, _STREAM, _VERSION, _TYPE, _DATA, _META, _NUMBER, _SUBJ, _GONE = 0, 1, 2, 3, 6, 7, 10, 11, 12
#: Rows per page when the archive fills an aggregate's events in.
_PAGE = 1000


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
    """originator_version - stream_version for a stream (0 when its first version is 1), from
    its lowest stored event (version 1, unless retention or the archive removed it)."""
    return pgsql.SQL(
        "COALESCE((SELECT (convert_from(f.metadata, 'UTF8')::jsonb->>{key})::bigint"
        " - f.stream_version FROM {events} f WHERE f.stream_id = {sid}"
        " ORDER BY f.stream_version LIMIT 1), 0)"
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


#: Whether event `e` of stream `s` is readable under the stream's retention (schema v4; the
#: same condition as the store's own reads, sql/read/all_events.sql).
_READABLE = (
    "e.stream_version >= greatest(s.first_version,"
    " s.stream_version - coalesce(s.max_count, s.stream_version) + 1)"
    " AND (s.max_age IS NULL OR e.created_at >= now() - s.max_age)"
)


class RecorderQueries:
    """The recorders' statements for one schema, composed once."""

    def __init__(self, schema: str) -> None:
        ident = pgsql.Identifier(schema)
        # The last two columns: the event's stream version, and the stream's lowest readable
        # one (an answer that starts above both may lack archived events).
        self._stream = pgsql.SQL(
            "SELECT e.stream_version + o.off AS v, e.event_type, e.data, "
            + _SUBJECT
            + " AS forgotten, e.stream_version, greatest(s.first_version,"
            " s.stream_version - coalesce(s.max_count, s.stream_version) + 1) AS lowest"
            " FROM {schema}.streams s"
            " CROSS JOIN LATERAL (SELECT {offset} AS off) o"
            " JOIN {schema}.events e ON e.stream_id = s.stream_id"
            " WHERE s.stream_uuid = %(id)s"
            f" AND {_READABLE}"
            " AND (%(gt)s::bigint IS NULL OR e.stream_version + o.off > %(gt)s)"
            " AND (%(lte)s::bigint IS NULL OR e.stream_version + o.off <= %(lte)s)"
        ).format(schema=ident, offset=_version_offset(schema, "s.stream_id"))
        # The events read, after the last event_id archived (0: none) from the same snapshot:
        # one row of NULLs and that when there are no events.
        self._upto = pgsql.SQL(
            "SELECT x.*, a.upto FROM (SELECT coalesce(max(last_event_id), 0) AS upto"
            " FROM {schema}.archive_files) a LEFT JOIN LATERAL ("
        ).format(schema=ident)
        # The last column: whether any event of the stream is stored (else it is archived).
        self._offsets = pgsql.SQL(
            "SELECT s.stream_uuid, {offset}, EXISTS (SELECT 1 FROM {schema}.events f"
            " WHERE f.stream_id = s.stream_id) FROM {schema}.streams s"
            " WHERE s.stream_uuid = ANY(%s) AND s.stream_version > 0"
        ).format(offset=_version_offset(schema, "s.stream_id"), schema=ident)
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
    ) -> list[EventRow]:
        """One aggregate's events, in version order (descending when `desc`), archived ones
        included."""
        inner = _ordered(
            self._stream, pgsql.Identifier("e", "stream_version"), desc, limit is not None
        )
        statement = (
            self._upto
            + inner
            + pgsql.SQL(") x ON true ORDER BY x.stream_version" + (" DESC" if desc else ""))
        )
        params = {"id": stream_uuid, "gt": gt, "lte": lte, "limit": limit}
        found = conn.execute(statement, params, prepare=True).fetchall()
        rows = [row[:7] for row in found if row[0] is not None]
        if not found[0][7] or _whole(rows, gt, desc, limit):
            return [(v, t, bytes(d), subject, gone) for v, t, d, subject, gone, _, _ in rows]
        offset = rows[0][0] - rows[0][5] if rows else _first_offset(conn, stream_uuid)
        if offset is None:
            return []
        return _archived_stream(conn, stream_uuid, offset, gt, lte, desc, limit)

    def offsets(self, conn: Conn, keys: list[str]) -> dict[str, int]:
        """The version offsets of those of `keys` that name existing streams (of a stream
        whose events are all archived, read from the files)."""
        rows = conn.execute(self._offsets, (keys,)).fetchall()
        return {
            key: int(offset) if stored else _first_offset(conn, key) or 0
            for key, offset, stored in rows
        }

    # Notifications ------------------------------------------------------------------------

    def notifications(
        self, conn: Conn, start: int, stop: int | None, limit: int, topics: Sequence[str]
    ) -> list[NotificationRow]:
        """Up to `limit` events of `$all` with start <= event_id <= stop, of `topics` (all
        when empty): the store's own read, archived ranges included. An event's
        originator_version is the one in its metadata, or for an event written through the
        EventStore API (none there) its stream version shifted by its stream's offset."""
        rows: list[Any] = reader.read_all(
            conn, start, limit, stop, event_types=list(topics) or None
        )
        versions = [_meta_version(r[_META]) for r in rows]
        missing = sorted({r[_STREAM] for r, v in zip(rows, versions, strict=True) if v is None})
        offsets = self.offsets(conn, missing) if missing else {}
        return [
            (
                r[_ID],
                r[_STREAM],
                r[_VERSION] + offsets.get(r[_STREAM], 0) if v is None else v,
                r[_TYPE],
                bytes(r[_DATA]),
                r[_SUBJ],
                r[_GONE],
            )
            for r, v in zip(rows, versions, strict=True)
        ]

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
    ) -> list[EventRow]:
        """One aggregate's snapshots, like `stream_events` (the library writes no subjects)."""
        statement = _ordered(
            self._snapshots, pgsql.Identifier("originator_version"), desc, limit is not None
        )
        params = {"id": originator_id, "gt": gt, "lte": lte, "limit": limit}
        rows = conn.execute(statement, params, prepare=True).fetchall()
        return [(v, topic, bytes(state), None, False) for v, topic, state in rows]


def _whole(rows: list[Any], gt: int | None, desc: bool, limit: int | None) -> bool:
    """Whether an aggregate's events read from PostgreSQL cannot lack archived ones: archived
    events are a stream's lowest versions, so the answer must reach down to the lowest
    version asked for (or be full, read downwards)."""
    if not rows:
        return False
    if desc and limit is not None and len(rows) >= limit:
        return True
    v, _, _, _, _, version, lowest = rows[-1] if desc else rows[0]
    offset = v - version
    return bool(version <= max(lowest, 1 if gt is None else gt + 1 - offset))


def _meta_version(meta: Any) -> int | None:
    """The originator_version kept in an event's metadata, or None."""
    if meta is None:
        return None
    text = bytes(meta)
    if text.startswith(_VERSION_PREFIX) and text.endswith(b"}"):
        digits = text[len(_VERSION_PREFIX) : -1]
        if digits.removeprefix(b"-").isdigit():  # the usual metadata, parsed fast
            return int(digits)
    try:
        value = json.loads(text)
    except ValueError:
        return None
    version = value.get(VERSION_KEY) if isinstance(value, dict) else None
    return version if type(version) is int else None


_VERSION_PREFIX = b'{"%s":' % VERSION_KEY.encode()


def _first_offset(conn: Conn, stream_uuid: str) -> int | None:
    """The version offset of a stream read from its first readable event, which may be
    archived; None when it has none."""
    rows: list[Any] = reader.read_stream(conn, stream_uuid, 1, 1)
    if not rows:
        return None
    version = _meta_version(rows[0][_META]) if rows[0][_STREAM] == stream_uuid else None
    return 0 if version is None else version - rows[0][_VERSION]


def _archived_stream(
    conn: Conn,
    stream_uuid: str,
    offset: int,
    gt: int | None,
    lte: int | None,
    desc: bool,
    limit: int | None,
) -> list[EventRow]:
    """An aggregate's events through the store's stream read (archived ones from the
    files), page by page: its own events with versions in the range, as `stream_events`."""
    low = 1 if gt is None else max(1, gt + 1 - offset)
    high = reader.MAX_POSITION if lte is None else lte - offset
    out: list[EventRow] = []
    start = high if desc else low
    while low <= high and (limit is None or len(out) < limit):
        want = _PAGE if limit is None else min(_PAGE, limit - len(out))
        rows: list[Any] = reader.read_stream(conn, stream_uuid, start, want, backward=desc)
        for r in rows:
            number = r[_NUMBER]
            if low <= number <= high and r[_STREAM] == stream_uuid and r[_VERSION] == number:
                out.append((number + offset, r[_TYPE], bytes(r[_DATA]), r[_SUBJ], r[_GONE]))
        if len(rows) < want:
            break
        if desc:
            high = rows[-1][_NUMBER] - 1
            start = high
        else:
            low = rows[-1][_NUMBER] + 1
            start = low
    return out if limit is None else out[:limit]


def listen(conn: Conn, channel: str) -> None:
    """Start listening for the store's commit notifications on a session connection."""
    conn.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(channel)))


def unlisten(conn: Conn) -> None:
    conn.execute("UNLISTEN *")
