"""Orphaned backends: a connection given up client-side while its backend lives on.

A store reaches PostgreSQL through `support.proxy.Proxy`, which freezes one of its connections
(a silent, half-open path: the server keeps waiting for the client, as behind a lost network
or a hung middlebox that still acknowledges, so TCP keepalives never end it). The client gives
the connection up after io_timeout; what its backend holds must not outlive that: the counter
row lock of a large append (taken before the COPY, held until its COMMIT), which blocks every
appender of every process, or a subscription's advisory lock, which keeps another process
from taking the subscription over.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import sql
from support import client_ports, events, wait_until, waiting_on_lock
from support.proxy import FAST, Proxy

from eventstore_actors import ANY_VERSION, EventStore, StoreUnavailableError, StreamNotFoundError
from eventstore_actors.config import Settings
from eventstore_actors.storage import locks
from eventstore_actors.storage.sessions import Session
from eventstore_actors.subscriptions.hub import LockHub
from eventstore_actors.subscriptions.lock import LockLost

#: How long after the give-up the orphan may take to go: a connect and a statement, well
#: under io_timeout (an appender waiting for the lock meanwhile fails after io_timeout).
PROMPT = 4.0


def _exists(dsn: str, pid: int) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))
        found = row.fetchone()
    return found is not None and found[0] == 1


@contextmanager
def _table_locked(dsn: str, schema: str, table: str) -> Iterator[None]:
    """Keep `table` from being written until exit: a COPY into events waits, after its first
    round trip took the counter row lock; so does a forget (data_keys)."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            sql.SQL("LOCK TABLE {}.{} IN SHARE MODE").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
        )
        try:
            yield
        finally:
            conn.rollback()


def _appended(store: EventStore, stream: str) -> Callable[[], bool]:
    def attempt() -> bool:
        try:
            store.append_to_stream(stream, ANY_VERSION, events(1))
        except StoreUnavailableError:
            return False
        return True

    return attempt


def _frozen_mid_copy(
    store: EventStore, proxy: Proxy, dsn: str, schema: str, app: str, *, blackhole: bool = False
) -> tuple[int, BaseException | None]:
    """A large append (the COPY path) whose writer connection freezes while its backend
    holds the counter row lock; returns that backend and what the append raised. With
    `blackhole`, new connections through the proxy hang from the freeze on."""
    return _frozen_holding_the_counter(
        lambda: store.append_to_stream("big", 0, events(500)),
        "events",
        proxy,
        dsn,
        schema,
        app,
        blackhole=blackhole,
    )


def _frozen_holding_the_counter(
    call: Callable[[], object],
    table: str,
    proxy: Proxy,
    dsn: str,
    schema: str,
    app: str,
    *,
    blackhole: bool = False,
) -> tuple[int, BaseException | None]:
    """`call` on a store named `app`, whose connection freezes while its backend holds the
    counter row lock and waits to write `table`; that backend and what `call` raised."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=run, daemon=True)
    with _table_locked(dsn, schema, table):
        caller.start()
        (pid,) = wait_until(lambda: waiting_on_lock(dsn, app), what=f"a write to {table}")
        assert proxy.freeze(client_ports(dsn, [pid])) == 1
        proxy.blackhole(blackhole)
    caller.join(FAST["io_timeout"] + 10.0)
    assert outcome, "the frozen call did not return"
    return pid, outcome[0]


# The writer ----------------------------------------------------------------------------------
def test_a_frozen_large_append_does_not_leave_the_counter_locked(
    proxied_store: Callable[..., EventStore],
    make_store: Callable[..., EventStore],
    proxy: Proxy,
    dsn: str,
    schema: str,
) -> None:
    """The frozen append fails (nothing stored); its backend, still waiting for the client
    with the counter row lock, is ended at once, so another store's appends succeed again
    without the first store appending again (they used to time out until it did)."""
    app = f"es-orphan-{uuid.uuid4().hex[:8]}"
    frozen = proxied_store(application_name=app)
    other = make_store(**FAST)
    other.append_to_stream("warm", 0, events(1))

    pid, outcome = _frozen_mid_copy(frozen, proxy, dsn, schema, app)
    assert isinstance(outcome, StoreUnavailableError), repr(outcome)
    assert not outcome.outcome_unknown  # COMMIT was never sent

    wait_until(_appended(other, "other"), timeout=PROMPT, what="another store's append")
    assert not _exists(dsn, pid)
    with pytest.raises(StreamNotFoundError):
        other.read_stream_forward("big")
    frozen.append_to_stream("after", 0, events(1))  # and the frozen store carries on


def test_an_orphan_the_writer_could_not_end_at_once_is_ended_when_the_store_stops(
    proxied_store: Callable[..., EventStore],
    make_store: Callable[..., EventStore],
    proxy: Proxy,
    dsn: str,
    schema: str,
) -> None:
    """New connections hang too when the writer gives up (the at-once attempt fails): the
    orphan keeps the counter locked until the store stops, which ends it (it never did)."""
    app = f"es-orphan-{uuid.uuid4().hex[:8]}"
    frozen = proxied_store(application_name=app)
    other = make_store(**FAST)
    other.append_to_stream("warm", 0, events(1))

    pid, outcome = _frozen_mid_copy(frozen, proxy, dsn, schema, app, blackhole=True)
    assert isinstance(outcome, StoreUnavailableError), repr(outcome)
    assert _exists(dsn, pid), "the orphan went without the store's help"
    proxy.blackhole(False)

    frozen.stop()
    wait_until(lambda: not _exists(dsn, pid), timeout=PROMPT, what="the orphan to be ended")
    wait_until(_appended(other, "other"), timeout=PROMPT, what="another store's append")


# The read pool ----------------------------------------------------------------------------
def test_a_forget_whose_connection_froze_does_not_leave_the_counter_locked(
    proxied_store: Callable[..., EventStore],
    make_store: Callable[..., EventStore],
    proxy: Proxy,
    dsn: str,
    schema: str,
) -> None:
    """`forget_subject` holds the counter row lock across round trips on a pooled connection:
    given up frozen, its backend is ended at once like the writer's."""
    app = f"es-orphan-{uuid.uuid4().hex[:8]}"
    frozen = proxied_store(application_name=app)
    other = make_store(**FAST)
    other.append_to_stream("warm", 0, events(1))

    pid, outcome = _frozen_holding_the_counter(
        lambda: frozen.forget_subject("alice"), "data_keys", proxy, dsn, schema, app
    )
    assert isinstance(outcome, StoreUnavailableError), repr(outcome)

    wait_until(_appended(other, "other"), timeout=PROMPT, what="another store's append")
    assert not _exists(dsn, pid)
    assert not other.is_forgotten("alice")


# Lock sessions -------------------------------------------------------------------------------
def test_a_lost_lock_session_ends_its_backend_at_once(proxy: Proxy, dsn: str, schema: str) -> None:
    """A lock connection given up on a frozen path: its backend, holding the advisory lock,
    is ended at once, not only when the owner next connects (it may never), so another
    process can take the lock over."""
    session = Session(Settings(dsn=proxy.dsn(dsn), schema=schema, **FAST))
    key = f"{schema}.orphan-test"
    conn = session.get()
    assert locks.try_lock(conn, key)
    pid = session.pid
    assert pid is not None
    assert proxy.freeze(client_ports(dsn, [pid])) == 1

    session.lost()
    try:
        wait_until(lambda: not _exists(dsn, pid), timeout=PROMPT, what="the orphan to be ended")
        with psycopg.connect(dsn, autocommit=True) as other:
            assert wait_until(lambda: locks.try_lock(other, key), timeout=PROMPT)
    finally:
        proxy.thaw()
        session.close()


def test_the_shared_lock_connection_ends_an_orphan_it_could_not_end_at_once_as_it_closes(
    proxy: Proxy, dsn: str, schema: str
) -> None:
    """New connections hang too when the shared lock connection is given up: its backend
    keeps the subscriptions' locks until the store closes the hub, which ends it then."""
    hub = LockHub(Settings(dsn=proxy.dsn(dsn), schema=schema, **FAST))
    key = f"{schema}.orphan-test"
    try:
        generation = hub.try_lock(key)
        assert generation is not None
        pid = hub.backend()
        assert pid is not None
        assert proxy.freeze(client_ports(dsn, [pid])) == 1
        proxy.blackhole(True)
        with pytest.raises(LockLost):
            hub.run(key, generation, lambda c: c.execute("SELECT 1"))
        assert _exists(dsn, pid), "the orphan went without the hub's help"
        proxy.blackhole(False)
    finally:
        hub.close()
    wait_until(lambda: not _exists(dsn, pid), timeout=PROMPT, what="the orphan to be ended")
