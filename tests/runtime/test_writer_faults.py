"""Faults on the write path and the read pool: the store carries on and callers get clear errors.

Everything here is provoked against the real PostgreSQL: statement timeouts (DSN options),
pg_cancel_backend and pg_terminate_backend of the store's own backends while they wait for the
event_counter row lock that another connection holds, test-only triggers in the test's own
schema, and a role of the test's own with a serializable default isolation.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql
from support import QueueSubscriber, events, wait_until, waiting_on_lock

from eventstore_actors import (
    EventData,
    EventStore,
    EventStoreError,
    SnapshotData,
    StoreUnavailableError,
    StreamNotFoundError,
)

MakeStore = Callable[..., EventStore]

#: Appends above 64 events take the COPY path, smaller ones the one-statement path.
SIZES = pytest.mark.parametrize("size", [3, 100], ids=["small", "copy"])


# Helpers --------------------------------------------------------------------------------------
def _app() -> str:
    return f"es-wf-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def started() -> Iterator[list[EventStore]]:
    """Stores started directly (custom DSNs or roles); stopped at teardown."""
    stores: list[EventStore] = []
    yield stores
    for store in reversed(stores):
        store.stop()


def _start(stores: list[EventStore], dsn: str, schema: str, **options: Any) -> EventStore:
    store = EventStore.start(dsn, schema=schema, **options)
    stores.append(store)
    return store


def _with_options(dsn: str, options: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, options=options)


@contextmanager
def _counter_locked(dsn: str, schema: str) -> Iterator[psycopg.Connection[Any]]:
    """Hold the event_counter row lock (as another process's append would) until exit."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            sql.SQL("SELECT last_event_id FROM {}.event_counter WHERE id = 1 FOR UPDATE").format(
                sql.Identifier(schema)
            )
        )
        try:
            yield conn
        finally:
            conn.rollback()


def _signal(dsn: str, function: str, pid: int) -> None:
    """pg_cancel_backend / pg_terminate_backend; a terminated backend is waited out."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SELECT {}(%s)").format(sql.Identifier(function)), (pid,))
        if function == "pg_terminate_backend":

            def gone() -> bool:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)
                ).fetchone()
                return row is not None and row[0] == 0

            wait_until(gone, what=f"backend {pid} to exit")


class _Call:
    """Runs `fn` in a thread; `result()` is None or the exception it raised."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self._outcome: list[BaseException | None] = []
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], object]) -> None:
        try:
            fn()
            self._outcome.append(None)
        except BaseException as exc:
            self._outcome.append(exc)

    def result(self, timeout: float = 30.0) -> BaseException | None:
        self._thread.join(timeout)
        assert self._outcome, "the call did not return in time"
        return self._outcome[0]


def _append_blocked_then(
    store: EventStore, dsn: str, schema: str, app: str, stream: str, size: int, signal: str
) -> BaseException | None:
    """Append while the counter lock is held elsewhere, send `signal` to the waiting writer
    backend, release the lock; returns what the append raised (None: it succeeded)."""
    with _counter_locked(dsn, schema):
        call = _Call(lambda: store.append_to_stream(stream, 0, events(size)))
        (pid,) = wait_until(lambda: waiting_on_lock(dsn, app), what="the writer to wait")
        _signal(dsn, signal, pid)
        outcome = call.result()
    return outcome


def _appended(store: EventStore, stream: str, expected: int, size: int) -> Callable[[], bool]:
    """A wait_until predicate: try the append; False while the store is unavailable."""

    def attempt() -> bool:
        try:
            store.append_to_stream(stream, expected, events(size))
        except StoreUnavailableError:
            return False
        return True

    return attempt


def _writer(store: EventStore) -> Any:
    return store._registry.peek("writer")


# A: losing the database is never a crash ------------------------------------------------------
def test_writer_backend_terminated_repeatedly_counts_no_restart(
    make_store: MakeStore, dsn: str, schema: str
) -> None:
    """Ten terminations of the writer's backend in the middle of appends (one restart
    allowed): every affected call fails with StoreUnavailableError, the next ones succeed,
    the writer is the same actor throughout and the store never stops."""
    app = _app()
    store = make_store(application_name=app, max_restarts=1, restart_window=60.0)
    store.append_to_stream("s", 0, events(1))
    writer = _writer(store)
    version = 1
    for round_ in range(10):
        size = 100 if round_ % 2 else 3
        outcome = _append_blocked_then(
            store, dsn, schema, app, f"lost-{round_}", size, "pg_terminate_backend"
        )
        assert isinstance(outcome, StoreUnavailableError), repr(outcome)
        assert "database unavailable" in str(outcome)
        if size > 64:  # COPY: killed while waiting for the lock, before COMMIT was sent
            assert not outcome.outcome_unknown
        wait_until(_appended(store, "s", version, 2), what="an append after the loss")
        version += 2
        assert store._registry.closed_reason is None
        assert _writer(store) is writer, "the writer was restarted"
    assert len(store.read_stream_forward("s")) == version
    for round_ in range(10):  # killed while waiting for the lock: nothing was stored
        with pytest.raises(StreamNotFoundError):
            store.read_stream_forward(f"lost-{round_}")


@pytest.mark.skipif(
    os.environ.get("EVENTSTORE_TEST_PGBOUNCER", "") not in ("", "0"),
    reason="through PgBouncer the writer has no backend of its own to kill: PgBouncer's server "
    "connections are shared, and its client connection outlives them",
)
def test_writer_reconnects_with_backoff_while_the_database_refuses_connections(
    make_store: MakeStore, dsn: str, schema: str
) -> None:
    """No new connections allowed and the writer's killed: calls fail fast and clearly, no
    restart is counted, and appends work again once connections are allowed."""
    role = f"es_wf_{uuid.uuid4().hex[:8]}"
    with _role(dsn, schema, role):
        store = make_store(username=role, max_restarts=1, restart_window=60.0)
        store.append_to_stream("s", 0, events(1))
        writer = _writer(store)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT 0").format(sql.Identifier(role)))
            pids = [
                int(r[0])
                for r in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE usename = %s AND query LIKE %s",
                    (role, "%UPDATE event_counter%"),
                ).fetchall()
            ]
        assert pids, "the writer's backend was not found"
        for pid in pids:
            _signal(dsn, "pg_terminate_backend", pid)
        for _ in range(6):
            with pytest.raises(StoreUnavailableError) as failed:
                store.append_to_stream("s", 1, events(1))
            assert not failed.value.outcome_unknown
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT -1").format(sql.Identifier(role)))
        wait_until(_appended(store, "s", 1, 1), what="an append once connections are allowed")
        assert store._registry.closed_reason is None
        assert _writer(store) is writer
        store.stop()


# 1: statement timeouts and cancels ------------------------------------------------------------
@SIZES
def test_append_recovers_after_a_statement_timeout_on_the_counter_lock(
    started: list[EventStore], dsn: str, schema: str, size: int
) -> None:
    """A statement_timeout hit while waiting for the counter lock fails that append clearly
    (nothing stored, outcome known) and the next append succeeds (the COPY path used to leave
    the connection in an aborted transaction for good)."""
    store = _start(started, _with_options(dsn, "-c statement_timeout=300"), schema)
    writer = _writer(store)
    with _counter_locked(dsn, schema), pytest.raises(StoreUnavailableError) as failed:
        store.append_to_stream("timed-out", 0, events(size))
    assert not failed.value.outcome_unknown, "the statement was cancelled: nothing committed"
    assert "statement timeout" in str(failed.value)
    store.append_to_stream("next", 0, events(size))
    store.append_to_stream("next", size, events(size))
    assert len(store.read_stream_forward("next")) == 2 * size
    assert store.read_all_streams_forward() == store.read_stream_forward("next")
    assert _writer(store) is writer


@SIZES
def test_cancel_of_the_writer_backend_gives_a_clear_error_and_the_store_carries_on(
    make_store: MakeStore, dsn: str, schema: str, size: int
) -> None:
    app = _app()
    store = make_store(application_name=app, max_restarts=1)
    writer = _writer(store)
    for round_ in range(3):  # more cancels than restarts allowed
        outcome = _append_blocked_then(
            store, dsn, schema, app, f"cancelled-{round_}", size, "pg_cancel_backend"
        )
        assert isinstance(outcome, StoreUnavailableError), repr(outcome)
        assert not outcome.outcome_unknown
        assert "cancel" in str(outcome)
    store.append_to_stream("after", 0, events(size))
    assert [e.stream_uuid for e in store.read_all_streams_forward()] == ["after"] * size
    assert store._registry.closed_reason is None
    assert _writer(store) is writer


# 2: one bad request in a group ----------------------------------------------------------------
_POISON = """
CREATE FUNCTION {schema}.wf_raise() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.stream_uuid = 'killer' THEN
        PERFORM pg_terminate_backend(pg_backend_pid());
    END IF;
    RAISE EXCEPTION 'poisoned stream %', NEW.stream_uuid;
END $$;
CREATE TRIGGER wf_poison BEFORE INSERT ON {schema}.streams FOR EACH ROW
    WHEN (NEW.stream_uuid IN ('poison', 'killer')) EXECUTE FUNCTION {schema}.wf_raise();
"""


def _install_poison(dsn: str, schema: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(_POISON.format(schema=schema).encode())


def _grouped(
    store: EventStore, dsn: str, schema: str, app: str, streams: list[str], size: int
) -> dict[str, BaseException | None]:
    """Append `size` events to each new stream in `streams`, all in one group commit: while a
    first append waits for the counter lock held elsewhere, the others queue up in order."""
    with _counter_locked(dsn, schema):
        first = _Call(lambda: store.append_to_stream("first", 0, events(1)))
        wait_until(lambda: waiting_on_lock(dsn, app), what="the writer to wait")
        writer = store._runtime.leader.writer  # the actor (its inbox, its pending appends)
        calls = {}
        for i, stream in enumerate(streams, start=1):
            calls[stream] = _Call(lambda s=stream: store.append_to_stream(s, 0, events(size)))
            # Queued: the first the actor took waits for the leading commit, the rest in its inbox.
            wait_until(
                lambda i=i: writer.actor_inbox.qsize() + len(writer._pending) >= i,
                what="the append to be queued",
            )
    assert first.result() is None
    return {stream: call.result() for stream, call in calls.items()}


@SIZES
def test_a_poisoned_request_fails_alone_and_the_rest_of_its_group_commits(
    make_store: MakeStore, dsn: str, schema: str, size: int
) -> None:
    _install_poison(dsn, schema)
    app = _app()
    store = make_store(application_name=app)
    sub = QueueSubscriber()
    handle = store.subscribe_to_all_streams("all", sub)
    sub.subscribed()
    streams = ["a", "b", "poison", "c", "d"]
    outcomes = _grouped(store, dsn, schema, app, streams, size)
    poisoned = outcomes.pop("poison")
    assert outcomes == dict.fromkeys(outcomes), outcomes
    assert isinstance(poisoned, StoreUnavailableError), repr(poisoned)
    assert not poisoned.outcome_unknown
    assert "poisoned stream poison" in str(poisoned)
    for stream in outcomes:
        assert len(store.read_stream_forward(stream)) == size
    stored = store.read_all_streams_forward()
    assert [e.event_id for e in stored] == list(range(1, 1 + 1 + 4 * size))
    delivered = sub.collect(handle, len(stored))
    assert [e.event_id for e in delivered] == [e.event_id for e in stored]


def test_a_connection_loss_after_the_split_keeps_what_already_committed(
    make_store: MakeStore, dsn: str, schema: str
) -> None:
    """Group [a, poison, b, killer, c]: the group fails on poison and is split; a and b
    commit; killer's transaction loses the connection; c is not attempted. a and b stay
    acknowledged and delivered, and the writer reconnects for the next append."""
    _install_poison(dsn, schema)
    app = _app()
    store = make_store(application_name=app, max_restarts=1)
    writer = _writer(store)
    sub = QueueSubscriber()
    handle = store.subscribe_to_all_streams("all", sub)
    sub.subscribed()
    outcomes = _grouped(store, dsn, schema, app, ["a", "poison", "b", "killer", "c"], 2)
    assert outcomes["a"] is None and outcomes["b"] is None, outcomes
    for stream in ("poison", "killer", "c"):
        assert isinstance(outcomes[stream], StoreUnavailableError), outcomes
    assert "poisoned stream poison" in str(outcomes["poison"])
    c_error = outcomes["c"]
    assert isinstance(c_error, StoreUnavailableError) and not c_error.outcome_unknown
    assert [e.stream_uuid for e in store.read_all_streams_forward()] == ["first"] + ["a"] * 2 + [
        "b"
    ] * 2
    delivered = sub.collect(handle, 5)
    assert [e.stream_uuid for e in delivered] == ["first", "a", "a", "b", "b"]
    wait_until(_appended(store, "c", 0, 1), what="an append after the loss")
    assert store._registry.closed_reason is None
    assert _writer(store) is writer


# 7: a serializable default on the role --------------------------------------------------------
@contextmanager
def _role(dsn: str, schema: str, role: str, *settings: str) -> Iterator[None]:
    """A LOGIN role of this test's own with rights on the test schema; dropped at exit."""
    ident = sql.Identifier(role)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident))
        for setting in settings:
            conn.execute(sql.SQL(f"ALTER ROLE {{}} SET {setting}").format(ident))  # type: ignore[arg-type]
        target = sql.Identifier(schema)
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(target, ident))
        conn.execute(sql.SQL("GRANT ALL ON ALL TABLES IN SCHEMA {} TO {}").format(target, ident))
        conn.execute(sql.SQL("GRANT ALL ON ALL SEQUENCES IN SCHEMA {} TO {}").format(target, ident))
    try:
        yield
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT -1").format(ident))
            pids = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE usename = %s", (role,)
            ).fetchall()
            for (pid,) in pids:
                conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
            conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
            conn.execute(sql.SQL("DROP ROLE {}").format(ident))


@SIZES
def test_two_stores_of_a_serializable_role_append_concurrently_without_failures(
    started: list[EventStore], dsn: str, schema: str, size: int
) -> None:
    role = f"es_wf_{uuid.uuid4().hex[:8]}"
    with _role(dsn, schema, role, "default_transaction_isolation = 'serializable'"):
        with psycopg.connect(dsn, user=role) as probe:
            row = probe.execute("SHOW default_transaction_isolation").fetchone()
            assert row == ("serializable",), "the role setting is not in effect"
        stores = [_start(started, dsn, schema, username=role) for _ in range(2)]
        rounds = 8

        def writer(n: int) -> None:
            store = stores[n % 2]
            for r in range(rounds):
                store.append_to_stream(f"w{n}", r * size, events(size))

        with ThreadPoolExecutor(max_workers=4) as pool:
            for future in [pool.submit(writer, n) for n in range(4)]:
                future.result(timeout=120.0)
        stored = stores[0].read_all_streams_forward(0, 100_000)
        assert [e.event_id for e in stored] == list(range(1, 4 * rounds * size + 1))
        for store in stores:
            store.stop()


# 3: no raw psycopg exception from reads, snapshots or delete_subscription ---------------------
def test_a_cancelled_read_gives_a_contract_error_and_reads_carry_on(
    make_store: MakeStore, dsn: str, schema: str
) -> None:
    app = _app()
    store = make_store(application_name=app, pool_size=1)
    store.append_to_stream("s", 0, events(2))
    with psycopg.connect(dsn) as locker:
        locker.execute(
            sql.SQL("LOCK TABLE {}.events IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(schema))
        )
        call = _Call(lambda: store.read_stream_forward("s"))
        (pid,) = wait_until(lambda: waiting_on_lock(dsn, app), what="the read to wait")
        _signal(dsn, "pg_cancel_backend", pid)
        outcome = call.result()
        locker.rollback()
    assert isinstance(outcome, StoreUnavailableError), repr(outcome)
    assert "cancel" in str(outcome)
    assert len(store.read_stream_forward("s")) == 2


def test_database_errors_of_snapshots_and_subscription_deletes_are_contract_errors(
    store: EventStore, dsn: str, schema: str
) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"""
            CREATE FUNCTION {schema}.wf_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'refused by a test trigger'; END $$;
            CREATE TRIGGER wf_snap BEFORE INSERT ON {schema}.snapshots FOR EACH ROW
                WHEN (NEW.source_uuid = 'poison') EXECUTE FUNCTION {schema}.wf_refuse();
            CREATE TRIGGER wf_sub BEFORE DELETE ON {schema}.subscriptions
                FOR EACH STATEMENT EXECUTE FUNCTION {schema}.wf_refuse();
            """.encode()
        )
    snapshot = SnapshotData("poison", 1, "tests.Snap", {"x": 1})
    with pytest.raises(StoreUnavailableError, match="refused by a test trigger"):
        store.record_snapshot(snapshot)
    with pytest.raises(StoreUnavailableError, match="refused by a test trigger"):
        store.delete_subscription("s", "sub")
    store.record_snapshot(SnapshotData("fine", 1, "tests.Snap", {"x": 1}))
    assert store.read_snapshot("fine").data == {"x": 1}


def test_an_event_the_database_refuses_fails_alone(
    store: EventStore, dsn: str, schema: str
) -> None:
    """A single append the database refuses (here a test trigger) is a clear contract error
    with a known outcome, and the writer goes on."""
    _install_poison(dsn, schema)
    with pytest.raises(StoreUnavailableError, match="poisoned stream poison") as failed:
        store.append_to_stream("poison", 0, [EventData({"x": 1}, "tests.X")])
    assert not failed.value.outcome_unknown
    store.append_to_stream("fine", 0, [EventData({"x": 1}, "tests.X")])


def test_reads_refused_by_the_database_give_contract_errors(
    started: list[EventStore], dsn: str, schema: str
) -> None:
    """A read the database refuses (a role without SELECT on the tables) raises a contract
    error naming the cause, never a raw psycopg exception."""
    role = f"es_wf_{uuid.uuid4().hex[:8]}"
    with _role(dsn, schema, role):
        store = _start(started, dsn, schema, username=role)
        store.append_to_stream("s", 0, events(1))
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("REVOKE SELECT ON {}.events, {}.snapshots FROM {}").format(
                    sql.Identifier(schema), sql.Identifier(schema), sql.Identifier(role)
                )
            )
        for read in (
            lambda: store.read_stream_forward("s"),
            lambda: store.read_all_streams_forward(),
            lambda: list(store.stream_all_forward()),
            lambda: store.read_snapshot("x"),
        ):
            with pytest.raises(StoreUnavailableError, match="permission denied"):
                read()
        store.stop()


def test_a_copy_append_refused_just_before_commit_is_not_outcome_unknown(
    make_store: MakeStore, dsn: str, schema: str
) -> None:
    """The COPY path's last round trip (advance streams and counter, notify, COMMIT) fails on
    its first statement: COMMIT never ran, so the outcome is known and the store goes on."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"""
            CREATE FUNCTION {schema}.wf_refuse_jump() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'jump refused by a test trigger'; END $$;
            CREATE TRIGGER wf_jump BEFORE UPDATE ON {schema}.streams FOR EACH ROW
                WHEN (NEW.stream_uuid = 'jump' AND NEW.stream_version - OLD.stream_version >= 100)
                EXECUTE FUNCTION {schema}.wf_refuse_jump();
            """.encode()
        )
    store = make_store(max_restarts=1)
    writer = _writer(store)
    store.append_to_stream("jump", 0, events(1))
    for _ in range(3):
        with pytest.raises(StoreUnavailableError, match="jump refused") as failed:
            store.append_to_stream("jump", 1, events(100))
        assert not failed.value.outcome_unknown
    store.append_to_stream("jump", 1, events(99))
    assert len(store.read_stream_forward("jump")) == 100
    assert [e.event_id for e in store.read_all_streams_forward()] == list(range(1, 101))
    assert _writer(store) is writer


def test_a_statement_refused_for_its_data_is_not_store_unavailable(
    store: EventStore, dsn: str, schema: str
) -> None:
    """The database refusing what a call carries (here a CHECK the application added: a
    constraint violation, SQLSTATE class 23) is the caller's bad input, not the database
    being away: an EventStoreError that is not a StoreUnavailableError, on every path (the
    writer, in one transaction or COPY; the caller's transaction; the pool), with nothing
    written, and the store goes on."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "ALTER TABLE {}.events ADD CONSTRAINT wf_forbidden "
                "CHECK (event_type <> 'tests.Forbidden'); "
                "ALTER TABLE {}.snapshots ADD CONSTRAINT wf_forbidden "
                "CHECK (source_type <> 'tests.Forbidden')"
            ).format(sql.Identifier(schema), sql.Identifier(schema))
        )
    forbidden = EventData({"x": 1}, "tests.Forbidden")
    refused: list[Callable[[], object]] = [
        lambda: store.append_to_stream("one", 0, [forbidden]),
        lambda: store.append_to_stream("copy", 0, [*events(99), forbidden]),
        lambda: store.record_snapshot(SnapshotData("src", 1, "tests.Forbidden", {"x": 1})),
    ]
    with psycopg.connect(dsn) as caller:
        refused.append(lambda: store.append_to_stream("outbox", 0, [forbidden], conn=caller))
        for call in refused:
            with pytest.raises(EventStoreError, match="wf_forbidden") as failed:
                call()
            assert not isinstance(failed.value, StoreUnavailableError), repr(failed.value)
        caller.rollback()
    assert store.read_all_streams_forward() == []
    store.append_to_stream("fine", 0, events(2))
    assert len(store.read_stream_forward("fine")) == 2
