"""Subscriptions against a real PostgreSQL: the contract's Subscriptions section.

Ported from the Elixir suite's subscription tests (test/subscriptions/subscribe_to_stream_test.exs,
single_stream_subscription_test.exs, all_streams_subscription_test.exs, subscription_catch_up_test,
subscription_back_pressure_test, subscription_acknowledgement_test, monitor_subscription_test),
adapted to this contract (one batch in flight until everything sent is acked), plus a test for
each subscription trap in LESSONS.md.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pykka
import pytest
from support import (
    QueueSubscriber,
    actor_subscriber,
    checkpoint,
    events,
    subscribe_retrying,
    wait_until,
)

from eventstore_actors import (
    Events,
    EventStore,
    InvalidStartFromError,
    RecordedEvent,
    StoreUnavailableError,
    Subscribed,
    Subscription,
    SubscriptionAlreadyExistsError,
    SubscriptionStopped,
)

ALL = "$all"
QUIET = 0.3

MakeStore = Callable[..., EventStore]


def ids(batch: list[RecordedEvent]) -> list[int]:
    return [e.event_id for e in batch]


def versions(batch: list[RecordedEvent]) -> list[int]:
    return [e.stream_version for e in batch]


def ns(batch: list[RecordedEvent]) -> list[int]:
    return [e.data["n"] for e in batch]


@pytest.fixture
def other(store: EventStore) -> str:
    """Three events in another stream first, so that event_id != stream_version later."""
    store.append_to_stream("other-stream", 0, events(3, start=100))
    return "other-stream"


def subscribe_stream(
    store: EventStore, stream: str, name: str, **options: object
) -> tuple[Subscription, QueueSubscriber]:
    q = QueueSubscriber()
    sub = store.subscribe_to_stream(stream, name, q, **options)  # type: ignore[arg-type]
    assert q.subscribed() is sub
    return sub, q


def subscribe_all(
    store: EventStore, name: str, **options: object
) -> tuple[Subscription, QueueSubscriber]:
    q = QueueSubscriber()
    sub = store.subscribe_to_all_streams(name, q, **options)  # type: ignore[arg-type]
    assert q.subscribed() is sub
    return sub, q


# Single stream -----------------------------------------------------------------------------
def test_subscribed_is_the_first_message(store: EventStore) -> None:
    q = QueueSubscriber()
    sub = store.subscribe_to_stream("s", "sub", q)
    message = q.next()
    assert isinstance(message, Subscribed)
    assert message.subscription is sub
    assert (sub.stream_uuid, sub.subscription_name) == ("s", "sub")
    q.nothing(QUIET)


def test_stream_from_origin_receives_all_its_events(store: EventStore, other: str) -> None:
    sub, q = subscribe_stream(store, "s", "sub")
    written = events(3)
    store.append_to_stream("s", 0, written)
    batch = q.batch()
    assert ids(batch) == [4, 5, 6]
    assert versions(batch) == [1, 2, 3]
    assert [e.stream_uuid for e in batch] == ["s"] * 3
    assert [e.event_type for e in batch] == [w.event_type for w in written]
    assert [e.data for e in batch] == [w.data for w in written]
    assert [e.metadata for e in batch] == [w.metadata for w in written]
    assert [e.correlation_id for e in batch] == [w.correlation_id for w in written]
    assert [e.causation_id for e in batch] == [w.causation_id for w in written]
    for e in batch:
        assert e.created_at.utcoffset() == timedelta(0)
    sub.ack(batch)
    q.nothing(QUIET)


def test_stream_catches_up_on_existing_events(store: EventStore, other: str) -> None:
    store.append_to_stream("s", 0, events(2))
    sub, q = subscribe_stream(store, "s", "sub")
    batch = q.batch()
    assert versions(batch) == [1, 2]
    sub.ack(batch)
    store.append_to_stream("s", 2, events(1, start=3))
    assert versions(q.batch()) == [3]


def test_stream_from_a_given_version_receives_only_later_events(
    store: EventStore, other: str
) -> None:
    store.append_to_stream("s", 0, events(2))
    sub, q = subscribe_stream(store, "s", "sub", start_from=1)
    batch = q.batch()
    assert versions(batch) == [2]
    assert ns(batch) == [2]
    sub.ack(batch)
    store.append_to_stream("s", 2, events(1, start=3))
    assert versions(q.batch()) == [3]


def test_stream_from_current_receives_only_new_events(store: EventStore, other: str) -> None:
    store.append_to_stream("s", 0, events(2))
    _sub, q = subscribe_stream(store, "s", "sub", start_from="current")
    q.nothing(QUIET)
    store.append_to_stream("s", 2, events(2, start=3))
    batch = q.batch()
    assert versions(batch) == [3, 4]
    assert ns(batch) == [3, 4]


def test_subscribe_to_a_stream_that_does_not_exist_yet(store: EventStore) -> None:
    _sub, q = subscribe_stream(store, "later", "sub")
    q.nothing(QUIET)
    store.append_to_stream("later", 0, events(2))
    assert versions(q.batch()) == [1, 2]


def test_stream_subscription_ignores_other_streams(store: EventStore) -> None:
    sub, q = subscribe_stream(store, "mine", "sub")
    store.append_to_stream("mine", 0, events(1))
    store.append_to_stream("theirs", 0, events(1, start=2))
    batch = q.batch()
    assert [e.stream_uuid for e in batch] == ["mine"]
    sub.ack(batch)
    q.nothing(QUIET)


def test_batches_of_only_other_streams_do_not_block_later_events(store: EventStore) -> None:
    """LESSONS: when every event of a batch was filtered out, later events were never sent."""
    sub, q = subscribe_stream(store, "mine", "sub")
    for i in range(5):
        store.append_to_stream(f"theirs-{i}", 0, events(2))
    store.append_to_stream("mine", 0, events(1))
    for i in range(5):
        store.append_to_stream(f"theirs-{i}", 2, events(1))
    store.append_to_stream("mine", 1, events(1, start=2))
    got = q.collect(sub, 2)
    assert versions(got) == [1, 2]
    assert [e.stream_uuid for e in got] == ["mine", "mine"]


def test_catch_up_from_unseen_events_in_max_size_batches(store: EventStore, other: str) -> None:
    """Elixir: "should catch-up from unseen events" (buffer_size 3)."""
    expected = 0
    for size in (1, 2, 3, 4):
        store.append_to_stream("s", expected, events(size, start=expected + 1))
        expected += size
    sub, q = subscribe_stream(store, "s", "sub", max_size=3)
    for want in ([1, 2, 3], [4, 5, 6], [7, 8, 9], [10]):
        batch = q.batch()
        assert versions(batch) == want
        sub.ack(batch)
    store.append_to_stream("s", 10, events(5, start=11))
    got = q.collect(sub, 5)
    assert versions(got) == [11, 12, 13, 14, 15]
    q.nothing(QUIET)


def test_mapper_maps_each_event_and_acks_use_ints(store: EventStore, other: str) -> None:
    sub, q = subscribe_stream(store, "s", "sub", mapper=lambda e: e.stream_version)
    store.append_to_stream("s", 0, events(3))
    assert q.batch() == [1, 2, 3]
    store.append_to_stream("s", 3, events(2, start=4))
    q.nothing(QUIET)
    sub.ack(3)
    assert q.batch() == [4, 5]
    with pytest.raises(TypeError):
        sub.ack(["not", "events"])


def test_all_streams_mapper(store: EventStore) -> None:
    sub, q = subscribe_all(store, "sub", mapper=lambda e: (e.event_id, e.data["n"]))
    store.append_to_stream("a", 0, events(2))
    assert q.batch() == [(1, 1), (2, 2)]
    sub.ack(2)
    store.append_to_stream("b", 0, events(1, start=3))
    assert q.batch() == [(3, 3)]


def test_continues_after_ack_and_acks_by_list_event_or_stream_version(
    store: EventStore, other: str
) -> None:
    """Elixir: "should continue receiving events after ack" / "ack by stream_version"."""
    store.append_to_stream("s", 0, events(1))
    store.append_to_stream("s", 1, events(1, start=2))
    store.append_to_stream("s", 2, events(1, start=3))
    sub, q = subscribe_stream(store, "s", "sub", max_size=1)
    batch = q.batch()
    assert versions(batch) == [1]
    sub.ack(batch)  # a list
    batch = q.batch()
    assert versions(batch) == [2]
    sub.ack(batch[0])  # one RecordedEvent
    batch = q.batch()
    assert versions(batch) == [3]
    store.ack(sub, 3)  # an int stream_version, through the facade
    q.nothing(QUIET)
    wait_until(lambda: checkpoint(store.settings.dsn, store.settings.schema, "s", "sub") == 3)


def test_bad_acks_are_refused(store: EventStore) -> None:
    sub, _q = subscribe_all(store, "sub")
    with pytest.raises(TypeError):
        sub.ack("3")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sub.ack(True)
    with pytest.raises(ValueError):
        sub.ack(-1)
    with pytest.raises(ValueError):
        sub.ack([])
    with pytest.raises(TypeError):
        store.ack("not a subscription", 1)  # type: ignore[arg-type]


# All streams -------------------------------------------------------------------------------
def test_all_streams_from_origin_one_stream_per_batch(store: EventStore) -> None:
    sub, q = subscribe_all(store, "sub")
    store.append_to_stream("s1", 0, events(1))
    store.append_to_stream("s2", 0, events(1, start=2))
    first = q.batch()
    assert ids(first) == [1]
    assert [e.stream_uuid for e in first] == ["s1"]
    q.nothing(QUIET)  # the second batch waits for the ack
    sub.ack(first)
    second = q.batch()
    assert ids(second) == [2]
    assert [(e.stream_uuid, e.stream_version) for e in second] == [("s2", 1)]


def test_all_streams_catch_up_splits_batches_by_stream(store: EventStore) -> None:
    store.append_to_stream("s1", 0, events(2))
    store.append_to_stream("s2", 0, events(3, start=3))
    store.append_to_stream("s1", 2, events(1, start=6))
    sub, q = subscribe_all(store, "sub")
    batches = []
    for _ in range(3):
        batch = q.batch()
        assert len({e.stream_uuid for e in batch}) == 1
        batches.append(ids(batch))
        sub.ack(batch)
    assert batches == [[1, 2], [3, 4, 5], [6]]


def test_all_streams_from_a_given_event_id(store: EventStore) -> None:
    store.append_to_stream("s1", 0, events(1))
    store.append_to_stream("s2", 0, events(1, start=2))
    sub, q = subscribe_all(store, "sub", start_from=2)
    store.append_to_stream("s1", 1, events(1, start=3))
    store.append_to_stream("s2", 1, events(1, start=4))
    batch = q.batch()
    assert ids(batch) == [3]
    sub.ack(batch)
    assert ids(q.batch()) == [4]


def test_all_streams_from_current(store: EventStore) -> None:
    store.append_to_stream("s1", 0, events(3))
    _sub, q = subscribe_all(store, "sub", start_from="current")
    q.nothing(QUIET)
    store.append_to_stream("s2", 0, events(1, start=4))
    assert ids(q.batch()) == [4]


def test_start_from_is_only_used_when_the_subscription_is_created(store: EventStore) -> None:
    store.append_to_stream("s", 0, events(4))
    sub, q = subscribe_all(store, "sub", start_from=1)
    sub.ack(q.batch())
    wait_until(lambda: checkpoint(store.settings.dsn, store.settings.schema, ALL, "sub") == 4)
    store.unsubscribe_from_all_streams("sub")
    store.append_to_stream("s", 4, events(1, start=5))
    sub, q = subscribe_all(store, "sub", start_from="origin")
    assert ids(q.batch()) == [5]


@pytest.mark.parametrize("start_from", ["beginning", -1, 1.5, True, None])
def test_invalid_start_from_raises_and_tells_nothing(store: EventStore, start_from: object) -> None:
    q = QueueSubscriber()
    with pytest.raises(InvalidStartFromError):
        store.subscribe_to_all_streams("sub", q, start_from=start_from)  # type: ignore[arg-type]
    with pytest.raises(InvalidStartFromError):
        store.subscribe_to_stream("s", "sub", q, start_from=start_from)  # type: ignore[arg-type]
    q.nothing(0.1)
    # The name was not taken.
    subscribe_all(store, "sub")


def test_subscriber_without_tell_is_refused(store: EventStore) -> None:
    with pytest.raises(TypeError):
        store.subscribe_to_all_streams("sub", object())


def test_both_single_and_all_streams_subscriptions_receive(store: EventStore, other: str) -> None:
    _single, q1 = subscribe_stream(store, "s", "single")
    _every, q2 = subscribe_all(store, "every", start_from=3)
    store.append_to_stream("s", 0, events(3))
    b1, b2 = q1.batch(), q2.batch()
    assert ids(b1) == ids(b2) == [4, 5, 6]
    assert versions(b1) == [1, 2, 3]


def test_many_subscriptions_to_all_streams_all_receive(store: EventStore) -> None:
    subs = [subscribe_all(store, f"sub-{i}") for i in range(4)]
    store.append_to_stream("s1", 0, events(3))
    store.append_to_stream("s2", 0, events(3, start=4))
    for sub, q in subs:
        assert ids(q.collect(sub, 6)) == [1, 2, 3, 4, 5, 6]


def test_large_catch_up_in_order(store: EventStore) -> None:
    for i in range(5):
        store.append_to_stream(f"s{i}", 0, events(500, start=500 * i + 1))
    ref, q = actor_subscriber(auto_ack=True)
    try:
        store.subscribe_to_all_streams("big", ref)
        got: list[RecordedEvent] = []
        q.subscribed()
        while len(got) < 2500:
            got.extend(q.batch())
        assert ids(got) == list(range(1, 2501))
    finally:
        ref.stop()


# Names --------------------------------------------------------------------------------------
def test_duplicate_names_are_refused_and_the_loser_told_nothing(store: EventStore) -> None:
    subscribe_stream(store, "s", "name")
    subscribe_all(store, "name")
    loser = QueueSubscriber()
    with pytest.raises(SubscriptionAlreadyExistsError):
        store.subscribe_to_stream("s", "name", loser)
    with pytest.raises(SubscriptionAlreadyExistsError):
        store.subscribe_to_all_streams("name", loser)
    loser.nothing(0.1)
    # The same name on another stream is another subscription.
    subscribe_stream(store, "s2", "name")


def test_duplicate_names_are_refused_across_stores_in_one_process(
    make_store: MakeStore,
) -> None:
    first, second = make_store(), make_store()
    subscribe_all(first, "name")
    loser = QueueSubscriber()
    with pytest.raises(SubscriptionAlreadyExistsError):
        second.subscribe_to_all_streams("name", loser)
    loser.nothing(0.1)
    first.unsubscribe_from_all_streams("name")
    subscribe_all(second, "name")


# Ack gating, buffering, max_size --------------------------------------------------------------
def test_no_further_batch_until_everything_received_is_acked(store: EventStore) -> None:
    """Elixir: "should ack received events" (here: all of a batch before the next one)."""
    sub, q = subscribe_all(store, "sub")
    store.append_to_stream("s", 0, events(3))
    first = q.batch()
    assert ids(first) == [1, 2, 3]
    sub.ack(first[0])
    store.append_to_stream("s", 3, events(3, start=4))
    q.nothing(QUIET)
    sub.ack(2)
    q.nothing(QUIET)
    sub.ack(first)
    assert ids(q.batch()) == [4, 5, 6]


def test_later_batches_are_buffered_until_ack(store: EventStore, other: str) -> None:
    sub, q = subscribe_stream(store, "s", "sub")
    store.append_to_stream("s", 0, events(2))
    first = q.batch()
    store.append_to_stream("s", 2, events(2, start=3))
    store.append_to_stream("s", 4, events(2, start=5))
    q.nothing(QUIET)
    sub.ack(first)
    rest = q.collect(sub, 4)
    assert versions(rest) == [3, 4, 5, 6]


def test_max_size_overflow_then_catch_up(store: EventStore) -> None:
    """More than max_size events while the subscriber holds a batch: dropped, then read back
    from storage once acked; everything arrives in order, once, with at most max_size held."""
    sub, q = subscribe_all(store, "sub", max_size=3)
    store.append_to_stream("s", 0, events(2))
    first = q.batch()
    for i in range(10):
        store.append_to_stream(f"x{i}", 0, events(2, start=10 * i))
    q.nothing(QUIET)
    got = list(first)
    sub.ack(first)
    while len(got) < 22:
        batch = q.batch()
        assert len(batch) <= 3
        got.extend(batch)
        sub.ack(batch)
    assert ids(got) == list(range(1, 23))
    q.nothing(QUIET)


def test_overflow_does_not_catch_up_before_the_held_events_are_acked(store: EventStore) -> None:
    """LESSONS: a full subscription caught up before its subscriber acked, giving duplicates."""
    sub, q = subscribe_all(store, "sub", max_size=2)
    store.append_to_stream("s", 0, events(2))
    first = q.batch()
    store.append_to_stream("s", 2, events(6, start=3))
    q.nothing(QUIET)
    sub.ack(1)  # partial: still holding event 2
    second_wave: list[RecordedEvent] = []
    q.nothing(QUIET)
    sub.ack(first)
    while len(second_wave) < 6:
        batch = q.batch()
        second_wave.extend(batch)
        sub.ack(batch)
    assert ids(first + second_wave) == list(range(1, 9))


def test_events_committed_while_going_live_are_not_missed(store: EventStore) -> None:
    """LESSONS: events committed between catch-up and live were missed until the next append."""
    store.append_to_stream("s0", 0, events(300))
    stop = threading.Event()
    written = [300]

    def write() -> None:
        version = 0
        while not stop.is_set() and version < 400:
            store.append_to_stream("s1", version, events(2, start=version))
            version += 2
            written[0] += 2

    writer = threading.Thread(target=write)
    writer.start()
    try:
        subs = [subscribe_all(store, f"sub-{i}", max_size=50) for i in range(3)]
    finally:
        stop.set()
        writer.join(timeout=30)
    total = written[0]
    for sub, q in subs:
        got = q.collect(sub, total, timeout=30)
        assert ids(got) == list(range(1, total + 1))
        q.nothing(0.1)


# Restarts, replay, checkpoints ----------------------------------------------------------------
def test_catch_up_after_restart_resumes_from_the_checkpoint(
    make_store: MakeStore, dsn: str, schema: str
) -> None:
    first = make_store()
    first.append_to_stream("other", 0, events(3, start=100))
    first.append_to_stream("s", 0, events(3))
    sub, q = subscribe_stream(first, "s", "sub")
    sub.ack(q.batch())
    wait_until(lambda: checkpoint(dsn, schema, "s", "sub") == 3)
    first.stop()

    second = make_store()
    second.append_to_stream("s", 3, events(2, start=4))
    _sub2, q2 = subscribe_stream(second, "s", "sub")
    batch = q2.batch()
    assert versions(batch) == [4, 5]
    assert ns(batch) == [4, 5]


def test_unacked_events_are_replayed_after_resubscribe(
    store: EventStore, dsn: str, schema: str
) -> None:
    store.append_to_stream("s", 0, events(3))
    sub, q = subscribe_all(store, "sub")
    assert ids(q.batch()) == [1, 2, 3]
    sub.ack(1)
    wait_until(lambda: checkpoint(dsn, schema, ALL, "sub") == 1)
    store.unsubscribe_from_all_streams("sub")
    sub, q = subscribe_all(store, "sub")
    batch = q.batch()
    assert ids(batch) == [2, 3]
    sub.ack(batch)
    q.nothing(QUIET)


def test_replay_after_a_store_stop_without_ack(make_store: MakeStore) -> None:
    first = make_store()
    first.append_to_stream("s", 0, events(2))
    _, q = subscribe_all(first, "sub")
    assert ids(q.batch()) == [1, 2]
    first.stop()
    second = make_store()
    _, q2 = subscribe_all(second, "sub")
    assert ids(q2.batch()) == [1, 2]


def test_single_stream_checkpoint_is_the_stream_version(
    make_store: MakeStore, dsn: str, schema: str
) -> None:
    """LESSONS: single-stream subscriptions acked the event_id instead of the stream version."""
    store = make_store()
    store.append_to_stream("other", 0, events(5, start=100))
    store.append_to_stream("s", 0, events(3))  # event_ids 6..8, versions 1..3
    sub, q = subscribe_stream(store, "s", "sub")
    batch = q.batch()
    assert ids(batch) == [6, 7, 8]
    sub.ack(batch[1])  # stream_version 2, event_id 7
    wait_until(lambda: checkpoint(dsn, schema, "s", "sub") == 2)
    store.stop()
    again = make_store()
    sub, q = subscribe_stream(again, "s", "sub")
    batch = q.batch()
    assert versions(batch) == [3]
    assert ids(batch) == [8]
    sub.ack(batch)
    wait_until(lambda: checkpoint(dsn, schema, "s", "sub") == 3)


def test_all_streams_checkpoint_is_the_event_id(store: EventStore, dsn: str, schema: str) -> None:
    store.append_to_stream("a", 0, events(2))
    store.append_to_stream("b", 0, events(1, start=3))
    sub, q = subscribe_all(store, "sub")
    sub.ack(q.batch())
    sub.ack(q.batch())
    wait_until(lambda: checkpoint(dsn, schema, ALL, "sub") == 3)


def test_checkpoint_never_moves_backwards_nor_past_what_was_sent(
    store: EventStore, dsn: str, schema: str
) -> None:
    store.append_to_stream("s", 0, events(3))
    sub, q = subscribe_all(store, "sub", max_size=2)
    batch = q.batch()
    assert ids(batch) == [1, 2]
    sub.ack(1000)  # far beyond: only what was sent counts
    wait_until(lambda: checkpoint(dsn, schema, ALL, "sub") == 2)
    assert ids(q.batch()) == [3]
    sub.ack(1)  # backwards: ignored
    q.nothing(QUIET)
    assert checkpoint(dsn, schema, ALL, "sub") == 2


# Lifecycle -----------------------------------------------------------------------------------
def test_unsubscribe_stops_delivery_and_keeps_the_checkpoint(
    store: EventStore, dsn: str, schema: str, other: str
) -> None:
    """Elixir: "unsubscribe from stream should shutdown subscription process"."""
    store.append_to_stream("s", 0, events(1))
    store.append_to_stream("s", 1, events(1, start=2))
    sub, q = subscribe_stream(store, "s", "sub", max_size=1)
    sub.ack(q.batch())
    assert versions(q.batch()) == [2]
    wait_until(lambda: checkpoint(dsn, schema, "s", "sub") == 1)
    store.unsubscribe_from_stream("s", "sub")
    store.append_to_stream("s", 2, events(1, start=3))
    q.nothing(QUIET)
    assert checkpoint(dsn, schema, "s", "sub") == 1
    sub, q = subscribe_stream(store, "s", "sub")
    batch = q.batch()
    assert versions(batch) == [2, 3]


def test_no_batch_after_unsubscribe_returns(store: EventStore) -> None:
    received: list[object] = []
    stop = threading.Event()
    lock = threading.Lock()

    class Acking:
        def tell(self, message: object) -> None:
            with lock:
                received.append(message)
            if isinstance(message, Events):
                message.subscription.ack(message.events)

    store.subscribe_to_all_streams("busy", Acking())

    def write() -> None:
        version = 0
        while not stop.is_set():
            store.append_to_stream("s", version, events(1, start=version))
            version += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        wait_until(lambda: len(received) > 20, what="some deliveries")
        store.unsubscribe_from_all_streams("busy")
        with lock:
            count = len(received)
        time.sleep(QUIET)  # watching for (absent) late deliveries, not synchronising
        with lock:
            assert len(received) == count, "a batch arrived after unsubscribe returned"
    finally:
        stop.set()
        writer.join(timeout=30)


def test_unsubscribe_of_an_unknown_subscription_is_harmless(store: EventStore) -> None:
    store.unsubscribe_from_all_streams("nobody")
    store.unsubscribe_from_stream("s", "nobody")


def test_delete_subscription_removes_the_checkpoint(
    store: EventStore, dsn: str, schema: str, other: str
) -> None:
    store.append_to_stream("s", 0, events(2))
    sub, q = subscribe_stream(store, "s", "sub")
    sub.ack(q.batch())
    wait_until(lambda: checkpoint(dsn, schema, "s", "sub") == 2)
    store.delete_subscription("s", "sub")  # also stops it
    assert checkpoint(dsn, schema, "s", "sub") is None
    store.append_to_stream("s", 2, events(1, start=3))
    q.nothing(QUIET)
    sub, q = subscribe_stream(store, "s", "sub")
    assert versions(q.batch()) == [1, 2, 3]


def test_delete_all_streams_subscription(store: EventStore, dsn: str, schema: str) -> None:
    store.append_to_stream("s", 0, events(2))
    sub, q = subscribe_all(store, "sub")
    sub.ack(q.batch())
    wait_until(lambda: checkpoint(dsn, schema, ALL, "sub") == 2)
    store.unsubscribe_from_all_streams("sub")
    assert checkpoint(dsn, schema, ALL, "sub") == 2
    store.delete_all_streams_subscription("sub")
    assert checkpoint(dsn, schema, ALL, "sub") is None
    sub, q = subscribe_all(store, "sub")
    assert ids(q.batch()) == [1, 2]


def test_subscriber_death_stops_the_subscription_within_a_second(
    store: EventStore, dsn: str, schema: str
) -> None:
    store.append_to_stream("s", 0, events(2))
    ref, q = actor_subscriber()
    sub = store.subscribe_to_all_streams("sub", ref)
    assert q.subscribed() is sub
    batch = q.batch()
    sub.ack(batch[0])
    wait_until(lambda: checkpoint(dsn, schema, ALL, "sub") == 1)
    ref.stop()
    stopped = time.monotonic()
    replacement = QueueSubscriber()
    subscribe_retrying(lambda: store.subscribe_to_all_streams("sub", replacement), timeout=3.0)
    freed_after = time.monotonic() - stopped
    assert freed_after < 1.5, f"the name was freed {freed_after:.2f} s after the subscriber died"
    replacement.subscribed()
    assert ids(replacement.batch()) == [2], "the checkpoint was kept"


def test_subscriber_death_is_noticed_while_idle(store: EventStore) -> None:
    """No delivery attempt after the death: the watch alone must stop the subscription."""
    ref, q = actor_subscriber()
    store.subscribe_to_stream("s", "sub", ref)
    q.subscribed()
    ref.stop()
    stopped = time.monotonic()
    again = QueueSubscriber()
    subscribe_retrying(lambda: store.subscribe_to_stream("s", "sub", again), timeout=3.0)
    assert time.monotonic() - stopped < 1.5
    again.subscribed()


def test_subscriber_that_crashes_stops_its_subscription(store: EventStore) -> None:
    class Fragile(pykka.ThreadingActor):
        def on_receive(self, message: object) -> None:
            if isinstance(message, Events):
                raise RuntimeError("subscriber bug")

    ref = Fragile.start()
    try:
        store.subscribe_to_all_streams("sub", ref)
        store.append_to_stream("s", 0, events(1))
        wait_until(lambda: not ref.is_alive(), what="the subscriber to crash")
        q = QueueSubscriber()
        subscribe_retrying(lambda: store.subscribe_to_all_streams("sub", q), timeout=3.0)
        q.subscribed()
        assert ids(q.batch()) == [1], "the un-acked event is delivered again"
    finally:
        if ref.is_alive():
            ref.stop()


def test_store_stop_ends_subscriptions(store: EventStore) -> None:
    ref, q = actor_subscriber()
    try:
        store.subscribe_to_all_streams("sub", ref)
        q.subscribed()
        store.stop()
        store.stop()  # idempotent
        stopped = q.next()
        assert isinstance(stopped, SubscriptionStopped), stopped
        assert stopped.reason == "the event store stopped"
        q.nothing(0.1)
        with pytest.raises(StoreUnavailableError):
            store.subscribe_to_all_streams("late", QueueSubscriber())
    finally:
        ref.stop()


# Notifications out of the ordinary (white-box: told straight to the subscription actor, as the
# Elixir test "should ignore already received events" sends to the subscription process) -----
class BlockingSubscriber(QueueSubscriber):
    """Blocks the subscription actor inside its first `tell(Events)` until released, so that
    messages can be queued in the subscription's mailbox in a chosen order."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def tell(self, message: object) -> None:
        super().tell(message)
        if isinstance(message, Events) and not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(10.0), "never released"


def _subscription_ref(store: EventStore, stream: str, name: str) -> pykka.ActorRef[object]:
    ref = store._registry.peek("subscription:" + json.dumps([stream, name]))
    assert ref is not None
    return ref


def test_duplicate_and_past_notifications_are_ignored(store: EventStore) -> None:
    from eventstore_actors.notifications.publisher import Published

    sub, q = subscribe_all(store, "sub")
    store.append_to_stream("s", 0, events(3))
    batch = q.batch()
    sub.ack(batch)
    ref = _subscription_ref(store, ALL, "sub")
    ref.tell(Published(batch))
    ref.tell(Published(batch[1:]))
    q.nothing(QUIET)
    store.append_to_stream("s", 3, events(1, start=4))
    assert ids(q.batch()) == [4]


def test_a_gap_in_notifications_is_filled_from_storage(store: EventStore) -> None:
    """LESSONS: tolerate future notifications: a gap means catch up from storage."""
    from eventstore_actors.notifications.publisher import Published

    q = BlockingSubscriber()
    sub = store.subscribe_to_all_streams("sub", q)
    q.subscribed()
    store.append_to_stream("s", 0, events(1))
    assert q.entered.wait(10.0)  # the subscription is now stuck delivering event 1
    first = q.batch()
    ref = _subscription_ref(store, ALL, "sub")
    # A notification of event 3 reaches the subscription before those of events 2 and 3.
    ahead = dataclasses.replace(first[0], event_id=3, stream_version=3, data={"n": "early"})
    ref.tell(Published([ahead]))
    store.append_to_stream("s", 1, events(2, start=2))
    q.release.set()
    sub.ack(first)
    rest = q.collect(sub, 2)
    assert ids(rest) == [2, 3]
    assert ns(rest) == [2, 3], "events 2 and 3 come from storage"
    q.nothing(QUIET)


def test_a_stale_handle_cannot_ack_a_later_subscription(
    store: EventStore, dsn: str, schema: str
) -> None:
    """An old subscriber still finishing its work after unsubscribe must not ack, for the new
    subscriber, events the new one has not processed yet."""
    store.append_to_stream("s", 0, events(5))
    old, q = subscribe_all(store, "sub")
    q.batch()
    store.unsubscribe_from_all_streams("sub")
    _, q2 = subscribe_all(store, "sub")
    assert ids(q2.batch()) == [1, 2, 3, 4, 5]
    old.ack(5)
    q2.nothing(QUIET)
    assert checkpoint(dsn, schema, ALL, "sub") == 0
