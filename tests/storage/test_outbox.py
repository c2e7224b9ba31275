"""conn=: appends in the caller's own psycopg transaction (the outbox pattern).

The caller's rows and the events commit or roll back together; nothing is visible, read or
delivered before the caller commits; global order holds (the counter lock is held to the
caller's commit); the caller's session is left as it was; the store never commits or rolls
back the caller's transaction.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row
from support import QueueSubscriber
from support.factory import new_stream

from eventstore_actors import (
    ANY_VERSION,
    NO_STREAM,
    AppendResult,
    EventData,
    EventStore,
    RecordedEvent,
    StreamAppend,
    StreamNotFoundError,
    WrongExpectedVersionError,
)

TIMEOUT = 30.0


def evs(count: int, given: bool = False) -> list[EventData]:
    return [
        EventData({"n": n}, "tests.Outbox", event_uuid=uuid.uuid4() if given else None)
        for n in range(count)
    ]


def everything(store: EventStore) -> list[RecordedEvent]:
    return store.read_all_streams_forward(0, 1_000_000)


@pytest.fixture
def conn(dsn: str, schema: str) -> Iterator[psycopg.Connection[Any]]:
    """The application's own connection (default psycopg settings: not autocommit), with an
    outbox table of its own in the test's schema."""
    with psycopg.connect(dsn, autocommit=True) as setup:
        setup.execute(
            sql.SQL("CREATE TABLE {}.outbox (id serial PRIMARY KEY, note text)").format(
                sql.Identifier(schema)
            )
        )
    connection = psycopg.connect(dsn)
    try:
        yield connection
    finally:
        connection.close()
        with psycopg.connect(dsn, autocommit=True) as setup:
            setup.execute(sql.SQL("DROP TABLE {}.outbox").format(sql.Identifier(schema)))


def add_note(conn: psycopg.Connection[Any], schema: str, note: str) -> None:
    conn.execute(
        sql.SQL("INSERT INTO {}.outbox (note) VALUES (%s)").format(sql.Identifier(schema)), (note,)
    )


def notes(dsn: str, schema: str) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as other:
        rows = other.execute(
            sql.SQL("SELECT note FROM {}.outbox ORDER BY id").format(sql.Identifier(schema))
        ).fetchall()
    return [r[0] for r in rows]


IDLE = psycopg.pq.TransactionStatus.IDLE
INTRANS = psycopg.pq.TransactionStatus.INTRANS


def test_events_commit_with_the_callers_transaction(
    store: EventStore, conn: psycopg.Connection[Any], dsn: str, schema: str
) -> None:
    stream = new_stream()
    sub = QueueSubscriber()
    handle = store.subscribe_to_all_streams("outbox", sub)
    sub.subscribed()

    add_note(conn, schema, "order placed")
    result = store.append_to_stream(stream, 0, evs(2), conn=conn)
    assert result == AppendResult(stream, 1, 2, 1, 2)
    assert conn.info.transaction_status == INTRANS  # not committed by the store
    # Nothing visible, read or delivered before the caller commits.
    assert everything(store) == []
    with pytest.raises(StreamNotFoundError):
        store.read_stream_forward(stream)
    sub.nothing()

    conn.commit()
    assert [e.stream_version for e in store.read_stream_forward(stream)] == [1, 2]
    assert notes(dsn, schema) == ["order placed"]
    assert [e.event_id for e in sub.collect(handle, 2)] == [1, 2]


def test_rollback_stores_nothing_and_leaves_no_gap(
    store: EventStore, conn: psycopg.Connection[Any], dsn: str, schema: str
) -> None:
    stream = new_stream()
    add_note(conn, schema, "doomed")
    store.append_to_stream(stream, 0, evs(3), conn=conn)
    conn.rollback()
    assert everything(store) == []
    assert notes(dsn, schema) == []
    assert store.append_to_stream(stream, 0, evs(1)) == AppendResult(stream, 1, 1, 1, 1)


def test_autocommit_connection_outside_a_transaction_commits_at_once(
    store: EventStore, dsn: str
) -> None:
    stream = new_stream()
    with psycopg.connect(dsn, autocommit=True) as auto:
        result = store.append_to_stream(stream, ANY_VERSION, evs(2), conn=auto)
        assert auto.info.transaction_status == IDLE
        assert result == AppendResult(stream, 1, 2, 1, 2)
        assert len(store.read_stream_forward(stream)) == 2


def test_autocommit_connection_inside_a_transaction_block(
    store: EventStore, dsn: str, schema: str
) -> None:
    stream = new_stream()
    with psycopg.connect(dsn, autocommit=True) as auto:
        with auto.transaction():
            store.append_to_stream(stream, 0, evs(1), conn=auto)
            assert everything(store) == []
        assert len(store.read_stream_forward(stream)) == 1
        with pytest.raises(RuntimeError), auto.transaction():
            store.append_to_stream(stream, 1, evs(1), conn=auto)
            raise RuntimeError("the application fails")
        assert len(store.read_stream_forward(stream)) == 1


def test_append_to_streams_in_the_callers_transaction(
    store: EventStore, conn: psycopg.Connection[Any]
) -> None:
    a, b = new_stream(), new_stream()
    results = store.append_to_streams(
        [StreamAppend(a, NO_STREAM, evs(2)), StreamAppend(b, ANY_VERSION, evs(1))], conn=conn
    )
    assert results == [AppendResult(a, 1, 2, 1, 2), AppendResult(b, 1, 1, 3, 3)]
    assert everything(store) == []
    conn.commit()
    assert [e.stream_uuid for e in everything(store)] == [a, a, b]


def test_a_refused_append_leaves_the_callers_transaction_usable(
    store: EventStore, conn: psycopg.Connection[Any], dsn: str, schema: str
) -> None:
    stream = new_stream()
    store.append_to_stream(stream, 0, evs(1))
    add_note(conn, schema, "kept")
    with pytest.raises(WrongExpectedVersionError) as info:
        store.append_to_stream(stream, 0, evs(1), conn=conn)
    assert info.value.actual_version == 1
    assert conn.info.transaction_status == INTRANS
    # The counter lock went with the refused append: the store appends while it is open.
    assert store.append_to_stream(stream, 1, evs(1)) is not None
    add_note(conn, schema, "still usable")
    conn.commit()
    assert notes(dsn, schema) == ["kept", "still usable"]
    assert len(store.read_stream_forward(stream)) == 2


def test_global_order_holds_while_the_callers_transaction_is_open(
    store: EventStore, conn: psycopg.Connection[Any]
) -> None:
    mine, other = new_stream(), new_stream()
    store.append_to_stream(mine, 0, evs(1), conn=conn)
    done = threading.Event()

    def append_elsewhere() -> AppendResult | None:
        try:
            return store.append_to_stream(other, 0, evs(1))
        finally:
            done.set()

    with ThreadPoolExecutor(1) as pool:
        later = pool.submit(append_elsewhere)
        assert not done.wait(0.5)  # waits for the caller's transaction (the counter lock)
        conn.commit()
        result = later.result(timeout=TIMEOUT)
    assert result == AppendResult(other, 1, 1, 2, 2)
    assert [(e.stream_uuid, e.event_id) for e in everything(store)] == [(mine, 1), (other, 2)]


def test_delivery_after_commit_then_later_appends_in_order(
    store: EventStore, conn: psycopg.Connection[Any]
) -> None:
    sub = QueueSubscriber()
    handle = store.subscribe_to_all_streams("order", sub)
    sub.subscribed()
    stream = new_stream()
    store.append_to_stream(stream, 0, evs(2))
    store.append_to_stream(stream, 2, evs(2), conn=conn)
    conn.commit()
    store.append_to_stream(stream, 4, evs(2))
    got = sub.collect(handle, 6)
    assert [e.event_id for e in got] == [1, 2, 3, 4, 5, 6]


def test_the_callers_session_is_left_as_it_was(
    store: EventStore, conn: psycopg.Connection[Any]
) -> None:
    conn.execute("SET search_path TO pg_catalog")
    conn.commit()
    conn.row_factory = dict_row  # type: ignore[assignment]
    before_prepared = conn.execute("SELECT count(*) AS n FROM pg_prepared_statements").fetchone()
    for i in range(8):  # beyond psycopg's prepare_threshold
        store.append_to_stream(new_stream(), ANY_VERSION, evs(1, given=i % 2 == 0), conn=conn)
    assert conn.execute("SHOW search_path").fetchone() == {"search_path": "pg_catalog"}
    assert (
        conn.execute("SELECT count(*) AS n FROM pg_prepared_statements").fetchone()
        == before_prepared
    )
    conn.commit()
    assert len(everything(store)) == 8


def test_concurrent_outbox_and_store_appends_stay_gap_free(store: EventStore, dsn: str) -> None:
    stream = new_stream()
    rounds = 15

    def outbox_writer(_: int) -> None:
        with psycopg.connect(dsn) as own:
            for _ in range(rounds):
                store.append_to_stream(stream, ANY_VERSION, evs(2), conn=own)
                own.commit()

    def store_writer(_: int) -> None:
        for _ in range(rounds):
            store.append_to_stream(stream, ANY_VERSION, evs(2))

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(outbox_writer, i) for i in range(3)]
        futures += [pool.submit(store_writer, i) for i in range(3)]
        for f in futures:
            f.result(timeout=TIMEOUT * 2)
    events = store.read_stream_forward(stream, 0, 10_000)
    assert [e.stream_version for e in events] == list(range(1, 6 * rounds * 2 + 1))
    assert [e.event_id for e in events] == list(range(1, 6 * rounds * 2 + 1))


def test_idempotent_retry_through_the_callers_connection(
    store: EventStore, conn: psycopg.Connection[Any]
) -> None:
    stream = new_stream()
    events = evs(3, given=True)
    first = store.append_to_stream(stream, 0, events, conn=conn)
    conn.commit()
    assert store.append_to_stream(stream, 0, events, conn=conn) == first
    conn.commit()  # it holds the counter lock until then: appends elsewhere wait for it
    assert store.append_to_stream(stream, 0, events) == first
    assert len(everything(store)) == 3


def test_subscriber_of_another_store_gets_outbox_events(
    store: EventStore, make_store: Any, conn: psycopg.Connection[Any]
) -> None:
    other = make_store()
    sub = QueueSubscriber()
    handle = other.subscribe_to_all_streams("elsewhere", sub)
    sub.subscribed()
    store.append_to_stream(new_stream(), 0, evs(2), conn=conn)
    sub.nothing()
    conn.commit()
    assert len(sub.collect(handle, 2)) == 2


# --- validation: refused before anything is written -----------------------------------------


def test_conn_must_be_a_psycopg_connection(store: EventStore, dsn: str) -> None:
    for bad in ("dsn", object(), 1):
        with pytest.raises(TypeError, match="conn"):
            store.append_to_stream(new_stream(), 0, evs(1), conn=bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="conn"):
            store.append_to_streams([StreamAppend(new_stream(), 0, evs(1))], conn=bad)  # type: ignore[arg-type]
    assert everything(store) == []


def test_closed_connection_is_refused(store: EventStore, dsn: str) -> None:
    closed = psycopg.connect(dsn)
    closed.close()
    with pytest.raises(ValueError, match="closed"):
        store.append_to_stream(new_stream(), 0, evs(1), conn=closed)
    assert everything(store) == []


def test_failed_transaction_is_refused(store: EventStore, conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.errors.DivisionByZero):
        conn.execute("SELECT 1 / 0")
    with pytest.raises(ValueError, match="failed transaction"):
        store.append_to_stream(new_stream(), 0, evs(1), conn=conn)
    with pytest.raises(ValueError, match="failed transaction"):
        store.append_to_streams([StreamAppend(new_stream(), 0, evs(1))], conn=conn)
    conn.rollback()
    assert everything(store) == []


def test_connection_to_another_database_is_refused(store: EventStore, dsn: str) -> None:
    other_dsn = psycopg.conninfo.make_conninfo(dsn, dbname="postgres")
    with (
        psycopg.connect(other_dsn) as elsewhere,
        pytest.raises(ValueError, match="another database"),
    ):
        store.append_to_stream(new_stream(), 0, evs(1), conn=elsewhere)
    assert everything(store) == []


def test_bad_arguments_are_refused_before_the_connection_is_touched(
    store: EventStore, conn: psycopg.Connection[Any]
) -> None:
    with pytest.raises(TypeError):
        store.append_to_stream(new_stream(), "0", evs(1), conn=conn)  # type: ignore[arg-type]
    assert conn.info.transaction_status == IDLE


def test_store_errors_are_contract_errors(store: EventStore, dsn: str, schema: str) -> None:
    """A database error on the caller's connection (here: the events table refuses the
    append) is a contract error, never a raw psycopg error; nothing is stored. A refused
    statement (a check violation: the caller's data) is not a StoreUnavailableError."""
    from eventstore_actors import EventStoreError, StoreUnavailableError

    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL(
                "ALTER TABLE {}.events ADD CONSTRAINT no_big CHECK (octet_length(data) < 50)"
            ).format(sql.Identifier(schema))
        )
    with psycopg.connect(dsn) as own:
        with pytest.raises(EventStoreError, match="no_big") as refused:
            store.append_to_stream(new_stream(), 0, [EventData({"x": "y" * 100}, "t")], conn=own)
        assert not isinstance(refused.value, StoreUnavailableError)
        assert own.info.transaction_status == INTRANS  # usable: rolled back to the savepoint
        own.execute("SELECT 1")
    assert everything(store) == []
