"""Crashes and lost connections: subscriptions must keep every committed event, in order.

Connections are killed from SQL with pg_terminate_backend, aimed only at this process's
backends (other sessions may share the server). Two internal hooks are used where the public
API offers no way to crash an actor: the store's registry and the `Crash` message.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import psycopg
import pytest
from support import (
    Delivery,
    QueueSubscriber,
    checkpoint,
    events,
    kill_backends,
    listener_backends,
    lock_backends,
    pgbouncer,
    process_backends,
    subscription_lock_key,
    wait_until,
)

from eventstore_actors import (
    Events,
    EventStore,
    RecordedEvent,
    StoreUnavailableError,
    StreamNotFoundError,
    Subscribed,
    Subscription,
    SubscriptionAlreadyExistsError,
)
from eventstore_actors.actors.supervised import Crash

ALL = "$all"
QUIET = 0.4
MakeStore = Callable[..., EventStore]


class Consumer:
    """A QueueSubscriber whose batches are checked by a Delivery and acked on demand."""

    def __init__(self, store: EventStore, name: str, stream: str = ALL) -> None:
        self.q = QueueSubscriber()
        if stream == ALL:
            self.sub: Subscription = store.subscribe_to_all_streams(name, self.q)
            self.delivery = Delivery(lambda e: e.event_id)
        else:
            self.sub = store.subscribe_to_stream(stream, name, self.q)
            self.delivery = Delivery(lambda e: e.stream_version)
        assert self.q.subscribed() is self.sub

    def take(self, timeout: float = 10.0) -> list[RecordedEvent]:
        message = self.q.next(timeout)
        assert not isinstance(message, Subscribed), "Subscribed told twice"
        assert isinstance(message, Events)
        self.delivery.received(message.events)
        return list(message.events)

    def ack(self, position: int) -> None:
        self.delivery.ack(position)  # recorded before it can reach the checkpoint
        self.sub.ack(position)

    def drain(self, upto: int, timeout: float = 15.0) -> None:
        """Take and ack every batch until every position up to `upto` has been delivered."""
        wait_until(
            lambda: (
                self._step() and upto in self.delivery.covered() and self.delivery.last() >= upto
            ),
            timeout=timeout,
            interval=0,
            what=f"delivery up to {upto} (got {sorted(self.delivery.covered())[-3:]})",
        )
        self.delivery.check(upto)

    def _step(self) -> bool:
        try:
            batch = self.take(timeout=0.1)
        except AssertionError as exc:
            if "no message" in str(exc):
                return True
            raise
        self.ack(self.delivery.position(batch[-1]))
        return True


def append_surviving(store: EventStore, stream: str, expected: int, count: int) -> int:
    """Append after connections were killed: at most one StoreUnavailableError is allowed.
    Returns the new stream version."""
    failures = 0
    while True:
        try:
            store.append_to_stream(stream, expected, events(count, start=expected + 1))
            return expected + count
        except StoreUnavailableError:
            failures += 1
            assert failures <= 1, "the store raised StoreUnavailableError more than once"
            try:
                now = len(store.read_stream_forward(stream, 0, 100_000))
            except StreamNotFoundError:
                now = 0
            if now == expected + count:  # the outcome was unknown, and it did commit
                return now
            assert now == expected, f"a failed append left {now - expected} events"


def holders(dsn: str, schema: str, name: str, stream: str = ALL) -> list[int]:
    return lock_backends(dsn, subscription_lock_key(schema, stream, name))


# The subscription's lock connection --------------------------------------------------------------
@pytest.fixture(params=[True, False], ids=["shared", "dedicated"])
def lock_store(request: pytest.FixtureRequest, make_store: MakeStore) -> EventStore:
    """Both ways of holding a subscription's lock: on the store's one shared lock connection
    (the default; killing it kills every lock of the store) and on a dedicated connection
    (`shared_lock_session=False`)."""
    return make_store(shared_lock_session=request.param)


def test_lock_connection_killed_subscription_reacquires_and_resumes(
    lock_store: EventStore, dsn: str, schema: str
) -> None:
    store = lock_store
    consumer = Consumer(store, "sub")
    store.append_to_stream("s", 0, events(3))
    consumer.drain(3)
    wait_until(lambda: checkpoint(dsn, schema, ALL, "sub") == 3)
    store.append_to_stream("s", 3, events(2, start=4))
    assert [e.event_id for e in consumer.take()] == [4, 5]
    consumer.ack(4)
    wait_until(lambda: checkpoint(dsn, schema, ALL, "sub") == 4)

    (old,) = holders(dsn, schema, "sub")
    assert kill_backends(dsn, [old]) == 1
    new = wait_until(
        lambda: [p for p in holders(dsn, schema, "sub") if p != old],
        what="the subscription to take its lock again",
    )
    assert len(new) == 1
    store.append_to_stream("s", 5, events(3, start=6))
    consumer.drain(8)
    assert consumer.delivery.rewinds <= 1, "more than one redelivery after one restart"
    assert min(r[0] for r in consumer.delivery.runs[1:]) >= 5, "redelivered acked events"
    # It still owns the name.
    with pytest.raises(SubscriptionAlreadyExistsError):
        store.subscribe_to_all_streams("sub", QueueSubscriber())


def test_lock_connection_killed_while_idle_then_events_arrive(
    lock_store: EventStore, dsn: str, schema: str
) -> None:
    store = lock_store
    store.append_to_stream("other", 0, events(4, start=100))
    consumer = Consumer(store, "sub", stream="s")
    (old,) = holders(dsn, schema, "sub", "s")
    kill_backends(dsn, [old])
    for i in range(3):
        store.append_to_stream("s", 2 * i, events(2, start=2 * i + 1))
    consumer.drain(6)
    wait_until(lambda: checkpoint(dsn, schema, "s", "sub") == 6)


def _grab(dsn: str, key: str, timeout: float = 5.0) -> psycopg.Connection[tuple[object, ...]]:
    conn = psycopg.connect(dsn, autocommit=True)

    def got_it() -> bool:
        row = conn.execute(
            "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,)
        ).fetchone()
        return bool(row and row[0])

    wait_until(got_it, timeout=timeout, interval=0.001, what="the advisory lock")
    return conn


def test_lost_lock_taken_by_another_holder_stops_delivery_until_released(
    lock_store: EventStore, dsn: str, schema: str
) -> None:
    """The lock is the name: while another session holds it, this subscription delivers
    nothing; once it is free again the subscription takes it back and resumes after its
    checkpoint."""
    store = lock_store
    consumer = Consumer(store, "sub")
    store.append_to_stream("s", 0, events(2))
    consumer.drain(2)
    wait_until(lambda: checkpoint(dsn, schema, ALL, "sub") == 2)
    key = subscription_lock_key(schema, ALL, "sub")
    (old,) = holders(dsn, schema, "sub")
    kill_backends(dsn, [old])
    intruder = _grab(dsn, key)
    try:
        # The restarted subscription is back on a new connection, trying for its lock.
        wait_until(
            lambda: any(
                "pg_try_advisory_lock" in query and pid != old
                for pid, query in process_backends(dsn).items()
            ),
            what="the restarted subscription to try its lock",
        )
        while not consumer.q.queue.empty():  # delivered before it noticed: allowed here
            consumer.take()
        store.append_to_stream("s", 2, events(2, start=3))
        consumer.q.nothing(QUIET)
    finally:
        intruder.close()
    consumer.drain(4)
    assert consumer.delivery.runs[-1][0] <= 3


def test_no_delivery_once_the_lock_is_lost(lock_store: EventStore, dsn: str, schema: str) -> None:
    """Losing the lock connection means losing the name: another session may now hold it,
    so this subscription must not deliver (LESSONS: single subscriber across processes)."""
    store = lock_store
    consumer = Consumer(store, "sub")
    key = subscription_lock_key(schema, ALL, "sub")
    (old,) = holders(dsn, schema, "sub")
    kill_backends(dsn, [old])
    intruder = _grab(dsn, key)
    try:
        store.append_to_stream("s", 0, events(1))
        consumer.q.nothing(QUIET)
    finally:
        intruder.close()


# Writer, listener and pool connections ---------------------------------------------------------
def test_writer_and_listener_connections_killed_append_recovers_delivery_continues(
    store: EventStore, dsn: str, schema: str
) -> None:
    consumer = Consumer(store, "sub")
    store.append_to_stream("s", 0, events(3))
    consumer.drain(3)
    lock = set(holders(dsn, schema, "sub"))
    victims = [pid for pid in process_backends(dsn) if pid not in lock]
    assert wait_until(lambda: listener_backends(dsn, schema))[0] in victims
    assert kill_backends(dsn, victims) >= 2
    version = append_surviving(store, "s", 3, 2)
    version = append_surviving(store, "s", version, 2)
    consumer.drain(7)
    assert consumer.delivery.rewinds == 0, "the subscription itself was not touched"
    assert holders(dsn, schema, "sub") == sorted(lock)


def test_every_connection_killed_at_once(store: EventStore, dsn: str, schema: str) -> None:
    """Like a server restart seen from one process: everything reconnects, nothing is lost."""
    consumer = Consumer(store, "sub")
    store.append_to_stream("s", 0, events(2))
    consumer.drain(2)
    kill_backends(dsn, process_backends(dsn))
    version = append_surviving(store, "s", 2, 3)
    consumer.drain(5)
    wait_until(lambda: holders(dsn, schema, "sub"), what="the lock to be held again")
    store.append_to_stream("s", version, events(1, start=version + 1))
    consumer.drain(6)


def test_reads_recover_at_once_after_every_connection_was_killed(
    store: EventStore, dsn: str
) -> None:
    """RUNTIME-NOTES: a pool walking its dead connections one by one with back-off took up
    to 30 s; the publisher's catch-up reads (and so delivery) waited that long."""
    store.append_to_stream("s", 0, events(2))
    # Through PgBouncer (EVENTSTORE_TEST_PGBOUNCER) the pool's and the writer's clients may all
    # share one server connection: that one and the listener's are killed then.
    assert kill_backends(dsn, process_backends(dsn)) >= (2 if pgbouncer.SUITE else 3)
    started = time.monotonic()
    assert len(store.read_all_streams_forward()) == 2
    took = time.monotonic() - started
    assert took < 3.0, f"the first read after the kill took {took:.1f} s"


def test_events_committed_elsewhere_while_the_listener_is_down_are_delivered(
    make_store: MakeStore, dsn: str, schema: str
) -> None:
    """LESSONS: notifications sent while the LISTEN connection was down were lost, and the
    subscription only noticed at the next append. Every reconnect must catch up."""
    reader = make_store()
    consumer = Consumer(reader, "sub")  # the reader listens from its first subscription on
    writer = make_store()  # only appends: it does not listen
    wait_until(lambda: listener_backends(dsn, schema), what="the reader's listener")
    version = 0
    for _ in range(4):
        current = listener_backends(dsn, schema)
        assert len(current) == 1, current
        kill_backends(dsn, current)
        writer.append_to_stream("s", version, events(3, start=version + 1))
        version += 3
        # The last append is never followed by another one: it must arrive on its own.
        consumer.drain(version)
        assert wait_until(lambda: listener_backends(dsn, schema), what="the listener to reconnect")


# Crashed actors ---------------------------------------------------------------------------------
def _crash(store: EventStore, child_id: str) -> None:
    ref = store._registry.peek(child_id)
    assert ref is not None, f"no actor {child_id}"
    ref.tell(Crash(RuntimeError("crashed by a test")))


def test_crashed_subscription_actor_restarts_and_redelivers_unacked(
    store: EventStore, dsn: str, schema: str
) -> None:
    consumer = Consumer(store, "sub")
    store.append_to_stream("s", 0, events(4))
    batch = consumer.take()
    assert [e.event_id for e in batch] == [1, 2, 3, 4]
    consumer.ack(2)
    wait_until(lambda: checkpoint(dsn, schema, ALL, "sub") == 2)
    _crash(store, "subscription:" + json.dumps([ALL, "sub"]))
    again = consumer.take()
    assert [e.event_id for e in again] == [3, 4], "redelivered right after the checkpoint"
    consumer.ack(4)
    store.append_to_stream("s", 4, events(1, start=5))
    consumer.drain(5)
    assert consumer.delivery.rewinds == 1
    with pytest.raises(SubscriptionAlreadyExistsError):
        store.subscribe_to_all_streams("sub", QueueSubscriber())


def test_crashed_publisher_restarts_and_no_event_is_lost(store: EventStore) -> None:
    consumers = [Consumer(store, "all"), Consumer(store, "one", stream="s0")]
    stop = threading.Event()
    done: list[int] = []

    def write() -> None:
        versions = [0, 0, 0]
        total = 0
        while not stop.is_set() and total < 600:
            i = total % 3
            store.append_to_stream(f"s{i}", versions[i], events(2, start=versions[i] + 1))
            versions[i] += 2
            total += 2
        done.extend([total, versions[0]])

    thread = threading.Thread(target=write)
    thread.start()
    try:
        for _ in range(3):
            consumers[0].drain(consumers[0].delivery.last() + 1)
            old = store._registry.peek("publisher")
            assert old is not None
            old.tell(Crash(RuntimeError("crashed by a test")))

            def restarted(old: object = old) -> bool:
                ref = store._registry.peek("publisher")
                return ref is not None and ref is not old and ref.is_alive()

            wait_until(restarted, what="the publisher to restart")
    finally:
        thread.join(timeout=60)
        stop.set()
    total, s0 = done
    consumers[0].drain(total)
    consumers[1].drain(s0)
    for consumer in consumers:
        assert consumer.delivery.rewinds == 0, "a publisher restart is not a redelivery"
