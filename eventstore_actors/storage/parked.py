"""The parked list: events a subscription gave up on (nack "park", or retries exhausted).

Rows are written on the subscription's own connection before its checkpoint may pass them,
so a parked event is never lost; `replay` marks rows to deliver again (`replay_parked`), and
the subscription holding the name deletes each once it is acked again.
"""

from __future__ import annotations

from typing import Any

import psycopg

from ..sql import statement
from . import reader

__all__ = [
    "ParkedRow",
    "discard",
    "forget",
    "mark_replay",
    "marked",
    "park",
    "rows",
    "unmark",
]

Conn = psycopg.Connection[Any]
#: (reader.Row's first 11 columns, reason, retries, parked_at, replay, subject, forgotten)
ParkedRow = tuple[Any, ...]

_PARK = """
INSERT INTO parked_events AS p (stream_uuid, subscription_name, event_id, reason, retries)
VALUES (%(stream_uuid)s, %(name)s, %(event_id)s, %(reason)s, %(retries)s)
ON CONFLICT (stream_uuid, subscription_name, event_id) DO UPDATE
SET reason = EXCLUDED.reason, retries = EXCLUDED.retries, parked_at = now(), replay = false
"""

_ROWS = """
SELECT e.event_id, s.stream_uuid, e.stream_version, e.event_type, e.correlation_id,
       e.causation_id, e.data, e.metadata, e.created_at, e.event_uuid,
       COALESCE(%(number)s::bigint, e.event_id), p.reason, p.retries, p.parked_at, p.replay,
       e.subject, CASE WHEN e.subject IS NULL THEN false
                       ELSE EXISTS (SELECT 1 FROM forgotten_subjects AS f
                                    WHERE f.subject = e.subject) END
FROM parked_events AS p
JOIN events AS e ON e.event_id = p.event_id
JOIN streams AS s ON s.stream_id = e.stream_id
WHERE p.stream_uuid = %(stream_uuid)s AND p.subscription_name = %(name)s
  AND (p.replay OR NOT %(replay_only)s)
ORDER BY p.event_id
"""


def park(
    conn: Conn, stream_uuid: str, name: str, event_id: int, reason: str | None, retries: int
) -> None:
    conn.execute(
        _PARK,
        {
            "stream_uuid": stream_uuid,
            "name": name,
            "event_id": event_id,
            "reason": reason,
            "retries": retries,
        },
    )


def rows(
    conn: Conn, stream_uuid: str, name: str, *, replay_only: bool = False
) -> list[tuple[reader.Row, str | None, int, Any]]:
    """The parked events in event_id order: (row, reason, retries, parked_at). A stream
    subscription's rows carry event_number = the event's own stream_version when it is an
    event of that stream (links: its event_id; only its order matters)."""
    cur = conn.cursor(binary=True)
    cur.execute(
        _ROWS,
        {"stream_uuid": stream_uuid, "name": name, "number": None, "replay_only": replay_only},
    )
    found: list[tuple[reader.Row, str | None, int, Any]] = []
    for r in cur.fetchall():
        row = (*r[:11], r[15], r[16])
        if stream_uuid != "$all" and r[1] == stream_uuid:
            row = (*r[:10], r[2], r[15], r[16])
        found.append((row, r[11], int(r[12]), r[13]))  # type: ignore[arg-type]
    return found


_MARKED = """
SELECT DISTINCT p.stream_uuid, p.subscription_name
FROM unnest(%(streams)s::text[], %(names)s::text[]) AS w (stream_uuid, subscription_name)
JOIN parked_events AS p
  ON p.stream_uuid = w.stream_uuid AND p.subscription_name = w.subscription_name
WHERE p.replay AND EXISTS (SELECT 1 FROM events AS e WHERE e.event_id = p.event_id)
"""


def marked(conn: Conn, subscriptions: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of `subscriptions` ((stream_uuid, name) pairs) have parked events marked for
    replay (still in the events table: `rows` finds them): one statement for all of them (a
    shared lock connection's probe)."""
    if not subscriptions:
        return set()
    streams, names = [s for s, _ in subscriptions], [n for _, n in subscriptions]
    cur = conn.execute(_MARKED, {"streams": streams, "names": names})
    return {(str(r[0]), str(r[1])) for r in cur.fetchall()}


def mark_replay(conn: Conn, stream_uuid: str, name: str) -> int:
    """Mark every parked event of the subscription for replay; how many. Only those still in
    the events table, as `rows` lists them: an archived parked event is not replayed (nor
    counted, nor left marked for a replay that would never find it)."""
    cur = conn.execute(
        "UPDATE parked_events AS p SET replay = true"
        " WHERE p.stream_uuid = %(stream_uuid)s AND p.subscription_name = %(name)s"
        " AND EXISTS (SELECT 1 FROM events AS e WHERE e.event_id = p.event_id)",
        {"stream_uuid": stream_uuid, "name": name},
    )
    return cur.rowcount


def unmark(conn: Conn, stream_uuid: str, name: str, event_id: int) -> None:
    conn.execute(
        "UPDATE parked_events SET replay = false WHERE stream_uuid = %(stream_uuid)s"
        " AND subscription_name = %(name)s AND event_id = %(event_id)s",
        {"stream_uuid": stream_uuid, "name": name, "event_id": event_id},
    )


def forget(conn: Conn, stream_uuid: str, name: str, event_id: int) -> None:
    """A replayed event was acked (or skipped): off the list."""
    conn.execute(
        "DELETE FROM parked_events WHERE stream_uuid = %(stream_uuid)s"
        " AND subscription_name = %(name)s AND event_id = %(event_id)s",
        {"stream_uuid": stream_uuid, "name": name, "event_id": event_id},
    )


def discard(conn: Conn, stream_uuid: str, name: str, event_ids: list[int] | None) -> int:
    """Take parked events off the list for good (all, or those of `event_ids`); how many
    of them `rows` listed (an archived one goes uncounted)."""
    row = conn.execute(
        statement("subscriptions/discard_parked"),
        {"stream_uuid": stream_uuid, "name": name, "event_ids": event_ids},
    ).fetchone()
    return int(row[0]) if row is not None else 0
