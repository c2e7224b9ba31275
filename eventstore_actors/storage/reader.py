"""Reading streams and the all-streams log, and turning rows into RecordedEvents."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg

from ..events import RecordedEvent
from ..serialization import Serializer
from ..sql import statement
from .appender import StoredRow

__all__ = ["MAX_POSITION", "decode", "last_event_id", "read_all", "read_stream", "stream_version"]

#: Larger than any event_id or stream_version.
MAX_POSITION = 2**63 - 1

Conn = psycopg.Connection[Any]


def read_stream(conn: Conn, stream_uuid: str, start_version: int, count: int) -> list[StoredRow]:
    """Up to `count` events of one stream from `start_version` on (empty: none there)."""
    cur = conn.cursor(binary=True)
    cur.execute(
        statement("read/stream_events"),
        {"stream_uuid": stream_uuid, "start_version": start_version, "count": count},
    )
    return [StoredRow(*row) for row in cur.fetchall()]


def read_all(
    conn: Conn, start_event_id: int, count: int, end_event_id: int = MAX_POSITION
) -> list[StoredRow]:
    """Up to `count` events of every stream with start_event_id <= event_id <= end_event_id."""
    cur = conn.cursor(binary=True)
    cur.execute(
        statement("read/all_events"),
        {"start_event_id": start_event_id, "end_event_id": end_event_id, "count": count},
    )
    return [StoredRow(*row) for row in cur.fetchall()]


def stream_version(conn: Conn, stream_uuid: str) -> int | None:
    """The stream's current version, or None when it has no events."""
    row = conn.execute(statement("read/stream_version"), {"stream_uuid": stream_uuid}).fetchone()
    return int(row[0]) if row and row[0] else None


def last_event_id(conn: Conn) -> int:
    """The highest committed event_id (0 for an empty store)."""
    row = conn.execute(statement("read/last_event_id")).fetchone()
    return int(row[0]) if row else 0


def decode(rows: Iterable[StoredRow], serializer: Serializer) -> list[RecordedEvent]:
    """RecordedEvents from stored rows, data and metadata deserialized."""
    deserialize = serializer.deserialize
    return [
        RecordedEvent(
            event_id=row.event_id,
            stream_uuid=row.stream_uuid,
            stream_version=row.stream_version,
            event_type=row.event_type,
            data=deserialize(row.data, row.event_type),
            metadata=None if row.metadata is None else deserialize(row.metadata, None),
            correlation_id=row.correlation_id,
            causation_id=row.causation_id,
            created_at=row.created_at,
        )
        for row in rows
    ]
