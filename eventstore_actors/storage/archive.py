"""The archive's SQL (the manifest of Parquet files, the rows to move, their deletion) and the
hook through which every read of `storage.reader` consults the archive.

The files themselves are read and written by `eventstore_actors.lifecycle.archive`, which sits
above storage: it registers its overlay here (`register`) when it is imported, and the reads
call it through `overlay()`. Without it, reads see PostgreSQL only, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any, NamedTuple, Protocol

import psycopg

from ..sql import statement
from .deadline import guard

__all__ = [
    "AllRead",
    "ArchivedFile",
    "CoveredRead",
    "Filters",
    "Overlay",
    "StreamLife",
    "StreamRead",
    "StreamState",
    "delete_batch",
    "first_newer",
    "identity",
    "last_event_id",
    "link_positions",
    "links_to_archived",
    "lock",
    "manifest",
    "mark_deleted",
    "overlay",
    "record",
    "register",
    "rows_to_archive",
    "stream_created",
    "stream_state",
    "unlock",
]

Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class ArchivedFile:
    """One row of the manifest: a Parquet file holding event_ids first..last."""

    url: str
    first_event_id: int
    last_event_id: int
    events: int
    state: str  # 'recorded' (rows may still be in events) or 'deleted'
    created_at: datetime
    deleted_at: datetime | None


@dataclass(frozen=True)
class Filters:
    """The conditions of an all-streams read, for archived rows (applied in Python)."""

    event_types: tuple[str, ...] | None = None
    stream_prefix: str | None = None
    partition: tuple[int, int] | None = None


@dataclass(frozen=True)
class StreamState:
    """What a stream read needs from the streams row to fill positions from the archive."""

    stream_id: int
    version: int
    created_at: datetime
    deleted: bool
    min_own_version: int | None  # the lowest version of its own events still in events

    @property
    def archived_below(self) -> int:
        """Its own events below this version are archived (rows go lowest first)."""
        return self.version + 1 if self.min_own_version is None else self.min_own_version


class StreamLife(NamedTuple):
    """What decides whether an archived event of an existing stream is live (its current life,
    kept by its retention): see sql/archive/streams.sql and `lifecycle.archive.reader`."""

    created_at: datetime
    lowest: int  # the lowest readable version
    oldest: datetime | None  # the oldest readable created_at (None: no max_age)
    after: int  # event_ids up to this are of an earlier life (hard-deleted)
    legacy: int  # event_ids up to this need created_at <= the event's too (from version 6)

    def keeps(self, event_id: int, version: int, created_at: datetime) -> bool:
        """Whether an archived event of this stream (its event_id, version, created_at) is
        live."""
        return (
            event_id > self.after
            and (event_id > self.legacy or self.created_at <= created_at)
            and version >= self.lowest
            and (self.oldest is None or created_at >= self.oldest)
        )


#: read(low, high, count) -> rows of PostgreSQL only (the plain reader's statement).
AllRead = Callable[[int, int, int], list[Any]]
#: read(low, count) -> (rows, covered) of PostgreSQL only.
CoveredRead = Callable[[int, int], tuple[list[Any], int]]
#: read(start, count) -> rows of PostgreSQL only, archived links as rows of NULLs.
StreamRead = Callable[[int, int], list[Any]]


class Overlay(Protocol):
    """What `lifecycle.archive` provides to the reads (see lifecycle/archive/reader.py)."""

    def read_all(
        self,
        conn: Conn,
        read: AllRead,
        low: int,
        high: int,
        count: int,
        backward: bool,
        filters: Filters,
    ) -> list[Any]: ...

    def read_all_covered(
        self, conn: Conn, read: CoveredRead, low: int, high: int, count: int, filters: Filters
    ) -> tuple[list[Any], int]: ...

    def read_stream(
        self,
        conn: Conn,
        read: StreamRead,
        stream_uuid: str,
        start: int,
        count: int,
        backward: bool,
        live_only: bool,
        event_types: tuple[str, ...] | None,
    ) -> list[Any]: ...

    def count_own(self, conn: Conn, stream_uuid: str, low: int, high: int) -> int: ...

    def first_readable(self, conn: Conn, stream_uuid: str, first: int) -> int: ...

    def archived_events(
        self, conn: Conn, event_ids: Sequence[int]
    ) -> dict[int, tuple[str, datetime]]: ...

    def archived_streams(self, conn: Conn, event_ids: Sequence[int]) -> dict[int, str]: ...

    def hidden_archived(self, conn: Conn, event_ids: Sequence[int]) -> list[int]: ...

    def first_unacked(self, conn: Conn, stream_uuid: str, after: int) -> datetime | None: ...


_overlay: list[Overlay] = []


def register(hook: Overlay) -> None:
    """Make every read of this process consult `hook` (once; later calls replace it)."""
    _overlay[:] = [hook]


def overlay() -> Overlay | None:
    """The registered overlay, or None (reads then see PostgreSQL only)."""
    return _overlay[0] if _overlay else None


# The manifest -------------------------------------------------------------------------------
def manifest(conn: Conn) -> list[ArchivedFile]:
    """Every archived range, oldest first."""
    return [ArchivedFile(*row) for row in conn.execute(statement("archive/manifest")).fetchall()]


def identity(conn: Conn) -> tuple[str, str]:
    """(store_id, database name) of the store: whose archive targets are its own."""
    row = conn.execute(statement("archive/identity")).fetchone()
    assert row is not None, "store_identity holds its one row from schema version 7 on"
    return str(row[0]), str(row[1])


def record(conn: Conn, url: str, first: int, last: int, events: int) -> None:
    """List a written file in the manifest (its range is read from it from now on)."""
    conn.execute(
        statement("archive/record"), {"url": url, "first": first, "last": last, "events": events}
    )


def mark_deleted(conn: Conn, first: int) -> None:
    """The rows of the range starting at `first` are all gone from events."""
    conn.execute(statement("archive/deleted"), {"first": first})


def lock(conn: Conn) -> None:
    """Take the schema's archive lock (session level), waiting for another archive to end."""
    conn.execute(statement("archive/lock"))


def unlock(conn: Conn) -> None:
    conn.execute(statement("archive/unlock"))


# Moving rows --------------------------------------------------------------------------------
def last_event_id(conn: Conn) -> int:
    """The counter: every event_id up to it is committed (or was hard-deleted)."""
    row = conn.execute(statement("read/last_event_id")).fetchone()
    return int(row[0]) if row else 0


def first_newer(conn: Conn, after: int, age: timedelta) -> int | None:
    """The first event_id after `after` not older than `age`, or None."""
    row = conn.execute(statement("archive/first_newer"), {"after": after, "age": age}).fetchone()
    return int(row[0]) if row else None


def rows_to_archive(
    conn: Conn, low: int, high: int, batch: int, timeout: float
) -> Generator[list[Any], None, None]:
    """The events low..high in event_id order, `batch` rows at a time (a server-side cursor in
    one transaction; each fetch within `timeout` seconds): event_id, stream_uuid,
    stream_version, event_uuid, event_type, correlation_id, causation_id, data, metadata,
    subject, created_at. Close it (`contextlib.closing`) when leaving before its end: that
    ends the transaction and its cursor at once."""
    with conn.transaction():
        cur = conn.cursor(name="eventstore_actors_archive", binary=True)
        with guard(conn, timeout):
            cur.execute(statement("archive/events"), {"low": low, "high": high})
        while True:
            with guard(conn, timeout):
                rows = cur.fetchmany(batch)
            if not rows:
                break
            yield rows
        cur.close()


def delete_batch(conn: Conn, low: int, high: int, batch: int) -> int:
    """Delete up to `batch` rows of low..high, lowest first, in one transaction; how many."""
    with conn.transaction():
        conn.execute(statement("archive/allow_delete"))
        cur = conn.execute(
            statement("archive/delete_batch"), {"low": low, "high": high, "batch": batch}
        )
        return cur.rowcount


# What reads need ----------------------------------------------------------------------------
def stream_created(conn: Conn, uuids: Sequence[str]) -> dict[str, StreamLife]:
    """stream_uuid -> its `StreamLife`, of the streams among `uuids` that exist."""
    rows = conn.execute(statement("archive/streams"), {"uuids": list(uuids)}).fetchall()
    return {str(r[0]): StreamLife(r[1], int(r[2]), r[3], int(r[4]), int(r[5])) for r in rows}


def stream_state(conn: Conn, stream_uuid: str) -> StreamState | None:
    row = conn.execute(statement("archive/stream_state"), {"stream_uuid": stream_uuid}).fetchone()
    if row is None:
        return None
    return StreamState(int(row[0]), int(row[1]), row[2], bool(row[3]), row[4])


def link_positions(conn: Conn, stream_id: int, below: int) -> int:
    """How many of the stream's positions below `below` are links."""
    row = conn.execute(
        statement("archive/link_positions"), {"stream_id": stream_id, "below": below}
    ).fetchone()
    return int(row[0]) if row else 0


def links_to_archived(
    conn: Conn, stream_id: int, upto: int, low: int, high: int, count: int, backward: bool
) -> list[tuple[int, int]]:
    """(event_number, event_id) of the stream's links to event_ids <= `upto` with positions in
    low..high, nearest to the start of the read first, at most `count`."""
    rows = conn.execute(
        _links_query(backward),
        {"stream_id": stream_id, "upto": upto, "low": low, "high": high, "count": count},
    ).fetchall()
    return [(int(r[0]), int(r[1])) for r in rows]


@cache
def _links_query(backward: bool) -> str:
    return statement("archive/links").replace("{dir}", "DESC" if backward else "ASC")
