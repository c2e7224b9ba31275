"""Direct delivery (subscriptions/direct.py, notifications/fanout.py): a level subscription on
the shared lock connection is told on the fan-out's thread and its acks take effect on the
acker's thread, with the same rules as the actor's own path."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from support import QUIET, WAIT, QueueSubscriber, checkpoint, events, wait_until

from eventstore_actors import Events, EventStore, Subscribed, SubscriptionStopped

ALL = "$all"
MakeStore = Callable[..., EventStore]


class Acking:
    """Records the thread that told it each batch and the event_ids; acks each batch at once
    (from inside its tell), unless `hold` is set: then it blocks in tell() until released."""

    def __init__(self, hold_at: int | None = None) -> None:
        self.threads: list[str] = []
        self.ids: list[int] = []
        self.subscribed = threading.Event()
        self.hold_at = hold_at  # block inside the tell() of this event_id
        self.held = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()

    def tell(self, message: Any) -> None:
        if isinstance(message, Subscribed):
            self.subscribed.set()
        elif isinstance(message, Events):
            with self._lock:
                self.threads.append(threading.current_thread().name)
                self.ids.extend(e.event_id for e in message.events)
            if self.hold_at is not None and self.hold_at in self.ids and not self.held.is_set():
                self.held.set()
                assert self.release.wait(WAIT), "never released"
            message.subscription.ack(message.events)

    def seen(self) -> list[int]:
        with self._lock:
            return list(self.ids)


def _append(store: EventStore, stream: str, first: int, count: int) -> None:
    for n in range(first, first + count):
        store.append_to_stream(stream, n - 1, events(1, start=n))


def _live(store: EventStore, name: str, subscriber: Acking) -> None:
    store.subscribe_to_all_streams(name, subscriber)
    assert subscriber.subscribed.wait(WAIT)


def test_a_level_subscription_is_told_on_the_fan_out_thread(
    make_store: MakeStore, dsn: str, schema: str
) -> None:
    store = make_store(shared_lock_session=True)
    subscriber = Acking()
    _live(store, "sub", subscriber)
    _append(store, "s", 1, 20)
    wait_until(lambda: len(subscriber.seen()) == 20, what="20 events")
    assert subscriber.seen() == list(range(1, 21)), "in order, once each"
    direct = [t for t in subscriber.threads if t.startswith("eventstore-fan-out")]
    assert len(direct) >= 10, f"told on {subscriber.threads}"
    # The acks applied on the fan-out's thread move the stored checkpoint as acks do.
    wait_until(lambda: checkpoint(dsn, schema, ALL, "sub") == 20, what="checkpoint 20")


def test_an_unacked_direct_batch_holds_the_next_one(make_store: MakeStore) -> None:
    store = make_store(shared_lock_session=True)
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_all_streams("sub", subscriber)
    subscriber.subscribed()
    _append(store, "s", 1, 1)
    first = subscriber.batch()
    _append(store, "s", 2, 3)
    subscriber.nothing(QUIET)  # back-pressure: nothing more until the ack
    sub.ack(first)
    assert [e.event_id for e in subscriber.collect(sub, 3)] == [2, 3, 4]


def test_a_subscriber_blocking_in_tell_does_not_hold_the_others(make_store: MakeStore) -> None:
    """The fan-out's watchdog hands the rest of the work to another thread."""
    store = make_store(shared_lock_session=True)
    stuck, other = Acking(hold_at=4), Acking()
    _live(store, "stuck", stuck)
    _live(store, "other", other)
    _append(store, "s", 1, 3)
    wait_until(lambda: len(stuck.seen()) == len(other.seen()) == 3, what="both level")
    try:
        _append(store, "s", 4, 1)
        assert stuck.held.wait(WAIT)
        assert stuck.threads[-1].startswith("eventstore-fan-out"), stuck.threads
        told = len(other.threads)
        _append(store, "s", 5, 4)
        wait_until(lambda: len(other.seen()) == 8, what="the other subscription to go on")
        # On the fan-out's (new) thread, not from a storage read of the actor's backstop.
        assert any(t.startswith("eventstore-fan-out") for t in other.threads[told:])
        assert stuck.seen() == [1, 2, 3, 4]
    finally:
        stuck.release.set()
    wait_until(lambda: len(stuck.seen()) == 8, what="the stuck one to catch up")
    assert stuck.seen() == list(range(1, 9))
    assert other.seen() == list(range(1, 9))


def test_unsubscribing_inside_a_direct_tell_does_not_wait_on_itself(make_store: MakeStore) -> None:
    store = make_store(shared_lock_session=True)
    took: list[float | BaseException] = []
    told: list[int] = []
    after = threading.Event()
    subscribed = threading.Event()

    class Leaving:
        def tell(self, message: Any) -> None:
            if isinstance(message, Subscribed):
                subscribed.set()
            elif isinstance(message, Events):
                if took:
                    after.set()
                told.extend(e.event_id for e in message.events)
                message.subscription.ack(message.events)
                # The first batch that reaches event 3 (one event per batch when the appends
                # come one by one to a level subscriber; a batch of several if they were
                # buffered meanwhile): leave from inside the tell.
                if message.events[-1].event_id >= 3 and not took:
                    started = time.monotonic()
                    try:
                        store.unsubscribe_from_all_streams("sub")
                    except BaseException as error:  # seen by the test, not lost in the actor
                        took.append(error)
                    else:
                        took.append(time.monotonic() - started)

    store.subscribe_to_all_streams("sub", Leaving())
    assert subscribed.wait(WAIT), "never subscribed"
    _append(store, "s", 1, 5)
    wait_until(lambda: took, what="the unsubscribe to return")
    assert isinstance(took[0], float), took[0]
    assert took[0] < 2.0, f"the unsubscribe waited {took[0]:.1f} s"
    assert not after.wait(QUIET), "told after the unsubscribe"
    assert told == list(range(1, told[-1] + 1)) and told[-1] >= 3, told


class Working(Acking):
    """Does `cost` seconds of work inside each tell() (a projection writing to a database)."""

    def __init__(self, cost: float) -> None:
        super().__init__()
        self.cost = cost

    def tell(self, message: Any) -> None:
        if isinstance(message, Events):
            time.sleep(self.cost)  # the subscriber's own work, not a wait for a condition
        super().tell(message)


def test_a_subscriber_that_works_in_tell_goes_back_to_its_own_thread(
    make_store: MakeStore,
) -> None:
    """Three slow direct deliveries in a row: its batches go through its actor again, so its
    work no longer holds the fan-out's thread from the others."""
    store = make_store(shared_lock_session=True)
    worker = Working(0.01)
    _live(store, "worker", worker)
    for n in range(1, 9):  # one at a time, so that the subscription is level at each
        _append(store, "s", n, 1)
        wait_until(lambda n=n: len(worker.seen()) == n, what=f"event {n}")
    assert worker.seen() == list(range(1, 9)), "in order, once each"
    direct = [t for t in worker.threads if t.startswith("eventstore-fan-out")]
    assert 1 <= len(direct) <= 3, f"told on {worker.threads}"
    assert not worker.threads[-1].startswith("eventstore-fan-out"), worker.threads


def test_acks_made_inside_a_tell_count_once_it_returns_even_if_it_then_raises(
    make_store: MakeStore, dsn: str, schema: str
) -> None:
    """An ack from inside tell(), on the thread telling, is applied as that tell() returns
    (before anything else happens to the subscription): a partial ack then a full one leaves
    the full one, the next batch comes on the fan-out's thread, and a tell() that acks and
    then raises still moved the checkpoint before the subscription ends."""
    store = make_store(shared_lock_session=True)
    subscribed, stopped = threading.Event(), threading.Event()
    told: list[tuple[list[int], str]] = []

    class AckingTwiceThenFailing:
        def tell(self, message: Any) -> None:
            if isinstance(message, Subscribed):
                subscribed.set()
            elif isinstance(message, SubscriptionStopped):
                stopped.set()
            elif isinstance(message, Events):
                ids = [e.event_id for e in message.events]
                told.append((ids, threading.current_thread().name))
                message.subscription.ack(message.events[0])  # partial, then the whole batch
                message.subscription.ack(message.events)
                if ids[-1] >= 7:
                    raise RuntimeError("the projection failed after acking")

    store.subscribe_to_all_streams("sub", AckingTwiceThenFailing())
    assert subscribed.wait(WAIT), "never subscribed"
    store.append_to_stream("s", 0, events(3))  # one batch of three
    wait_until(lambda: told and told[-1][0][-1] == 3, what="the first batch")
    wait_until(lambda: checkpoint(dsn, schema, ALL, "sub") == 3, what="checkpoint 3")
    _append(store, "s", 4, 4)  # one at a time: the subscription is level at each
    assert stopped.wait(WAIT), "the failing tell() did not end the subscription"
    assert [i for ids, _ in told for i in ids] == list(range(1, 8)), told
    assert any(name.startswith("eventstore-fan-out") for _, name in told[1:]), told
    wait_until(lambda: checkpoint(dsn, schema, ALL, "sub") == 7, what="checkpoint 7")


def test_a_retry_asked_inside_a_tell_before_an_ack_is_not_lost(
    make_store: MakeStore, dsn: str, schema: str
) -> None:
    """nack(event, "retry") then ack(batch) inside one tell(): the nack goes to the actor
    as a message, so the ack waits behind it (as a message too) instead of being applied
    as the tell() returns; the event comes again, as for a stream subscription. An
    adversarial probe found the retry dropped on the fan-out's direct path."""
    store = make_store(shared_lock_session=True)
    told: list[list[int]] = []
    subscribed = threading.Event()

    class RetryingOnce:
        armed = False

        def tell(self, message: Any) -> None:
            if isinstance(message, Subscribed):
                subscribed.set()
            elif isinstance(message, Events):
                ids = [e.event_id for e in message.events]
                told.append(ids)
                if self.armed and len(ids) == 3:
                    self.armed = False
                    message.subscription.nack(message.events[0], "retry", "transient failure")
                message.subscription.ack(message.events)

    subscriber = RetryingOnce()
    store.subscribe_to_all_streams("sub", subscriber, retry_delay=0.05)
    assert subscribed.wait(WAIT), "never subscribed"
    _append(store, "s", 1, 1)
    wait_until(lambda: told == [[1]], what="the first event")
    subscriber.armed = True
    store.append_to_stream("s", 1, events(3, start=2))  # one batch of three, level: direct
    wait_until(lambda: len(told) >= 4, what="the retry and the rest")
    assert told[:4] == [[1], [2, 3, 4], [2], [3, 4]], told
    _append(store, "s", 5, 1)
    wait_until(lambda: checkpoint(dsn, schema, ALL, "sub") == 5, what="checkpoint 5")
