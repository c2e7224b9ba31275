"""Supervision: restarts with fresh connections, the restart intensity limit, clean stops."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import psycopg
import pytest
from support import pgbouncer

from eventstore_actors import (
    EventData,
    Events,
    EventStore,
    StoreUnavailableError,
    StreamNotFoundError,
)
from eventstore_actors.actors.supervised import Crash

MakeStore = Callable[..., EventStore]


def _backends(dsn: str, app: str) -> list[int]:
    """The store's connections: its backends, and in PgBouncer mode its PgBouncer clients
    (counted as -1) instead of PgBouncer's server connections, which outlive any client."""
    servers = pgbouncer.suite_server_ports()
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid, client_port FROM pg_stat_activity WHERE application_name = %s", (app,)
        ).fetchall()
    return [int(r[0]) for r in rows if r[1] not in servers] + [-1] * pgbouncer.suite_clients(app)


def _kill(dsn: str, pids: list[int]) -> None:
    """Terminate backends and wait until they are gone (termination is asynchronous)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))

        def gone() -> bool:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)
            ).fetchone()
            return row is not None and row[0] == 0

        _wait(gone)


def _wait(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def _event(n: int) -> list[EventData]:
    return [EventData({"n": n}, "Numbered")]


def _kill_mid_append(store: EventStore, dsn: str, app: str, version: int) -> None:
    """Kill the writer's backend while it is storing a large append: the caller must hear
    StoreUnavailableError, and nothing of that append may be stored."""
    outcome: list[BaseException | None] = []
    big = [EventData({"n": i, "pad": "x" * 100}, "Big") for i in range(200_000)]

    def append() -> None:
        try:
            store.append_to_stream("big", 0, big)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=append)
    thread.start()
    with psycopg.connect(dsn, autocommit=True) as conn:

        def copying() -> bool:
            row = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
                " AND state = 'active' AND query LIKE 'COPY%%'",
                (app,),
            ).fetchone()
            if row:
                conn.execute("SELECT pg_terminate_backend(%s)", (row[0],))
            return row is not None or bool(outcome)

        _wait(copying, timeout=30.0)
    thread.join(30.0)
    assert isinstance(outcome[0], StoreUnavailableError), outcome
    assert not outcome[0].outcome_unknown, "the connection died before the commit was sent"
    assert len(store.read_stream_forward("s")) == version


def test_writer_reconnects_when_its_idle_connection_was_lost(
    make_store: MakeStore, dsn: str
) -> None:
    app = f"es-test-{uuid.uuid4().hex[:8]}"
    store = make_store(application_name=app)
    store.append_to_stream("s", 0, _event(1))
    _kill(dsn, _backends(dsn, app))
    store.append_to_stream("s", 1, _event(2))  # no error: the dead idle connection is replaced
    assert [e.data["n"] for e in store.read_stream_forward("s")] == [1, 2]


def test_writer_reconnects_after_its_connection_dies_mid_append(
    make_store: MakeStore, dsn: str
) -> None:
    """A lost connection is environmental: the writer reconnects, it is not restarted."""
    app = f"es-test-{uuid.uuid4().hex[:8]}"
    store = make_store(application_name=app, max_restarts=1, restart_window=60.0)
    store.append_to_stream("s", 0, _event(1))
    writer = store._registry.peek("writer")
    _kill_mid_append(store, dsn, app, 1)
    store.append_to_stream("s", 1, _event(2))
    _kill_mid_append(store, dsn, app, 2)  # past the restart limit, were it counted
    store.append_to_stream("s", 2, _event(3))
    assert [e.data["n"] for e in store.read_stream_forward("s")] == [1, 2, 3]
    with pytest.raises(StreamNotFoundError):
        store.read_stream_forward("big")
    assert store._registry.peek("writer") is writer
    assert store._registry.closed_reason is None


def test_restart_intensity_exceeded_stops_the_store_and_says_why(
    make_store: MakeStore, dsn: str
) -> None:
    """Only a real failure (a bug: here an injected Crash) restarts the writer; too many
    restarts stop the store."""
    app = f"es-test-{uuid.uuid4().hex[:8]}"
    store = make_store(application_name=app, max_restarts=1, restart_window=60.0)
    store.append_to_stream("s", 0, _event(1))
    first = store._registry.peek("writer")
    assert first is not None
    first.tell(Crash(RuntimeError("injected bug")))  # restart 1: within the limit
    _wait(lambda: store._registry.peek("writer") not in (None, first))
    store.append_to_stream("s", 1, _event(2))
    second = store._registry.peek("writer")
    assert second is not None
    second.tell(Crash(RuntimeError("injected bug")))  # restart 2: past the limit

    def stopped() -> bool:
        try:
            store.append_to_stream("s", 2, _event(3))
        except StoreUnavailableError as exc:
            return "writer failed 2 times" in str(exc)
        return False

    _wait(stopped)
    with pytest.raises(StoreUnavailableError, match="event store is stopped"):
        store.subscribe_to_all_streams("x", _Sink())
    store.stop()
    _wait(lambda: not _backends(dsn, app))


class _Sink:
    def tell(self, message: object) -> None:
        pass


def test_stop_leaves_no_thread_and_no_connection(make_store: MakeStore, dsn: str) -> None:
    app = f"es-test-{uuid.uuid4().hex[:8]}"
    threads_before = set(threading.enumerate())
    store = make_store(application_name=app)
    store.append_to_stream("s", 0, _event(1))
    store.subscribe_to_all_streams("sub", _Sink())
    store.subscribe_to_stream("s", "sub", _Sink())
    assert _backends(dsn, app)
    began = time.monotonic()
    store.stop()
    assert time.monotonic() - began < 3.0, "stop must be quick"
    leftover = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
    # The process's deadline watchdog (shared by every store) ends on its own once nothing
    # is guarded for a moment (storage/deadline.py); every other thread is gone already.
    assert [t for t in leftover if t.name != "eventstore-watchdog"] == []
    _wait(lambda: not any(t.is_alive() for t in leftover), timeout=10.0)
    # Every connection is closed by then; the server ends its backends a moment later.
    _wait(lambda: not _backends(dsn, app), timeout=2.0)
    store.stop()  # idempotent


def test_a_stopped_store_refuses_calls_clearly(make_store: MakeStore) -> None:
    store = make_store()
    store.stop()
    with pytest.raises(StoreUnavailableError, match="stopped"):
        store.append_to_stream("s", 0, _event(1))


def test_a_database_outage_fails_calls_but_never_stops_the_store(
    make_store: MakeStore, dsn: str, schema: str
) -> None:
    """During an outage calls fail with StoreUnavailableError; no actor crash-loops into the
    restart limit (set to 1 here), and everything works again once the database is back."""
    role = f"es_outage_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as admin_conn:
        admin_conn.execute(f"CREATE ROLE {role} LOGIN")
        admin_conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        admin_conn.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA {schema} TO {role}")
        admin_conn.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA {schema} TO {role}")
    store: EventStore | None = None
    try:
        store = make_store(username=role, max_restarts=1, restart_window=60.0)
        inbox: list[object] = []
        store.subscribe_to_all_streams("sub", _ListSink(inbox))
        store.append_to_stream("s", 0, _event(1))
        _wait(lambda: _delivered(inbox) == [1])
        with psycopg.connect(dsn, autocommit=True) as admin_conn:
            admin_conn.execute(f"ALTER ROLE {role} CONNECTION LIMIT 0")  # no new connections
            pids = [
                int(r[0])
                for r in admin_conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE usename = %s", (role,)
                ).fetchall()
            ]
        _kill(dsn, pids)
        for _ in range(3):
            with pytest.raises(StoreUnavailableError):
                store.append_to_stream("s", 1, _event(2))
        with psycopg.connect(dsn, autocommit=True) as admin_conn:
            admin_conn.execute(f"ALTER ROLE {role} CONNECTION LIMIT -1")

        def appended() -> bool:
            try:
                store.append_to_stream("s", 1, _event(2))
            except StoreUnavailableError:
                return False
            return True

        _wait(appended)
        _wait(lambda: _delivered(inbox) == [1, 2])
    finally:
        if store is not None:
            store.stop()  # before the role goes (the fixture's second stop is a no-op)
        with psycopg.connect(dsn, autocommit=True) as admin_conn:
            admin_conn.execute(f"ALTER ROLE {role} CONNECTION LIMIT -1")
            rows = admin_conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE usename = %s", (role,)
            ).fetchall()
            _kill(dsn, [int(r[0]) for r in rows])
            admin_conn.execute(f"DROP OWNED BY {role}")
            admin_conn.execute(f"DROP ROLE {role}")


class _ListSink:
    def __init__(self, inbox: list[object]) -> None:
        self.inbox = inbox

    def tell(self, message: object) -> None:
        self.inbox.append(message)
        if isinstance(message, Events):
            message.subscription.ack(message.events)


def _delivered(inbox: list[object]) -> list[int]:
    return [e.data["n"] for m in list(inbox) if isinstance(m, Events) for e in m.events]
