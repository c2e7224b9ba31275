"""The raw psycopg baseline: the fastest correct code we can write for each job.

Same schema, same guarantees as the store: event ids gap-free and handed out in commit order
(every append takes the event_counter row lock first and holds it to commit), the
(stream_id, stream_version) unique constraint rejects a stale expected version, one NOTIFY
per commit. Payloads are serialized and deserialized here, as the store must do too.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import psycopg

__all__ = [
    "CHANNEL_PREFIX",
    "RawConflict",
    "RawEvent",
    "append",
    "append_any",
    "append_two",
    "channel",
    "decode_rows",
    "read_all",
    "read_last",
    "read_range",
    "read_stream",
    "stream_all",
]

Conn = psycopg.Connection[Any]
RawEvent = tuple[dict[str, Any], dict[str, Any]]
#: A decoded event: (event_id, stream_uuid, stream_version, event_type, data, metadata,
#: created_at, event_uuid): the store returns event_uuid too, so the baseline reads it.
Row = tuple[int, str, int, str, Any, Any, datetime, uuid.UUID]

CHANNEL_PREFIX = "eventstore_actors_bench_raw."
_COPY_TYPES = ["int8", "int8", "int8", "text", "text", "text", "bytea", "bytea", "timestamptz"]
_COPY = (
    "COPY events (event_id, stream_id, stream_version, event_type, correlation_id,"
    " causation_id, data, metadata, created_at) FROM STDIN (FORMAT BINARY)"
)

# One statement, one round trip: lock and advance the counter, check and advance the stream,
# insert the events numbered from the locked counter, notify. A stale expected version leaves
# `s` empty, so the LEFT JOIN yields a NULL stream_id and the insert fails: nothing commits.
_APPEND_TAIL = """
e AS (
  INSERT INTO events (event_id, stream_id, stream_version, event_type, correlation_id,
                      causation_id, data, metadata, created_at)
  SELECT c.base + u.ord, s.stream_id, %(expected)s + u.ord, %(type)s, NULL, NULL,
         u.data, u.metadata, c.ts
  FROM c LEFT JOIN s ON true,
       unnest(%(data)s::bytea[], %(metadata)s::bytea[]) WITH ORDINALITY AS u(data, metadata, ord)
  RETURNING event_id)
SELECT pg_notify(%(channel)s, min(event_id) || ',' || max(event_id)) FROM e
"""
_COUNTER_CTE = """
WITH c AS (
  UPDATE event_counter SET last_event_id = last_event_id + %(n)s WHERE id = 1
  RETURNING last_event_id - %(n)s AS base, now() AS ts),
"""
_APPEND_NEW = (
    _COUNTER_CTE
    + """
s AS (
  INSERT INTO streams (stream_uuid, stream_version) VALUES (%(stream)s, %(n)s)
  RETURNING stream_id),"""
    + _APPEND_TAIL
)
_APPEND_EXISTING = (
    _COUNTER_CTE
    + """
s AS (
  UPDATE streams SET stream_version = stream_version + %(n)s
  WHERE stream_uuid = %(stream)s AND stream_version = %(expected)s
  RETURNING stream_id),"""
    + _APPEND_TAIL
)


_APPEND_ANY = (
    _COUNTER_CTE
    + """
s AS (
  INSERT INTO streams (stream_uuid, stream_version) VALUES (%(stream)s, %(n)s)
  ON CONFLICT (stream_uuid) DO UPDATE SET stream_version = streams.stream_version + %(n)s
  WHERE streams.deleted_at IS NULL
  RETURNING stream_id, stream_version - %(n)s AS version),"""
    + _APPEND_TAIL.replace("%(expected)s + u.ord", "s.version + u.ord")
)


class RawConflict(Exception):
    """The expected version did not match (the raw WrongExpectedVersionError)."""


def channel(schema: str) -> str:
    return CHANNEL_PREFIX + schema


_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

#: Batches from this size on go through COPY (three round trips, cheaper per row); smaller
#: ones through the one-statement path (one round trip).
COPY_THRESHOLD = 8


def append(
    conn: Conn,
    stream_uuid: str,
    expected_version: int,
    events: Sequence[RawEvent],
    event_type: str,
    notify_channel: str,
) -> None:
    """Append `events` atomically; RawConflict on a stale expected version.

    `conn` must be in autocommit mode: transactions are spelled out inside pipelines.
    """
    write = _append_copy if len(events) >= COPY_THRESHOLD else _append_statement
    try:
        write(conn, stream_uuid, expected_version, events, event_type, notify_channel)
    except (psycopg.errors.UniqueViolation, psycopg.errors.NotNullViolation):
        _rollback(conn)
        raise RawConflict(stream_uuid) from None
    except BaseException:
        _rollback(conn)
        raise


def _rollback(conn: Conn) -> None:
    if not conn.broken and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.execute("ROLLBACK")


def _append_statement(
    conn: Conn,
    stream_uuid: str,
    expected_version: int,
    events: Sequence[RawEvent],
    event_type: str,
    notify_channel: str,
) -> None:
    """One round trip: BEGIN, the one append statement, COMMIT in one pipeline."""
    params = {
        "n": len(events),
        "stream": stream_uuid,
        "expected": expected_version,
        "type": event_type,
        "data": [_encode(d).encode() for d, _ in events],
        "metadata": [_encode(m).encode() for _, m in events],
        "channel": notify_channel,
    }
    query = _APPEND_NEW if expected_version == 0 else _APPEND_EXISTING
    with conn.pipeline():
        conn.execute("BEGIN")
        conn.execute(query, params, prepare=True)
        conn.execute("COMMIT")


def _append_copy(
    conn: Conn,
    stream_uuid: str,
    expected_version: int,
    events: Sequence[RawEvent],
    event_type: str,
    notify_channel: str,
) -> None:
    """Three round trips: lock counter and stream; COPY; advance counter, notify, COMMIT."""
    n = len(events)
    payloads = [(_encode(d).encode(), _encode(m).encode()) for d, m in events]
    with conn.pipeline():
        conn.execute("BEGIN")
        counter = conn.execute(
            "SELECT last_event_id, now() FROM event_counter WHERE id = 1 FOR UPDATE",
            prepare=True,
        )
        if expected_version == 0:
            stream = conn.execute(
                "INSERT INTO streams (stream_uuid, stream_version) VALUES (%s, %s)"
                " RETURNING stream_id",
                (stream_uuid, n),
                prepare=True,
            )
        else:
            stream = conn.execute(
                "UPDATE streams SET stream_version = stream_version + %s"
                " WHERE stream_uuid = %s AND stream_version = %s RETURNING stream_id",
                (n, stream_uuid, expected_version),
                prepare=True,
            )
        base, ts = counter.fetchone()  # type: ignore[misc]
        found = stream.fetchone()
    if found is None:
        raise RawConflict(stream_uuid)
    stream_id = found[0]
    with conn.cursor().copy(_COPY) as copy:
        copy.set_types(_COPY_TYPES)
        write_row = copy.write_row
        version = expected_version
        for event_id, (data, metadata) in enumerate(payloads, start=base + 1):
            version += 1
            write_row((event_id, stream_id, version, event_type, None, None, data, metadata, ts))
    with conn.pipeline():
        conn.execute(
            "UPDATE event_counter SET last_event_id = %s WHERE id = 1", (base + n,), prepare=True
        )
        conn.execute(
            "SELECT pg_notify(%s, %s)", (notify_channel, f"{base + 1},{base + n}"), prepare=True
        )
        conn.execute("COMMIT")


def append_any(
    conn: Conn, stream_uuid: str, events: Sequence[RawEvent], event_type: str, notify_channel: str
) -> None:
    """Append at whatever version the stream is (ANY_VERSION): one round trip, creating the
    stream or advancing it under the counter lock."""
    params = {
        "n": len(events),
        "stream": stream_uuid,
        "type": event_type,
        "data": [_encode(d).encode() for d, _ in events],
        "metadata": [_encode(m).encode() for _, m in events],
        "channel": notify_channel,
    }
    try:
        with conn.pipeline():
            conn.execute("BEGIN")
            conn.execute(_APPEND_ANY, params, prepare=True)
            conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise


def append_two(
    conn: Conn,
    appends: Sequence[tuple[str, int, Sequence[RawEvent]]],
    event_type: str,
    notify_channel: str,
) -> None:
    """Append to several streams in one transaction, all or nothing: one round trip (each
    stream's statement locks and advances the counter; RawConflict on a stale version)."""
    try:
        with conn.pipeline():
            conn.execute("BEGIN")
            for stream_uuid, expected_version, events in appends:
                params = {
                    "n": len(events),
                    "stream": stream_uuid,
                    "expected": expected_version,
                    "type": event_type,
                    "data": [_encode(d).encode() for d, _ in events],
                    "metadata": [_encode(m).encode() for _, m in events],
                    "channel": notify_channel,
                }
                query = _APPEND_NEW if expected_version == 0 else _APPEND_EXISTING
                conn.execute(query, params, prepare=True)
            conn.execute("COMMIT")
    except (psycopg.errors.UniqueViolation, psycopg.errors.NotNullViolation):
        _rollback(conn)
        raise RawConflict(appends[0][0]) from None
    except BaseException:
        _rollback(conn)
        raise


_SELECT = (
    "SELECT e.event_id, s.stream_uuid, e.stream_version, e.event_type, e.data, e.metadata,"
    " e.created_at, e.event_uuid FROM events AS e JOIN streams AS s ON s.stream_id = e.stream_id"
)
_READ_ALL = _SELECT + " WHERE e.event_id >= %s ORDER BY e.event_id LIMIT %s"
_READ_ALL_BACKWARD = _SELECT + " ORDER BY e.event_id DESC LIMIT %s"
_READ_RANGE = _SELECT + " WHERE e.event_id BETWEEN %s AND %s ORDER BY e.event_id"
_READ_PREFIX = _SELECT + " WHERE s.stream_uuid LIKE %s ORDER BY e.event_id LIMIT %s"
_READ_PARTITION = (
    _SELECT + " WHERE mod(('x' || substr(md5(convert_to(s.stream_uuid, 'UTF8')), 1, 8))"
    "::bit(32)::bigint, %(partitions)s) = %(partition)s ORDER BY e.event_id LIMIT %(count)s"
)
_READ_STREAM = (
    "SELECT e.event_id, s.stream_uuid, e.stream_version, e.event_type, e.data, e.metadata,"
    " e.created_at, e.event_uuid FROM streams AS s JOIN events AS e ON e.stream_id = s.stream_id"
    " WHERE s.stream_uuid = %s AND e.stream_version >= %s ORDER BY e.stream_version LIMIT %s"
)


_decode = json.JSONDecoder().decode


def decode_rows(rows: list[tuple[Any, ...]]) -> list[Row]:
    """Rows with data and metadata decoded from JSON (what any consumer needs).

    A cached decoder on str skips json.loads' per-call encoding detection on bytes.
    """
    decode = _decode
    return [
        (eid, su, sv, et, decode(data.decode()), None if m is None else decode(m.decode()), ts, eu)
        for eid, su, sv, et, data, m, ts, eu in rows
    ]


def read_stream(
    conn: Conn, stream_uuid: str, start_version: int = 0, count: int = 1000
) -> list[Row]:
    cur = conn.cursor(binary=True)
    cur.execute(_READ_STREAM, (stream_uuid, start_version, count), prepare=True)
    return decode_rows(cur.fetchall())


def read_all(conn: Conn, start_event_id: int = 0, count: int = 1000) -> list[Row]:
    cur = conn.cursor(binary=True)
    cur.execute(_READ_ALL, (start_event_id, count), prepare=True)
    return decode_rows(cur.fetchall())


def read_last(conn: Conn, count: int) -> list[Row]:
    """The last `count` events of the store, newest first."""
    cur = conn.cursor(binary=True)
    cur.execute(_READ_ALL_BACKWARD, (count,), prepare=True)
    return decode_rows(cur.fetchall())


def read_prefix(conn: Conn, prefix: str, count: int) -> list[Row]:
    """The first `count` events of the streams whose stream_uuid starts with `prefix`."""
    cur = conn.cursor(binary=True)
    cur.execute(_READ_PREFIX, (prefix + "%", count), prepare=True)
    return decode_rows(cur.fetchall())


def read_partition(conn: Conn, partition: int, partitions: int, count: int) -> list[Row]:
    """The first `count` events of one consumer-group partition (the hash of
    `storage.reader.PARTITION_SQL`, as the bench's raw group members compute it)."""
    cur = conn.cursor(binary=True)
    params = {"partition": partition, "partitions": partitions, "count": count}
    cur.execute(_READ_PARTITION, params, prepare=True)
    return decode_rows(cur.fetchall())


def read_range(conn: Conn, first: int, last: int) -> list[Row]:
    cur = conn.cursor(binary=True)
    cur.execute(_READ_RANGE, (first, last), prepare=True)
    return decode_rows(cur.fetchall())


def stream_all(conn: Conn, start_event_id: int = 0, page: int = 1000) -> Iterator[Row]:
    """Every event from `start_event_id` on, `page` at a time (keyset pagination)."""
    while True:
        rows = read_all(conn, start_event_id, page)
        yield from rows
        if len(rows) < page:
            return
        start_event_id = rows[-1][0] + 1
