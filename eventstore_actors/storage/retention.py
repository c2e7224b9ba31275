"""Retention in the database: per-stream limits, truncation, and the scavenger's batches.

A stream's events are hidden at once and deleted later. Hidden means below the stream's
first readable position: `streams.first_version` (moved by truncate_stream, and to where the
old limits had got when the limits change), the last `max_count` positions, and events older
than `max_age`. Every read applies these rules in its own statement, on the stream row it
reads anyway (sql/read/*.sql), so the effect is immediate and costs no round trip. The
scavenger (lifecycle/scavenger.py) then deletes the hidden rows in bounded batches, each its
own short transaction holding row locks only, with what a hard delete removes with them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from functools import cache
from typing import Any

import psycopg

from ..errors import StreamNotFoundError
from ..sql import statement
from . import archive
from .reader import first_version_sql

__all__ = [
    "PurgeResult",
    "candidates",
    "purge",
    "set_limits",
    "settings",
    "truncate",
]

Conn = psycopg.Connection[Any]


@cache
def _query(name: str) -> str:
    return statement(f"retention/{name}").replace("{first_version}", first_version_sql())


#: first(conn, stream_uuid, first) -> the stream's first readable position counting its
#: archived events, given `first`, retention/first_version.sql's (which sees PostgreSQL's rows
#: only): `Overlay.first_readable`.
ArchivedFirst = Callable[[Conn, str, int], int]


def set_limits(
    conn: Conn,
    stream_uuid: str,
    max_count: int | None,
    max_age: timedelta | None,
    archived_first: ArchivedFirst | None = None,
) -> None:
    """Set a stream's limits (arguments already checked); StreamNotFoundError if it has no
    events. What the old limits hid stays hidden, and nothing else: with `archived_first`
    (a store with archives), the first position they left readable counts the stream's own
    archived events when it had a max_age (their age is in the files, not in the events
    table); it runs holding the stream's row lock, and when it raises nothing changed."""
    params = {"stream_uuid": stream_uuid, "max_count": max_count, "max_age": max_age}
    if archived_first is None:
        if conn.execute(_query("set_limits"), params).fetchone() is None:
            raise StreamNotFoundError(stream_uuid)
        return
    with conn.transaction():
        row = conn.execute(_query("lock_stream"), {"stream_uuid": stream_uuid}).fetchone()
        if row is None or int(row[1]) == 0:
            raise StreamNotFoundError(stream_uuid)
        first = int(row[2])
        if row[3] is not None:
            first = archived_first(conn, stream_uuid, first)
        conn.execute(
            statement("retention/set_limits_at"), {**params, "stream_id": row[0], "first": first}
        )


def truncate(
    conn: Conn,
    stream_uuid: str,
    before_version: int,
    archived: Callable[[Conn, int, list[int]], int] | None = None,
    archived_first: ArchivedFirst | None = None,
) -> int:
    """Hide every position of the stream below `before_version` (>= 1, checked): how many
    readable positions that hid. StreamNotFoundError, or ValueError when `before_version` is
    above the stream's version + 1: nothing changed then.

    One transaction holding the stream's row lock (appends to that stream wait for it) while
    it counts what it hides: the readable positions in the events and links tables, plus
    `archived(conn, first, elsewhere)`, the archive's part (own events and links, counted
    from the files), given the first readable position before (counting the archived events
    of a stream with a max_age: `archived_first`) and the event_ids of the links it hides
    whose events are not in the events table. Both run before the change: when one raises
    (a file that cannot be read), nothing changed."""
    with conn.transaction():
        row = conn.execute(_query("lock_stream"), {"stream_uuid": stream_uuid}).fetchone()
        if row is None or int(row[1]) == 0:
            raise StreamNotFoundError(stream_uuid)
        stream_id, version, first = int(row[0]), int(row[1]), int(row[2])
        if archived_first is not None and row[3] is not None:
            first = archived_first(conn, stream_uuid, first)
        if before_version > version + 1:
            raise ValueError(
                f"before_version {before_version} is beyond stream {stream_uuid!r} (version "
                f"{version}: at most {version + 1}, which hides every event); nothing changed"
            )
        if before_version <= first:
            return 0
        span = {"stream_id": stream_id, "low": first, "high": before_version}
        found = conn.execute(_query("visible_count"), span).fetchone()
        hidden = int(found[0]) if found else 0  # type: ignore[call-overload]
        if archived is not None:
            links = conn.execute(_query("archived_links"), span).fetchall()
            elsewhere = [int(r[0]) for r in links]  # type: ignore[call-overload]
            hidden += archived(conn, first, elsewhere)
        conn.execute(_query("truncate"), {"stream_id": stream_id, "before": before_version})
    return hidden


def candidates(conn: Conn, after: int, limit: int) -> list[tuple[int, int]]:
    """(stream_id, first readable position) of up to `limit` streams with retention whose
    stream_id is above `after`, in stream_id order."""
    rows = conn.execute(_query("candidates"), {"after": after, "limit": limit}).fetchall()
    return [(int(r[0]), int(r[1])) for r in rows]  # type: ignore[call-overload]


#: (rows deleted, whether the scavenger's lock was free, the next batch's `low`).
PurgeResult = tuple[int, bool, int]


def purge(
    conn: Conn, lock: str, stream_id: int, bound: int, batch: int, low: int = 1
) -> PurgeResult:
    """One batch: the stream's hidden rows (own events and links, position < `bound`) at the
    `batch` positions from its lowest one stored at or above `low`, deleted in one short
    transaction of two statements with what a hard delete removes with them. `low` is a
    position below which nothing is stored any more (1 when unknown): the probes start there,
    so a long purge never walks the dead index entries of the batches before it. Returns
    (rows deleted, whether the scavenger's lock `lock` was free: False means another process
    scavenges and nothing was done, the `low` of the next batch: `bound` when nothing hidden
    is left)."""
    params = {"key": lock, "stream_id": stream_id, "bound": bound, "batch": batch, "low": low}
    with conn.transaction():
        conn.execute(statement("retention/begin_purge"))
        row = conn.execute(statement("retention/purge"), params).fetchone()
    if row is None or not row[0]:
        return 0, False, low
    start = None if row[1] is None else int(row[1])
    if start is None or start >= bound:
        return 0, True, bound
    return int(row[2]), True, min(bound, start + batch)


def settings(
    conn: Conn, limit: int
) -> tuple[int, list[tuple[str, int, int | None, timedelta | None]]]:
    """(number of streams with retention, up to `limit` of them as (stream_uuid, first
    readable position, max_count, max_age)), for the status report."""
    rows = conn.execute(_query("settings"), {"limit": limit}).fetchall()
    total = int(rows[0][0]) if rows else 0  # type: ignore[call-overload]
    found = [
        (str(r[1]), int(r[2]), None if r[3] is None else int(r[3]), r[4])  # type: ignore[call-overload]
        for r in rows
        if r[1] is not None
    ]
    hook = archive.overlay()
    if hook is not None:  # a max_age's part counting the archived events, as stream_info's
        found = [
            (s, f if age is None else hook.first_readable(conn, s, f), count, age)
            for s, f, count, age in found
        ]
    return total, found
