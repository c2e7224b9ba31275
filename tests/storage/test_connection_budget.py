"""The connection budget (`shared_lock_session=True`): a store's subscriptions share one lock
connection, so 200 subscriptions run within the read pool plus a handful of connections, and
losing that connection makes every one of them reconnect and resume without loss.

Real PostgreSQL; connections are counted in pg_stat_activity by application_name and the
shared lock connection is killed with pg_terminate_backend.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from support import checkpoints, events, kill_backends, lock_backends, wait_until

from eventstore_actors import Events, EventStore, Subscribed, SubscriptionStopped
from eventstore_actors.config import Settings
from eventstore_actors.subscriptions.hub import LockHub, SharedLockSession
from eventstore_actors.subscriptions.info import lock_key
from eventstore_actors.subscriptions.lock import LockLost

MakeStore = Callable[..., EventStore]
COUNT = 200
POOL = 4


class Recorder:
    """Acks every batch at once and keeps the event ids it was sent (thread-safe)."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.subscribed = 0
        self.stopped: str | None = None
        self._mutex = threading.Lock()

    def tell(self, message: Any) -> None:
        if isinstance(message, Subscribed):
            with self._mutex:
                self.subscribed += 1
        elif isinstance(message, Events):
            with self._mutex:
                self.ids.extend(e.event_id for e in message.events)
            message.subscription.ack(message.events[-1])
        elif isinstance(message, SubscriptionStopped):
            self.stopped = message.reason

    def seen(self) -> set[int]:
        with self._mutex:
            return set(self.ids)


def backends(dsn: str, application_name: str) -> list[tuple[int, str]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid, backend_type FROM pg_stat_activity WHERE application_name = %s",
            (application_name,),
        ).fetchall()
    return [(int(pid), str(kind)) for pid, kind in rows]


@pytest.fixture
def many(make_store: MakeStore) -> tuple[EventStore, str, list[Recorder]]:
    app = f"budget-{uuid.uuid4().hex[:8]}"
    store = make_store(shared_lock_session=True, pool_size=POOL, application_name=app)
    recorders = [Recorder() for _ in range(COUNT)]
    for i, recorder in enumerate(recorders):
        # Various names and start points; all-streams, as a service's projections would be.
        store.subscribe_to_all_streams(f"projection-{i}-{uuid.uuid4().hex[:4]}", recorder)
    wait_until(lambda: all(r.subscribed for r in recorders), what="every Subscribed")
    return store, app, recorders


def test_200_subscriptions_use_the_pool_and_a_handful_of_connections(
    many: tuple[EventStore, str, list[Recorder]], dsn: str, schema: str
) -> None:
    store, app, recorders = many
    store.append_to_stream("s", 0, events(3))
    ids = {e.event_id for e in store.read_all_streams_forward(0, 10)}
    wait_until(
        lambda: all(r.seen() >= ids for r in recorders),
        timeout=30.0,
        what="every subscription to receive the committed events",
    )
    used = backends(dsn, app)
    # The pool, the writer, the publisher's LISTEN connection and the lock hub, and the
    # retention scavenger's while it looks; no more.
    assert len(used) <= POOL + 5, used
    assert len(lock_backends_of(dsn, app)) == 1  # every advisory lock on one connection
    assert not any(r.stopped for r in recorders)
    # The acks' checkpoints are stored (batched writes on the lock connection).
    last = max(ids)
    wait_until(
        lambda: (
            [v for (stream, _), v in checkpoints(dsn, schema).items() if stream == "$all"]
            == [last] * COUNT
        ),
        what="every checkpoint stored",
    )


def lock_backends_of(dsn: str, app: str) -> list[int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT DISTINCT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = %s",
            (app,),
        ).fetchall()
    return [int(r[0]) for r in rows]


def test_killing_the_lock_connection_makes_every_subscription_resume(
    many: tuple[EventStore, str, list[Recorder]], dsn: str
) -> None:
    store, app, recorders = many
    store.append_to_stream("s", 0, events(2))
    first = {e.event_id for e in store.read_all_streams_forward(0, 10)}
    wait_until(lambda: all(r.seen() >= first for r in recorders), timeout=30.0)
    (hub,) = lock_backends_of(dsn, app)
    with psycopg.connect(dsn, autocommit=True) as conn:
        locks = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s", (hub,)
        ).fetchone()
    assert locks is not None and locks[0] >= COUNT
    assert kill_backends(dsn, [hub]) == 1
    # Appended while the locks are being retaken: nothing may be lost.
    store.append_to_stream("s", 2, events(3, start=3))

    def retaken() -> bool:
        pids = lock_backends_of(dsn, app)
        if len(pids) != 1 or pids[0] == hub:
            return False
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(  # the subscriptions' own locks (not the shared release mark)
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s "
                "AND mode = 'ExclusiveLock'",
                (pids[0],),
            ).fetchone()
        return row is not None and row[0] == COUNT

    wait_until(retaken, timeout=30.0, what="every lock retaken on a new connection")
    every = {e.event_id for e in store.read_all_streams_forward(0, 10)}
    assert len(every) == 5
    wait_until(
        lambda: all(r.seen() >= every for r in recorders),
        timeout=30.0,
        what="every subscription to resume without loss",
    )
    assert not any(r.stopped for r in recorders)


def test_the_shared_lock_excludes_other_stores_and_the_same_store(make_store: MakeStore) -> None:
    """Advisory locks are re-entrant within a session: the hub itself must refuse a second
    subscriber of a name it holds; another store's hub is refused by PostgreSQL."""
    from eventstore_actors import SubscriptionAlreadyExistsError

    first = make_store(shared_lock_session=True)
    second = make_store(shared_lock_session=True)
    held = Recorder()
    sub = first.subscribe_to_all_streams("one", held)
    with pytest.raises(SubscriptionAlreadyExistsError):
        first.subscribe_to_all_streams("one", Recorder())
    with pytest.raises(SubscriptionAlreadyExistsError):
        second.subscribe_to_all_streams("one", Recorder())
    sub.unsubscribe()  # released at once: the name is free for the other store
    again = Recorder()
    second.subscribe_to_all_streams("one", again)
    first.append_to_stream("s", 0, events(1))
    wait_until(lambda: again.seen(), what="the other store's subscriber to receive the event")


def test_shared_lock_session_must_be_a_bool(make_store: MakeStore) -> None:
    from eventstore_actors import ConfigError

    with pytest.raises(ConfigError, match="shared_lock_session"):
        make_store(shared_lock_session="yes")


# The lock hub itself (issue 17 item 12b: both suspicions cleared) ----------------------------
def _hub(dsn: str, schema: str) -> LockHub:
    hub = LockHub(Settings(dsn=dsn, schema=schema, application_name="eventstore-actors"))
    hub.connect()
    return hub


def _sleeping(dsn: str, pid: int) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT query LIKE '%%pg_sleep%%' FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()
    return bool(row and row[0])


def test_hub_alive_while_busy_says_what_the_server_holds(dsn: str, schema: str) -> None:
    """While another session's statement holds the hub's connection, `alive()` answers at once
    from what the hub knows, and that is what the server holds: the lock is granted to the hub's
    backend then, and once the backend is gone the busy statement fails at once and every lock
    of that connection reads as lost (the same answer a dedicated connection's `alive()` gives:
    its socket is only read when it has something to say)."""
    hub = _hub(dsn, schema)
    try:
        busy = SharedLockSession(hub, lock_key(schema, "$all", "busy"))
        other = SharedLockSession(hub, lock_key(schema, "$all", "other"))
        assert busy.try_lock() and other.try_lock()
        pid = hub.backend()
        assert pid is not None
        outcome: list[BaseException] = []

        def sleep() -> None:
            try:
                busy.run(lambda c: c.execute("SELECT pg_sleep(30)"))
            except BaseException as exc:
                outcome.append(exc)

        sleeper = threading.Thread(target=sleep)
        sleeper.start()
        wait_until(lambda: _sleeping(dsn, pid), what="the hub's connection busy")
        started = time.monotonic()
        assert other.alive() and busy.alive()
        assert time.monotonic() - started < 0.5  # not waiting for the busy statement
        assert lock_backends(dsn, lock_key(schema, "$all", "other")) == [pid]
        assert kill_backends(dsn, [pid]) == 1
        sleeper.join(timeout=10)
        assert not sleeper.is_alive() and isinstance(outcome[0], LockLost)
        assert not other.alive() and not busy.alive()
        assert lock_backends(dsn, lock_key(schema, "$all", "other")) == []
    finally:
        hub.close()


def test_hub_unlock_racing_a_relock_leaves_no_lock_behind(dsn: str, schema: str) -> None:
    """`unlock` forgets the key once its statement ran, under the hub's mutex: a second
    subscriber of the name in this store, retrying meanwhile, is refused while it is held here
    and takes it after; every take is matched by one release on the server (advisory locks are
    re-entrant: a count left over would keep the name from every other process), so the name
    ends free for any other session. (An unlock statement that fails without losing the
    connection leaves the key held, retried by the hub's thread; a lost connection releases
    every lock with it.)"""
    hub = _hub(dsn, schema)
    key = lock_key(schema, "$all", "race")
    try:
        pid = hub.backend()
        for _ in range(20):
            first, second = SharedLockSession(hub, key), SharedLockSession(hub, key)
            assert first.try_lock()
            assert not second.try_lock()  # held here: refused, as another process would be
            go = threading.Barrier(2)
            took: list[bool] = []

            def relock(
                session: SharedLockSession = second,
                took: list[bool] = took,
                go: threading.Barrier = go,
            ) -> None:
                go.wait()
                deadline = time.monotonic() + 5
                while not session.try_lock() and time.monotonic() < deadline:
                    pass
                took.append(session.locked)

            thread = threading.Thread(target=relock)
            thread.start()
            go.wait()
            first.drop()
            thread.join(timeout=10)
            assert took == [True]
            assert lock_backends(dsn, key) == [pid]
            second.drop()
            assert lock_backends(dsn, key) == []  # held once, released once
        with psycopg.connect(dsn, autocommit=True) as conn:  # free for any other session
            row = conn.execute(
                "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,)
            ).fetchone()
            assert row is not None and row[0] is True
    finally:
        hub.close()


def test_hub_keeps_the_lock_until_the_last_checkpoint_is_written(dsn: str, schema: str) -> None:
    """A subscription that stops hands its last acked checkpoint to the hub's unlock; when
    that write fails for a reason of the moment (here: another session holds the row lock and
    the write is cancelled, a real pg_cancel_backend), the lock stays held and the hub's thread
    writes the checkpoint once it can, then lets the lock go. Before: the key was forgotten
    with the write still queued, so the thread dropped it and the events since the previous
    checkpoint came again (issue 17 item 21, in the shared mode)."""
    table = f'"{schema}".subscriptions'
    where = "stream_uuid = '$all' AND subscription_name = 'final'"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {table} (stream_uuid, subscription_name, last_seen) "
            "VALUES ('$all', 'final', 0)"
        )
    hub = _hub(dsn, schema)
    key = lock_key(schema, "$all", "final")
    blocker = psycopg.connect(dsn)
    try:
        pid = hub.backend()
        assert pid is not None
        session = SharedLockSession(hub, key)
        assert session.try_lock()
        session.advance("$all", "final", 5)
        wait_until(lambda: checkpoints(dsn, schema)[("$all", "final")] == 5)
        blocker.execute(f"SELECT 1 FROM {table} WHERE {where} FOR UPDATE")
        session.advance("$all", "final", 9)  # the last ack: its write waits for the row

        dropper = threading.Thread(target=session.drop)
        dropper.start()

        def cancelled_until_dropped() -> bool:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(
                    "SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
                    "WHERE pid = %s AND wait_event_type = 'Lock'",
                    (pid,),
                )
            dropper.join(timeout=0.05)
            return not dropper.is_alive()

        wait_until(cancelled_until_dropped, what="the unlock's checkpoint write cancelled")
        assert checkpoints(dsn, schema)[("$all", "final")] == 5  # not written yet
        assert lock_backends(dsn, key) == [pid]  # so the name is not free yet
        blocker.rollback()
        wait_until(
            lambda: checkpoints(dsn, schema)[("$all", "final")] == 9,
            what="the last checkpoint written",
        )
        wait_until(lambda: lock_backends(dsn, key) == [], what="the lock released")
    finally:
        blocker.close()
        hub.close()


# What an idle subscription costs on the shared connection ------------------------------------
def test_idle_subscriptions_rest_between_health_checks(make_store: MakeStore) -> None:
    """Once live with nothing to do, a subscription takes no Tick until its next health check
    (an idle store of 1,000 subscriptions is not woken 5,000 times a second); an event ends
    the rest at once."""
    store = make_store(shared_lock_session=True)
    recorders = [Recorder() for _ in range(3)]
    for i, recorder in enumerate(recorders):
        store.subscribe_to_all_streams(f"idle-{i}", recorder)
    wait_until(lambda: all(r.subscribed for r in recorders), what="every Subscribed")
    controls = [c for _, c in store._runtime.registry.members("subscription:")]
    assert len(controls) == 3

    def resting() -> bool:
        now = time.monotonic()
        return all(now < c.quiet_until <= now + 1.0 for c in controls)

    wait_until(resting, what="every idle subscription resting until its health check")
    store.append_to_stream("s", 0, events(1))
    (event,) = store.read_all_streams_forward(0, 10)
    wait_until(
        lambda: all(event.event_id in r.seen() for r in recorders), what="the event delivered"
    )


def test_the_hub_probe_tells_which_subscriptions_have_parked_events_marked(
    dsn: str, schema: str, make_store: MakeStore
) -> None:
    """One statement for all of the hub's subscriptions: those with parked events marked for
    replay (by any store) read them; the others skip the read on their health check."""
    store = make_store(shared_lock_session=True)
    marked, quiet = Recorder(), Recorder()
    store.subscribe_to_all_streams("marked", marked)
    store.subscribe_to_all_streams("quiet", quiet)
    wait_until(lambda: bool(marked.subscribed and quiet.subscribed), what="both Subscribed")
    hub = store._subscriptions._hub
    assert hub is not None
    wait_until(
        lambda: (
            hub.replay_marked(("$all", "marked")) is False
            and hub.replay_marked(("$all", "quiet")) is False
        ),
        what="a probe finding no parked events marked",
    )
    assert hub.replay_marked(("$all", "not-subscribed-here")) is None  # not asked: unknown
    store.append_to_stream("s", 0, events(1))
    (event,) = store.read_all_streams_forward(0, 10)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL(
                "INSERT INTO {}.parked_events (stream_uuid, subscription_name, event_id, replay)"
                " VALUES ('$all', 'marked', %s, true)"
            ).format(psycopg.sql.Identifier(schema)),
            (event.event_id,),
        )
    wait_until(
        lambda: hub.replay_marked(("$all", "marked")) is True, what="the probe to see the mark"
    )
    assert hub.replay_marked(("$all", "quiet")) is False
    # The marked subscription's health check reads and delivers it again.
    wait_until(lambda: marked.ids.count(event.event_id) >= 2, what="the marked event replayed")


def test_after_the_hub_connection_is_killed_a_name_taken_elsewhere_delivers_nothing(
    make_store: MakeStore, dsn: str, schema: str
) -> None:
    """Fencing on the shared connection: killing it loses every lock of the store at once.
    A name another session takes meanwhile delivers nothing here while that session holds
    it; the store's other subscriptions retake their locks and go on."""
    store = make_store(shared_lock_session=True)
    taken, other = Recorder(), Recorder()
    store.subscribe_to_all_streams("taken", taken)
    store.subscribe_to_all_streams("other", other)
    wait_until(lambda: bool(taken.subscribed and other.subscribed), what="both Subscribed")
    app_key = lock_key(schema, "$all", "taken")
    (hub,) = lock_backends(dsn, app_key)
    assert kill_backends(dsn, [hub]) == 1
    intruder = psycopg.connect(dsn, autocommit=True)
    try:
        wait_until(
            lambda: bool(
                (
                    row := intruder.execute(
                        "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (app_key,)
                    ).fetchone()
                )
                and row[0]
            ),
            interval=0.001,
            what="another session to take the name",
        )
        store.append_to_stream("s", 0, events(2))
        ids = {e.event_id for e in store.read_all_streams_forward(0, 10)}
        wait_until(lambda: other.seen() >= ids, what="the other subscription to go on")
        assert not taken.seen(), "delivered under a lock another session holds"
    finally:
        intruder.close()
    wait_until(lambda: taken.seen() >= ids, what="the name back, and its events delivered")
