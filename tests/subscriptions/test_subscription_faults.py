"""Subscriptions under faults (issue 7: B, 4, 8, 9, 10, 11, 12, 14, and the publisher's
reconnect cut-off and reset): a subscription is never silently abandoned, never crash-loops
on a bad mapper, subscriber or event, keeps its inbox bounded, and ends with
`SubscriptionStopped` whenever it ends for any reason but its own unsubscribe or delete.

Real PostgreSQL throughout; connections are killed with pg_terminate_backend. A few tests
reach into the store's registry where the public API offers no handle (marked white-box).
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pykka
import pytest
from support import (
    QUIET,
    Delivery,
    QueueSubscriber,
    actor_subscriber,
    checkpoint,
    events,
    kill_backends,
    lock_backends,
    subscription_lock_key,
    wait_until,
)

from eventstore_actors import (
    EventData,
    Events,
    EventStore,
    JsonSerializer,
    SerializationError,
    Subscribed,
    Subscription,
    SubscriptionAlreadyExistsError,
    SubscriptionStopped,
    admin,
)
from eventstore_actors.actors.supervised import Crash

ALL = "$all"
MakeStore = Callable[..., EventStore]


def child_id(stream: str, name: str) -> str:
    return "subscription:" + json.dumps([stream, name])


def holders(dsn: str, schema: str, name: str, stream: str = ALL) -> list[int]:
    return lock_backends(dsn, subscription_lock_key(schema, stream, name))


class Recorder(QueueSubscriber):
    """A QueueSubscriber that checks delivery order and acks when asked to drain."""

    def __init__(self, position: Callable[[Any], int] = lambda e: e.event_id) -> None:
        super().__init__()
        self.delivery = Delivery(position)
        self.stopped: list[SubscriptionStopped] = []
        self.sub: Subscription | None = None

    def drain(self, upto: int, timeout: float = 20.0) -> None:
        """Take and ack every batch until every position up to `upto` was delivered."""
        deadline = time.monotonic() + timeout
        while not (upto in self.delivery.covered() and self.delivery.last() >= upto):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"delivered up to {self.delivery.last()} of {upto}"
            message = self.next(remaining)
            if isinstance(message, SubscriptionStopped):
                self.stopped.append(message)
                raise AssertionError(f"subscriber told {message}")
            if isinstance(message, Subscribed):
                self.sub = message.subscription
                continue
            assert isinstance(message, Events), message
            self.delivery.received(message.events)
            position = self.delivery.position(message.events[-1])
            self.delivery.ack(position)
            message.subscription.ack(position)
        self.delivery.check(upto)

    def settle(self) -> None:
        """Take and check whatever is still queued, until nothing arrives for QUIET s."""
        while True:
            try:
                message = self.queue.get(timeout=QUIET)
            except queue.Empty:
                return
            if isinstance(message, SubscriptionStopped):
                self.stopped.append(message)
                continue
            assert isinstance(message, Events), type(message)
            self.delivery.received(message.events)
            position = self.delivery.position(message.events[-1])
            self.delivery.ack(position)
            message.subscription.ack(position)
            assert not self.delivery.errors, self.delivery.errors[:3]


def stopped_message(q: QueueSubscriber, timeout: float = 10.0) -> SubscriptionStopped:
    """Skip Subscribed/Events until SubscriptionStopped arrives."""
    deadline = time.monotonic() + timeout
    while True:
        message = q.next(max(0.01, deadline - time.monotonic()))
        if isinstance(message, SubscriptionStopped):
            return message


# B: lost lock connections are retried, never given up --------------------------------------------
def test_lock_connection_killed_six_times_within_3s_is_never_given_up(
    make_store: MakeStore, dsn: str, schema: str
) -> None:
    store = make_store(max_restarts=1, restart_window=5.0)
    q = Recorder()
    store.subscribe_to_all_streams("sub", q)
    total = 600
    done = threading.Event()

    def write() -> None:
        for i in range(total // 3):
            store.append_to_stream("s", 3 * i, events(3, start=3 * i + 1))
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        began = time.monotonic()
        killed: set[int] = set()
        for _ in range(6):
            (pid,) = wait_until(
                lambda: [p for p in holders(dsn, schema, "sub") if p not in killed],
                timeout=3.0,
                interval=0.005,
                what="the subscription to take its lock again",
            )
            assert kill_backends(dsn, [pid]) == 1
            killed.add(pid)
        assert time.monotonic() - began < 3.0, "six kills took more than 3 s"
    finally:
        writer.join(timeout=60)
    assert done.is_set()
    q.drain(total, timeout=30.0)
    q.settle()  # redeliveries queued while nothing was acked: in order, never a stop
    assert not q.stopped
    assert [e.event_id for e in store.read_all_streams_forward(0, 10_000)][-1] == total


def test_lost_lock_while_the_database_refuses_connections_is_retried(
    make_store: MakeStore, dsn: str, schema: str
) -> None:
    """Reconnects that fail (no connection allowed) are retried with back-off; none counts
    as a crash (max_restarts=1), and delivery resumes once connections are allowed."""
    role = f"es_sub_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        conn.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA {schema} TO {role}")
        conn.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA {schema} TO {role}")
    store: EventStore | None = None
    try:
        store = make_store(username=role, max_restarts=1, restart_window=60.0)
        q = Recorder()
        store.subscribe_to_all_streams("sub", q)
        store.append_to_stream("s", 0, events(2))
        q.drain(2)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"ALTER ROLE {role} CONNECTION LIMIT 0")
        kill_backends(dsn, holders(dsn, schema, "sub"))
        wait_until(lambda: not holders(dsn, schema, "sub"))
        q.nothing(1.0)  # several failed reconnects meanwhile
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"ALTER ROLE {role} CONNECTION LIMIT -1")
        wait_until(lambda: holders(dsn, schema, "sub"), what="the lock taken again")
        version = 2
        while True:  # the writer may need a moment too
            try:
                store.append_to_stream("s", version, events(2, start=3))
                break
            except Exception:
                time.sleep(0.05)
        q.drain(4)
        # A second loss, well within the restart window: still not a crash.
        (pid,) = holders(dsn, schema, "sub")
        kill_backends(dsn, [pid])
        wait_until(lambda: [p for p in holders(dsn, schema, "sub") if p != pid])
        store.append_to_stream("s", 4, events(2, start=5))
        q.drain(6)
        assert not q.stopped
    finally:
        if store is not None:
            store.stop()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"ALTER ROLE {role} CONNECTION LIMIT -1")
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE usename = %s", (role,)
            ).fetchall()
            kill_backends(dsn, [int(r[0]) for r in rows])
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def test_give_up_after_real_crashes_tells_subscription_stopped(make_store: MakeStore) -> None:
    """White-box: `Crash` makes the actor fail as a bug would."""
    store = make_store(max_restarts=1, restart_window=60.0)
    q = QueueSubscriber()
    sub = store.subscribe_to_all_streams("sub", q)
    assert q.subscribed() is sub
    cid = child_id(ALL, "sub")
    for _ in range(2):
        ref = store._registry.peek(cid)
        assert ref is not None
        ref.tell(Crash(RuntimeError("a bug")))
        wait_until(lambda ref=ref: store._registry.peek(cid) is not ref, what="a restart")
    message = stopped_message(q)
    assert message.subscription is sub
    assert "failed 2 times" in message.reason and "a bug" in message.reason
    q.nothing(QUIET)
    again = QueueSubscriber()
    store.subscribe_to_all_streams("sub", again)  # the name is free
    again.subscribed()


def test_the_supervisor_hook_runs_for_a_child_given_up() -> None:
    """The hook itself, on a bare supervisor and a child that always fails at start."""
    from eventstore_actors.actors.registry import Registry
    from eventstore_actors.actors.supervised import SupervisedActor
    from eventstore_actors.actors.supervisor import ChildSpec, Supervisor

    class Failing(SupervisedActor):
        def setup(self) -> None:
            raise RuntimeError("no luck")

    reasons: list[str] = []
    registry = Registry()
    supervisor = Supervisor.start(registry, 2, 60.0)
    try:
        spec = ChildSpec(
            "child",
            lambda sup, cid, _: Failing.start(sup, cid),
            on_give_up=reasons.append,
        )
        supervisor.proxy().start_child(spec).get(timeout=5)
        wait_until(lambda: reasons, what="the give-up")
        assert "child failed 3 times" in reasons[0] and "no luck" in reasons[0]
    finally:
        supervisor.stop()


# 4: structured keys ------------------------------------------------------------------------------
def test_names_with_colons_are_distinct_subscriptions(store: EventStore) -> None:
    a, b = QueueSubscriber(), QueueSubscriber()
    store.subscribe_to_stream("order:1", "audit", a)
    store.subscribe_to_stream("order", "1:audit", b)
    a.subscribed()
    b.subscribed()
    store.unsubscribe_from_stream("order", "1:audit")
    store.append_to_stream("order:1", 0, events(1))
    assert [e.event_id for e in a.batch()] == [1], "unsubscribing the other one left this one"
    with pytest.raises(SubscriptionAlreadyExistsError):
        store.subscribe_to_stream("order:1", "audit", QueueSubscriber())


# 8: resubscribe right after the name is freed ----------------------------------------------------
def test_resubscribe_right_after_unsubscribe_50_times(store: EventStore) -> None:
    store.append_to_stream("s", 0, events(1))
    for _ in range(50):
        q = QueueSubscriber()
        store.subscribe_to_all_streams("sub", q)
        q.subscribed()
        store.unsubscribe_from_all_streams("sub")
        again = QueueSubscriber()
        store.subscribe_to_all_streams("sub", again)
        again.subscribed()
        store.unsubscribe_from_all_streams("sub")


def test_resubscribe_right_after_delete_50_times(store: EventStore) -> None:
    for _ in range(50):
        q = QueueSubscriber()
        store.subscribe_to_stream("s", "sub", q)
        q.subscribed()
        store.delete_subscription("s", "sub")
        again = QueueSubscriber()
        store.subscribe_to_stream("s", "sub", again)
        again.subscribed()
        store.delete_subscription("s", "sub")


def test_resubscribe_right_after_the_subscribers_death(store: EventStore) -> None:
    """The dead subscriber's subscription is still running until its next tick notices;
    a resubscribe waits for that instead of failing."""
    for _ in range(10):
        ref, q = actor_subscriber()
        store.subscribe_to_all_streams("sub", ref)
        q.subscribed()
        ref.stop()
        again = QueueSubscriber()
        store.subscribe_to_all_streams("sub", again)  # first try, no retry loop
        again.subscribed()
        store.unsubscribe_from_all_streams("sub")


# 9: bounded inboxes ---------------------------------------------------------------------------
class BlockingSubscriber(QueueSubscriber):
    """Blocks its subscription actor inside the first Events tell until released."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def tell(self, message: object) -> None:
        super().tell(message)
        if isinstance(message, Events) and not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(60.0), "never released"


def test_a_stuck_subscriber_does_not_grow_the_subscription_inbox(store: EventStore) -> None:
    q = BlockingSubscriber()
    sub = store.subscribe_to_all_streams("sub", q, max_size=10)
    q.subscribed()
    store.append_to_stream("s", 0, events(1))
    assert q.entered.wait(10.0)
    ref = store._registry.peek(child_id(ALL, "sub"))  # white-box: the pykka inbox
    assert ref is not None
    largest = 0
    total = 2_001
    try:
        for n in range(2, total + 1):
            store.append_to_stream("s", n - 1, events(1, start=n))
            largest = max(largest, ref.actor_inbox.qsize())
        # Ticks keep coming while it is stuck: they must not pile up either.
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            largest = max(largest, ref.actor_inbox.qsize())
            time.sleep(0.05)
    finally:
        q.release.set()
    assert largest <= 20, f"the inbox held {largest} messages"
    # Nothing was lost on the way: every event arrives, in order, once acked.
    delivery = Delivery(lambda e: e.event_id)
    deadline = time.monotonic() + 30
    while delivery.last() < total:
        message = q.next(max(0.01, deadline - time.monotonic()))
        assert isinstance(message, Events), message
        delivery.received(message.events)
        delivery.ack(message.events[-1].event_id)
        sub.ack(message.events)
    delivery.check(total)


# 10: no self-wait --------------------------------------------------------------------------------
class CallingSubscriber(QueueSubscriber):
    """Calls `action()` from inside its first Events tell and records how long it took."""

    def __init__(self, action: Callable[[], object]) -> None:
        super().__init__()
        self.action = action
        self.took: float | None = None
        self.error: BaseException | None = None

    def tell(self, message: object) -> None:
        super().tell(message)
        if isinstance(message, Events) and self.took is None:
            began = time.monotonic()
            try:
                self.action()
            except BaseException as exc:
                self.error = exc
            self.took = time.monotonic() - began


@pytest.mark.parametrize("how", ["unsubscribe", "delete"])
def test_unsubscribe_from_inside_tell_returns_at_once(
    store: EventStore, dsn: str, schema: str, how: str
) -> None:
    store.append_to_stream("a", 0, events(1))
    store.append_to_stream("b", 0, events(1, start=2))  # a second batch (another stream)
    if how == "unsubscribe":
        q = CallingSubscriber(lambda: store.unsubscribe_from_all_streams("sub"))
    else:
        q = CallingSubscriber(lambda: store.delete_all_streams_subscription("sub"))
    store.subscribe_to_all_streams("sub", q)
    q.subscribed()
    first = q.batch()
    wait_until(lambda: q.took is not None)
    assert q.error is None, q.error
    assert q.took is not None and q.took < 1.0, f"waited {q.took:.1f} s on itself"
    store.append_to_stream("a", 1, events(1, start=3))
    q.nothing(QUIET)  # no further batch, no SubscriptionStopped
    assert [e.event_id for e in first] == [1]
    wait_until(lambda: not holders(dsn, schema, "sub"), what="the lock released")
    again = QueueSubscriber()
    store.subscribe_to_all_streams("sub", again)
    again.subscribed()


def test_store_stop_from_inside_tell_returns_at_once(make_store: MakeStore) -> None:
    store = make_store()
    store.append_to_stream("a", 0, events(1))
    store.append_to_stream("b", 0, events(1, start=2))
    q = CallingSubscriber(store.stop)
    store.subscribe_to_all_streams("sub", q)
    q.subscribed()
    q.batch()
    wait_until(lambda: q.took is not None)
    assert q.error is None, q.error
    assert q.took is not None and q.took < 3.0, f"stop took {q.took:.1f} s"
    message = q.next()
    assert isinstance(message, SubscriptionStopped), message
    assert message.reason == "the event store stopped"
    q.nothing(QUIET)


# 11: registered before it can deliver --------------------------------------------------------
class SyncAcker(QueueSubscriber):
    """Acks every batch from inside tell(), before the subscription actor moves on."""

    def tell(self, message: object) -> None:
        super().tell(message)
        if isinstance(message, Events):
            message.subscription.ack(message.events)


def test_acks_told_at_once_are_not_lost_while_the_supervisor_registers(
    store: EventStore,
) -> None:
    """White-box: the supervisor's own registration is slowed down, widening the window
    between the actor's start and its registration."""
    for i in range(3):
        store.append_to_stream(f"s{i}", 0, events(1, start=i + 1))  # three batches
    registry = store._registry
    put = registry.put

    def slow_put(child: str, ref: pykka.ActorRef[Any], attachment: Any = None) -> None:
        if threading.current_thread().name.startswith("Supervisor"):
            time.sleep(1.0)
        put(child, ref, attachment)

    registry.put = slow_put  # type: ignore[method-assign]
    try:
        q = SyncAcker()
        store.subscribe_to_all_streams("sub", q)
        q.subscribed()
        got = [e.event_id for _ in range(3) for e in q.batch(timeout=5.0)]
    finally:
        registry.put = put  # type: ignore[method-assign]
    assert got == [1, 2, 3]


# 12: a dead subscriber at subscribe time ---------------------------------------------------------
def test_a_stopped_actor_cannot_subscribe_and_leaves_nothing_behind(
    store: EventStore, dsn: str, schema: str
) -> None:
    ref, _ = actor_subscriber()
    ref.stop()
    with pytest.raises(ValueError, match="not running"):
        store.subscribe_to_all_streams("sub", ref)
    with pytest.raises(ValueError, match="not running"):
        store.subscribe_to_stream("s", "sub", ref)
    assert checkpoint(dsn, schema, ALL, "sub") is None
    assert checkpoint(dsn, schema, "s", "sub") is None
    q = QueueSubscriber()
    store.subscribe_to_all_streams("sub", q)
    q.subscribed()


class DiesOnSubscribed:
    """Alive when checked, dead by the time it is told Subscribed."""

    def is_alive(self) -> bool:
        return True

    def tell(self, message: object) -> None:
        raise pykka.ActorDeadError("died just now")


def test_a_subscriber_dying_before_subscribed_leaves_nothing_behind(
    store: EventStore, dsn: str, schema: str
) -> None:
    with pytest.raises(ValueError, match="not running"):
        store.subscribe_to_all_streams("sub", DiesOnSubscribed())
    assert checkpoint(dsn, schema, ALL, "sub") is None
    q = QueueSubscriber()
    store.subscribe_to_all_streams("sub", q)
    q.subscribed()


# 14: failing mappers, subscribers and events -------------------------------------------------
def test_a_failing_mapper_delivers_what_it_mapped_then_stops(
    store: EventStore, dsn: str, schema: str
) -> None:
    def mapper(event: Any) -> int:
        if event.data["n"] == 4:
            raise RuntimeError("mapper bug")
        return int(event.event_id)

    q = QueueSubscriber()
    sub = store.subscribe_to_all_streams("sub", q, mapper=mapper)
    q.subscribed()
    store.append_to_stream("s", 0, events(2))
    assert q.batch() == [1, 2]
    sub.ack(2)
    wait_until(lambda: checkpoint(dsn, schema, ALL, "sub") == 2)
    store.append_to_stream("s", 2, events(3, start=3))
    assert q.batch() == [3], "the events mapped before the failure, as one batch"
    message = q.next()
    assert isinstance(message, SubscriptionStopped), message
    assert message.subscription is sub
    assert "mapper" in message.reason and "4" in message.reason
    q.nothing(QUIET)
    assert checkpoint(dsn, schema, ALL, "sub") == 2, "checkpoint kept"
    again = QueueSubscriber()
    store.subscribe_to_all_streams("sub", again)  # the name is free
    again.subscribed()
    assert [e.event_id for e in again.batch()] == [3, 4, 5]


class RaisingSubscriber(QueueSubscriber):
    def tell(self, message: object) -> None:
        super().tell(message)
        if isinstance(message, Events):
            raise RuntimeError("subscriber bug")


def test_a_subscriber_whose_tell_raises_is_stopped_and_told(
    make_store: MakeStore, dsn: str, schema: str
) -> None:
    store = make_store(max_restarts=1)  # a crash loop would give up at once
    q = RaisingSubscriber()
    store.subscribe_to_all_streams("sub", q)
    q.subscribed()
    store.append_to_stream("s", 0, events(2))
    assert [e.event_id for e in q.batch()] == [1, 2]
    message = q.next()
    assert isinstance(message, SubscriptionStopped), message
    assert "subscriber bug" in message.reason
    q.nothing(QUIET)
    again = QueueSubscriber()
    store.subscribe_to_all_streams("sub", again)
    again.subscribed()
    assert [e.event_id for e in again.batch()] == [1, 2]


class PickySerializer(JsonSerializer):
    """Refuses to read events of type tests.Bad."""

    def deserialize(self, data: bytes, type: str | None = None) -> Any:
        if type == "tests.Bad":
            raise SerializationError("cannot rebuild tests.Bad")
        return super().deserialize(data, type)


def _bad(n: int) -> EventData:
    return EventData(data={"n": n}, event_type="tests.Bad")


@pytest.fixture
def picky(make_store: MakeStore) -> EventStore:
    return make_store(serializer=PickySerializer())


def test_an_undecodable_event_in_a_catch_up_read_stops_after_the_events_before_it(
    picky: EventStore, dsn: str, schema: str
) -> None:
    picky.append_to_stream("s", 0, [*events(2), _bad(3), *events(1, start=4)])
    q = QueueSubscriber()
    picky.subscribe_to_all_streams("sub", q)
    q.subscribed()
    assert [e.event_id for e in q.batch()] == [1, 2]
    message = q.next()
    assert isinstance(message, SubscriptionStopped), message
    assert "3" in message.reason and "tests.Bad" in message.reason
    q.nothing(QUIET)


def test_an_undecodable_event_in_a_published_batch_stops_after_the_events_before_it(
    picky: EventStore,
) -> None:
    q = QueueSubscriber()
    sub = picky.subscribe_to_all_streams("sub", q)
    q.subscribed()
    picky.append_to_stream("s", 0, events(1))
    sub.ack(q.batch())
    picky.append_to_stream("s", 1, [*events(1, start=2), _bad(3)])
    assert [e.event_id for e in q.batch()] == [2]
    message = q.next()
    assert isinstance(message, SubscriptionStopped), message
    assert "tests.Bad" in message.reason
    q.nothing(QUIET)


# The publisher: reconnect cut-off and a reset under a running store -------------------------
class Spy(pykka.ThreadingActor):
    """Registered as a fake subscription: records what the publisher tells subscriptions."""

    def __init__(self, sink: list[object]) -> None:
        super().__init__()
        self.sink = sink

    def on_receive(self, message: object) -> None:
        self.sink.append(message)


@pytest.fixture
def role(dsn: str, schema: str) -> Iterator[str]:
    name = f"es_pub_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {name} LOGIN")
        conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {name}")
        conn.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA {schema} TO {name}")
        conn.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA {schema} TO {name}")
    try:
        yield name
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            # NOLOGIN first: a store of the test may still be running (fixtures are torn down
            # before make_store's) and would reconnect as fast as its backends are killed.
            conn.execute(f"ALTER ROLE {name} NOLOGIN CONNECTION LIMIT -1")

            def gone() -> bool:
                rows = conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE usename = %s", (name,)
                ).fetchall()
                kill_backends(dsn, [int(r[0]) for r in rows])
                return not rows

            wait_until(gone, what=f"no backend of role {name}")
            conn.execute(f"DROP OWNED BY {name}")
            conn.execute(f"DROP ROLE {name}")


def test_a_listener_reconnect_does_not_read_a_large_backlog_itself(
    make_store: MakeStore, dsn: str, role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backlog beyond the gap cut-off becomes a CatchUp to the subscriptions (each reads
    from its own position), as on the gap path, instead of being published from here."""
    from eventstore_actors.notifications import publisher
    from eventstore_actors.notifications.publisher import CatchUp, Published

    monkeypatch.setattr(publisher, "_MAX_GAP", 5)
    reader = make_store(username=role)
    seen: list[object] = []
    spy = Spy.start(seen)
    try:
        reader._registry.put('subscription:["spy"]', spy)  # white-box
        q = QueueSubscriber()
        sub = reader.subscribe_to_all_streams("sub", q)
        q.subscribed()
        writer = make_store()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"ALTER ROLE {role} CONNECTION LIMIT 0")
            (listener,) = [
                int(r[0])
                for r in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE usename = %s AND query LIKE 'LISTEN%%'",
                    (role,),
                ).fetchall()
            ]
        kill_backends(dsn, [listener])
        writer.append_to_stream("s", 0, events(20))  # nobody listening in `reader`
        seen.clear()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"ALTER ROLE {role} CONNECTION LIMIT -1")
        wait_until(lambda: any(isinstance(m, CatchUp) for m in seen), what="a CatchUp")
        assert not [m for m in seen if isinstance(m, Published)], "the backlog was published"
        got = q.collect(sub, 20)
        assert [e.event_id for e in got] == list(range(1, 21))
    finally:
        spy.stop()


def test_reset_while_running_does_not_stop_publishing(
    store: EventStore, dsn: str, schema: str
) -> None:
    q = QueueSubscriber()
    sub = store.subscribe_to_all_streams("before", q)
    q.subscribed()
    store.append_to_stream("s", 0, events(5))
    sub.ack(q.batch())
    admin.reset(dsn, schema)
    store.append_to_stream("t", 0, events(3))  # event_ids 1..3 again
    fresh = QueueSubscriber()
    handle = store.subscribe_to_all_streams("fresh", fresh)
    fresh.subscribed()
    assert [e.event_id for e in fresh.collect(handle, 3)] == [1, 2, 3]
    store.append_to_stream("t", 3, events(1, start=4))
    assert [e.event_id for e in fresh.batch()] == [4], "new events are published again"


def test_an_ack_told_just_before_unsubscribe_is_stored(
    store: EventStore, dsn: str, schema: str
) -> None:
    """An ack already in the actor's inbox when the unsubscribe arrives still moves the
    checkpoint (it was dropped once the subscription was closed: redelivered after resubscribe)."""
    for round_ in range(1, 21):
        stream = f"s-{round_}"
        store.append_to_stream(stream, 0, events(1))
        subscriber = QueueSubscriber()
        sub = store.subscribe_to_stream(stream, "last-ack", subscriber)
        subscriber.subscribed()
        batch = subscriber.batch()
        sub.ack(batch)  # queued in the actor's inbox...
        store.unsubscribe_from_stream(stream, "last-ack")  # ...right before the close
        assert checkpoint(dsn, schema, stream, "last-ack") == 1, f"round {round_}"
