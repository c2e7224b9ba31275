"""The bench's own schema: created fresh per run, emptied between workloads, bulk-loaded."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from functools import cache

import psycopg
from psycopg import sql as pgsql

from eventstore_actors import admin

from .payload import EVENT_TYPE, data_dict, encode, metadata_dict

__all__ = ["BenchSchema"]

_COPY = (
    "COPY events (event_id, stream_id, stream_version, event_type, correlation_id,"
    " causation_id, data, metadata, created_at) FROM STDIN (FORMAT BINARY)"
)
_COPY_TYPES = ["int8", "int8", "int8", "text", "text", "text", "bytea", "bytea", "timestamptz"]


class BenchSchema:
    """One schema, installed with `admin.init` exactly as a store's would be."""

    def __init__(self, dsn: str, name: str | None = None) -> None:
        self.dsn = dsn
        self.name = name or f"bench_{uuid.uuid4().hex[:12]}"

    def create(self) -> None:
        admin.init(self.dsn, self.name)

    def reset(self) -> None:
        admin.reset(self.dsn, self.name)

    def drop(self) -> None:
        admin.drop(self.dsn, self.name)

    def connect(self, *, autocommit: bool = True) -> psycopg.Connection[tuple[object, ...]]:
        """A connection whose search_path is this schema."""
        return psycopg.Connection.connect(
            self.dsn,
            autocommit=autocommit,
            options=f"-c search_path={self.name}",
            application_name="eventstore-actors-bench",
        )

    def event_count(self) -> int:
        with self.connect() as conn:
            row = conn.execute("SELECT last_event_id FROM event_counter").fetchone()
            return int(row[0]) if row else 0  # type: ignore[call-overload]

    def preload(self, total: int, per_stream: int = 100, prefix: str = "pre") -> None:
        """Add `total` events, `per_stream` to each new stream, as fast as COPY allows.

        Setup only, never timed: both sides of a read workload read what this wrote.
        """
        chunk_streams = max(1, 20_000 // per_stream)
        with self.connect(autocommit=False) as conn:
            written = 0
            while written < total:
                n = min(total - written, chunk_streams * per_stream)
                _load_chunk(conn, written, n, per_stream, prefix)
                conn.commit()
                written += n
            conn.execute(pgsql.SQL("ANALYZE events, streams"))
            conn.commit()


@cache
def _payloads() -> list[tuple[bytes, bytes]]:
    """A thousand encoded events, cycled through by the bulk loader."""
    return [(encode(data_dict(i)), encode(metadata_dict(i))) for i in range(1000)]


def _load_chunk(
    conn: psycopg.Connection[tuple[object, ...]], first: int, n: int, per_stream: int, prefix: str
) -> None:
    row = conn.execute("SELECT last_event_id FROM event_counter WHERE id = 1 FOR UPDATE").fetchone()
    base = int(row[0]) if row else 0  # type: ignore[call-overload]
    sizes = [min(per_stream, n - i) for i in range(0, n, per_stream)]
    uuids = [f"{prefix}-{base + i}-{uuid.uuid4().hex[:8]}" for i in range(len(sizes))]
    ids = conn.execute(
        "INSERT INTO streams (stream_uuid, stream_version)"
        " SELECT * FROM unnest(%s::text[], %s::bigint[]) RETURNING stream_id, stream_uuid",
        (uuids, sizes),
    ).fetchall()
    by_uuid = {u: sid for sid, u in ids}
    now = datetime.now(UTC)
    payloads = _payloads()
    event_id = base
    with conn.cursor().copy(_COPY) as copy:
        copy.set_types(_COPY_TYPES)
        for stream_uuid, size in zip(uuids, sizes, strict=True):
            stream_id = by_uuid[stream_uuid]
            for version in range(1, size + 1):
                event_id += 1
                data, metadata = payloads[(first + event_id - base) % len(payloads)]
                copy.write_row(
                    (event_id, stream_id, version, EVENT_TYPE, None, None, data, metadata, now)
                )
    conn.execute("UPDATE event_counter SET last_event_id = %s WHERE id = 1", (event_id,))
