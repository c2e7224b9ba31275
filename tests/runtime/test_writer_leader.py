"""The leader hand-off (`writer.Leader`): a caller that leads commits on the writer's
connection; an append the actor takes meanwhile is pending (so `WriterActor.idle` says busy
and no other caller leads ahead of it) and waits for that commit, so the appends that queue
behind it commit together afterwards. And the appends' statements are prepared, and stay
usable after a pipeline that failed."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import replace

import pytest
from support import events, wait_until
from support.storage_sql import sql

from eventstore_actors import AppendResult, EventStore, SubjectForgottenError
from eventstore_actors.lifecycle.encryption import Encryption
from eventstore_actors.writer import Leader, WriterActor

MakeStore = Callable[..., EventStore]


def _leader_and_writer(store: EventStore) -> tuple[Leader, WriterActor]:
    leader: Leader = store._runtime.leader
    assert store._writes._leader is leader  # the hand-off is on (call_timeout >= io_timeout)
    writer = wait_until(lambda: leader.writer, what="the writer to set up")
    return leader, writer


def test_idle_is_false_while_an_append_waits_for_a_leading_caller(make_store: MakeStore) -> None:
    store = make_store()
    leader, writer = _leader_and_writer(store)
    store.append_to_stream("s", 0, events(1))  # connected, and idle again afterwards
    outcomes: list[object] = []

    def append(expected: int) -> None:
        try:
            outcomes.append(store.append_to_stream("s", expected, events(1, start=expected + 1)))
        except Exception as exc:  # asserted below
            outcomes.append(exc)

    threads = [threading.Thread(target=append, args=(n,)) for n in (1, 2)]
    commits = store.metrics()["commits_total"]
    # Lead as a caller does (`Leader.append`): hold the lock, clear `free`.
    assert leader.lock.acquire(timeout=10.0)
    try:
        assert writer.idle()
        leader.free.clear()
        threads[0].start()  # finds the lock taken: asks the actor, which waits for `free`
        wait_until(lambda: writer._pending, what="the actor to take the append")
        assert writer.actor_inbox.empty()
        assert not writer.idle(), "an append waits in the actor: the writer is not idle"
        threads[1].start()
        wait_until(lambda: not writer.actor_inbox.empty(), what="the second append queued")
        assert len(writer._pending) == 1, "the actor still waits for the leading commit"
    finally:
        leader.free.set()
        leader.lock.release()
    for thread in threads:
        thread.join(timeout=30.0)
        assert not thread.is_alive()
    assert all(isinstance(o, AppendResult) for o in outcomes), outcomes
    assert sorted((o.first_version, o.last_version) for o in outcomes) == [(2, 2), (3, 3)]  # type: ignore[union-attr]
    assert store.metrics()["commits_total"] == commits + 1, "the two appends commit together"

    def idle_again() -> bool:
        with leader.lock:
            return writer.idle()

    wait_until(idle_again, what="the writer to be idle again")


def test_the_one_statement_append_is_prepared(make_store: MakeStore) -> None:
    store = make_store()
    leader, writer = _leader_and_writer(store)
    for n in range(3):
        store.append_to_stream("s", n, events(1, start=n + 1))
    with leader.lock:
        assert writer._conn is not None
        rows = writer._conn.execute(
            "SELECT statement FROM pg_prepared_statements", prepare=False
        ).fetchall()
    # A new stream's and an existing stream's, each prepared at its first use and then
    # reused; nothing else on that connection.
    assert len(rows) == 2, rows
    assert all("UPDATE event_counter" in r[0] for r in rows), rows


def _prepared(leader: Leader, writer: WriterActor) -> list[str]:
    with leader.lock:
        assert writer._conn is not None
        rows = writer._conn.execute(
            "SELECT statement FROM pg_prepared_statements", prepare=False
        ).fetchall()
    return [str(r[0]) for r in rows]


def test_copy_appends_are_prepared_and_a_failed_pipeline_leaves_them_working(
    make_store: MakeStore, dsn: str, schema: str
) -> None:
    """Batches over 64 events go through COPY between two pipelines, whose statements are
    prepared. When a pipeline fails (here the database refuses a forgotten subject that this
    store's key cache does not know of yet: another process forgot it), psycopg deallocates
    and forgets every prepared statement of the connection; the next appends, of either
    path, prepare theirs again and commit."""
    store = make_store(encryption=Encryption(master_key=os.urandom(32)))
    leader, writer = _leader_and_writer(store)
    sealed = [replace(e, subject="ann") for e in events(100)]
    store.append_to_stream("a", 0, sealed)
    store.append_to_stream("b", 0, events(100))
    prepared = _prepared(leader, writer)
    assert any("FOR UPDATE" in text for text in prepared), prepared  # the counter's lock
    assert any("pg_notify" in text for text in prepared), prepared
    with sql(dsn, schema) as conn:
        conn.execute("INSERT INTO forgotten_subjects (subject) VALUES ('ann')")
    with pytest.raises(SubjectForgottenError):
        store.append_to_stream("a", 100, sealed)
    assert store.stream_info("a").stream_version == 100, "nothing of it was written"
    store.append_to_stream("b", 100, events(100))
    store.append_to_stream("c", 0, events(1))
    assert store.stream_info("b").stream_version == 200
    assert [e.event_id for e in store.read_all_streams_forward(201, 1000)] == list(range(201, 302))
    assert any("pg_notify" in text for text in _prepared(leader, writer))
