"""Lives of a stream in the archive (schema version 7): a stream hard-deleted and created again
leaves its earlier life's events in the files at the same versions, and which life an
archived event belongs to is told by the tombstone of the hard delete (the event counter when
it ran), not by the transactions' start times (now()), which follow no commit order: an
append in a caller's transaction (conn=) that began long before its commit neither brings an
earlier life back nor hides its own event once archived."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from support import events, wait_until

from eventstore_actors import ANY_VERSION, EventNotFoundError, EventStore

pytest.importorskip("pyarrow.parquet")

Conn = psycopg.Connection[Any]


@contextmanager
def caller(dsn: str) -> Iterator[tuple[Conn, datetime]]:
    """An application's connection with a transaction begun now (its now() frozen)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT now()").fetchone()
        assert row is not None
        began: datetime = row[0]
        # Later transactions get a later now(): bounded, and normally at once.
        with psycopg.connect(dsn, autocommit=True) as other:
            wait_until(lambda: _later(other, began))
        yield conn, began


def _later(conn: Conn, than: datetime) -> bool:
    row = conn.execute("SELECT clock_timestamp() > %s", (than,)).fetchone()
    return bool(row and row[0])


def all_ids(store: EventStore) -> list[tuple[int, str, int]]:
    return [(e.event_id, e.stream_uuid, e.stream_version) for e in store.read_all_streams_forward()]


def stream_ids(store: EventStore, stream: str) -> list[tuple[int, int]]:
    return [(e.event_id, e.stream_version) for e in store.read_stream_forward(stream)]


def created_at(dsn: str, schema: str, stream: str) -> datetime:
    with psycopg.connect(dsn, autocommit=True) as conn:
        query = sql.SQL("SELECT created_at FROM {}.streams WHERE stream_uuid = %s").format(
            sql.Identifier(schema)
        )
        row = conn.execute(query, (stream,)).fetchone()
        assert row is not None
        return row[0]  # type: ignore[no-any-return]


def test_a_stream_created_again_in_an_older_transaction_does_not_bring_its_earlier_life_back(
    make_store: Callable[..., EventStore], dsn: str, schema: str, tmp_path: Path
) -> None:
    """The caller's transaction begins, then "x" gets 3 events, which are archived, and "x" is
    hard-deleted; the caller creates "x" again and commits. Its stream row's created_at (the
    caller's now()) is older than the first life's events: every read, the lag and linking
    still show only the second life."""
    store = make_store(archive=str(tmp_path), enable_hard_deletes=True)
    store.append_to_stream("other", ANY_VERSION, events(1))  # 1
    with caller(dsn) as (conn, began):
        store.append_to_stream("x", 0, events(3))  # 2-4: the first life
        store.append_to_stream("other", ANY_VERSION, events(1, start=10))  # 5
        assert store.archive(before_event_id=6).events == 5
        store.delete_stream("x", ANY_VERSION, hard=True)
        assert all_ids(store) == [(1, "other", 1), (5, "other", 2)]
        store.append_to_stream("x", 0, events(1, start=20), conn=conn)  # 6: the second life
        conn.commit()
    assert created_at(dsn, schema, "x") == began  # older than events 2-4
    assert all_ids(store) == [(1, "other", 1), (5, "other", 2), (6, "x", 1)]
    assert stream_ids(store, "x") == [(6, 1)]
    assert [e.event_id for e in store.read_stream_backward("x")] == [6]
    assert [e.event_id for e in store.stream_all_forward()] == [1, 5, 6]
    for old in (2, 3, 4):
        with pytest.raises(EventNotFoundError):
            store.link_to_stream("links", ANY_VERSION, [old])
    # Archived whole, the second life still reads alone, at its version.
    assert store.archive(before_event_id=7).events == 1
    assert all_ids(store) == [(1, "other", 1), (5, "other", 2), (6, "x", 1)]
    assert stream_ids(store, "x") == [(6, 1)]
    assert [e.event_id for e in store.stream_forward("x", 0, 1)] == [6]
    assert store.truncate_stream("x", 2) == 1  # its one event, not the first life's three


def test_an_event_appended_in_a_transaction_older_than_its_stream_stays_readable_archived(
    make_store: Callable[..., EventStore], dsn: str, schema: str, tmp_path: Path
) -> None:
    """The caller's transaction begins, then "x" is created by another append; the caller
    appends to "x" and commits. Its event's created_at (the caller's now()) is older than the
    stream row: once archived it is still the stream's, in every read and for linking."""
    store = make_store(archive=str(tmp_path), enable_hard_deletes=True)
    with caller(dsn) as (conn, began):
        store.append_to_stream("x", 0, events(1))  # 1
        store.append_to_stream("x", 1, events(1, start=10), conn=conn)  # 2, older than x
        conn.commit()
    assert created_at(dsn, schema, "x") > began
    before = (all_ids(store), stream_ids(store, "x"))
    assert before == ([(1, "x", 1), (2, "x", 2)], [(1, 1), (2, 2)])
    assert store.archive(before_event_id=3).events == 2
    assert (all_ids(store), stream_ids(store, "x")) == before
    assert [e.event_id for e in store.read_stream_backward("x")] == [2, 1]
    assert store.link_to_stream("links", ANY_VERSION, [2]).first_version == 1
    assert [e.event_id for e in store.read_stream_forward("links")] == [2]
    # A hard delete still hides it, and a third life starts clean.
    store.delete_stream("x", ANY_VERSION, hard=True)
    assert all_ids(store) == [] and store.read_stream_forward("links") == []
    store.append_to_stream("x", 0, events(1, start=30))  # 3
    assert stream_ids(store, "x") == [(3, 1)]
