"""Reading streams and the all-streams log, and turning rows into RecordedEvents."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import psycopg

from ..events import RecordedEvent
from ..serialization import Serializer
from ..sql import statement

__all__ = [
    "MAX_POSITION",
    "Row",
    "decode",
    "last_event_id",
    "read_all",
    "read_stream",
    "stream_version",
]

#: A stored event before deserialization, as plain tuple (reads) or StoredRow (appends):
#: event_id, stream_uuid, stream_version, event_type, correlation_id, causation_id, data,
#: metadata, created_at, event_uuid, event_number (the position in what was read: the
#: stream's for stream reads, event_id for all-streams reads). Reads skip building a
#: NamedTuple per row: it is the hot path.
Row = tuple[
    int, str, int, str, str | None, str | None, bytes, bytes | None, datetime, uuid.UUID, int
]

#: Larger than any event_id or stream_version.
MAX_POSITION = 2**63 - 1

Conn = psycopg.Connection[Any]


def read_stream(conn: Conn, stream_uuid: str, start_version: int, count: int) -> list[Row]:
    """Up to `count` events of one stream from `start_version` on (empty: none there)."""
    cur = conn.cursor(binary=True)
    cur.execute(
        statement("read/stream_events"),
        {"stream_uuid": stream_uuid, "start_version": start_version, "count": count},
    )
    return cur.fetchall()  # type: ignore[return-value]  # the columns of Row


def read_all(
    conn: Conn, start_event_id: int, count: int, end_event_id: int = MAX_POSITION
) -> list[Row]:
    """Up to `count` events of every stream with start_event_id <= event_id <= end_event_id."""
    cur = conn.cursor(binary=True)
    cur.execute(
        statement("read/all_events"),
        {"start_event_id": start_event_id, "end_event_id": end_event_id, "count": count},
    )
    return cur.fetchall()  # type: ignore[return-value]  # the columns of Row


def stream_version(conn: Conn, stream_uuid: str) -> int | None:
    """The stream's current version, or None when it has no events."""
    row = conn.execute(statement("read/stream_version"), {"stream_uuid": stream_uuid}).fetchone()
    return int(row[0]) if row and row[0] else None


def last_event_id(conn: Conn) -> int:
    """The highest committed event_id (0 for an empty store)."""
    row = conn.execute(statement("read/last_event_id")).fetchone()
    return int(row[0]) if row else 0


def decode(rows: Iterable[Row], serializer: Serializer) -> list[RecordedEvent]:
    """RecordedEvents from stored rows, data and metadata deserialized.

    The hot path of every read and delivery: events are built without the frozen dataclass's
    __init__ (one object.__setattr__ per field), by filling the instance dict directly.
    """
    deserialize = serializer.deserialize
    new = object.__new__
    events = []
    for (
        event_id,
        stream_uuid,
        version,
        event_type,
        correlation,
        causation,
        data,
        meta,
        at,
        event_uuid,
        number,
    ) in rows:
        event = new(RecordedEvent)
        event.__dict__.update(
            event_id=event_id,
            stream_uuid=stream_uuid,
            stream_version=version,
            event_type=event_type,
            data=deserialize(data, event_type),
            metadata=None if meta is None else deserialize(meta, None),
            correlation_id=correlation,
            causation_id=causation,
            created_at=at,
            event_uuid=event_uuid,
            event_number=number,
        )
        events.append(event)
    return events
