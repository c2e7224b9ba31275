"""Competing consumers (`concurrency_limit`, `buffer_size`, `partition_by`) on real PostgreSQL.

Ported from commanded/eventstore's test/subscriptions/concurrent_subscription_test.exs,
subscription_partitioning_test.exs and subscription_partition_subscriber_down_test.exs
(partition_key_test.exs is pure: see tests/subscriptions/test_concurrent_state.py).
Differences from the
Elixir suite, as the contract says: each subscribe call returns its own handle and each
subscriber is told `Subscribed` with it; acks are per event (Elixir's int ack is cumulative per
subscriber, so where it acks the last of a batch, these tests ack the batch); a partition moves
to another subscriber only once none of its events is in flight (the Elixir down test shows
the opposite as a bug).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from support import QueueSubscriber, actor_subscriber, checkpoint, events, wait_until

from eventstore_actors import (
    Events,
    EventStore,
    RecordedEvent,
    Subscribed,
    Subscription,
    SubscriptionAlreadyExistsError,
    SubscriptionStopped,
)
from eventstore_actors.actors.supervised import Crash

ALL = "$all"
QUIET = 0.3

MakeStore = Callable[..., EventStore]


def ids(batch: list[RecordedEvent]) -> list[int]:
    return [e.event_id for e in batch]


def join(store: EventStore, name: str, q: Any, **options: Any) -> Subscription:
    sub = store.subscribe_to_all_streams(name, q, **options)
    if isinstance(q, QueueSubscriber):
        assert q.subscribed() is sub
    return sub


def group(
    store: EventStore, name: str, count: int, **options: Any
) -> list[tuple[Subscription, QueueSubscriber]]:
    members = []
    for _ in range(count):
        q = QueueSubscriber()
        members.append((join(store, name, q, **options), q))
    return members


def last_ack(dsn: str, schema: str, name: str, expected: int) -> None:
    """The stored checkpoint reaches `expected` (and, checked after, is not beyond it)."""
    wait_until(
        lambda: checkpoint(dsn, schema, ALL, name) == expected, what=f"checkpoint {expected}"
    )


# concurrent_subscription_test.exs: "concurrent subscription" -------------------------------------
def test_allows_multiple_subscribers_each_with_its_handle(store: EventStore) -> None:
    q1, q2 = QueueSubscriber(), QueueSubscriber()
    sub1 = store.subscribe_to_all_streams("s", q1, concurrency_limit=2)
    sub2 = store.subscribe_to_all_streams("s", q2, concurrency_limit=2)
    assert sub1 is not sub2
    assert (sub2.stream_uuid, sub2.subscription_name) == (ALL, "s")
    assert q1.subscribed() is sub1
    assert q2.subscribed() is sub2
    q1.nothing(QUIET)
    q2.nothing(0)


def test_refuses_multiple_subscribers_by_default(store: EventStore) -> None:
    store.subscribe_to_all_streams("s", QueueSubscriber())
    with pytest.raises(SubscriptionAlreadyExistsError):
        store.subscribe_to_all_streams("s", QueueSubscriber())


def test_refuses_a_second_subscriber_when_the_first_took_only_one(store: EventStore) -> None:
    store.subscribe_to_all_streams("s", QueueSubscriber())
    with pytest.raises(SubscriptionAlreadyExistsError):
        store.subscribe_to_all_streams("s", QueueSubscriber(), concurrency_limit=2)


def test_errors_when_too_many_subscribers(store: EventStore) -> None:
    group(store, "s", 2, concurrency_limit=2)
    with pytest.raises(SubscriptionAlreadyExistsError):
        store.subscribe_to_all_streams("s", QueueSubscriber(), concurrency_limit=2)


def test_another_store_instance_gets_already_exists(
    store: EventStore, make_store: MakeStore
) -> None:
    group(store, "s", 1, concurrency_limit=3)
    other = make_store()
    with pytest.raises(SubscriptionAlreadyExistsError):
        other.subscribe_to_all_streams("s", QueueSubscriber(), concurrency_limit=3)


def test_sends_events_to_all_subscribers(store: EventStore) -> None:
    (_, q1), (_, q2), (_, q3) = group(store, "s", 3, concurrency_limit=3)
    store.append_to_stream("stream", 0, events(3))
    assert ids(q1.batch()) == [1]
    assert ids(q2.batch()) == [2]
    assert ids(q3.batch()) == [3]
    for q in (q1, q2, q3):
        q.nothing(QUIET)


def test_sends_event_to_next_available_subscriber_after_ack(store: EventStore) -> None:
    (sub1, q1), (sub2, q2) = group(store, "s", 2, concurrency_limit=2)
    store.append_to_stream("stream", 0, events(6))
    assert ids(q1.batch()) == [1]
    assert ids(q2.batch()) == [2]
    for position in (2, 3, 4):
        sub2.ack(position)
        assert ids(q2.batch()) == [position + 1]
    sub1.ack(1)
    assert ids(q1.batch()) == [6]
    q1.nothing(QUIET)
    q2.nothing(0)


def test_acks_events_in_order(store: EventStore, dsn: str, schema: str) -> None:
    (sub1, q1), (sub2, q2), (sub3, q3) = group(store, "s", 3, concurrency_limit=3)
    store.append_to_stream("stream", 0, events(8))
    assert ids(q1.batch()) == [1]
    assert ids(q2.batch()) == [2]
    assert ids(q3.batch()) == [3]
    sub1.ack(1)
    assert ids(q1.batch()) == [4]
    last_ack(dsn, schema, "s", 1)
    sub2.ack(2)
    assert ids(q2.batch()) == [5]
    last_ack(dsn, schema, "s", 2)
    sub3.ack(3)
    assert ids(q3.batch()) == [6]
    last_ack(dsn, schema, "s", 3)
    # Ack of 6 received, but the next position to store is 4's.
    sub3.ack(6)
    assert ids(q3.batch()) == [7]
    sub2.ack(5)
    assert ids(q2.batch()) == [8]
    time.sleep(QUIET)  # let any (wrong) write happen
    assert checkpoint(dsn, schema, ALL, "s") == 3
    sub1.ack(4)
    last_ack(dsn, schema, "s", 6)
    sub3.ack(7)
    last_ack(dsn, schema, "s", 7)
    sub2.ack(8)
    last_ack(dsn, schema, "s", 8)
    for q in (q1, q2, q3):
        q.nothing(QUIET)


def test_resends_in_flight_events_when_a_subscriber_terminates(
    store: EventStore, dsn: str, schema: str
) -> None:
    ref, q1 = actor_subscriber()
    sub1 = store.subscribe_to_all_streams("s", ref, concurrency_limit=2)
    assert q1.subscribed() is sub1
    q2 = QueueSubscriber()
    sub2 = join(store, "s", q2, concurrency_limit=2)
    store.append_to_stream("stream", 0, events(6))
    assert ids(q1.batch()) == [1]
    assert ids(q2.batch()) == [2]
    ref.stop()
    sub2.ack(2)
    assert ids(q2.batch(timeout=5)) == [1]  # noticed on a tick at the latest
    assert checkpoint(dsn, schema, ALL, "s") == 0
    sub2.ack(1)
    assert ids(q2.batch()) == [3]
    last_ack(dsn, schema, "s", 2)
    q2.nothing(QUIET)


def test_shuts_down_subscription_when_all_subscribers_are_down(store: EventStore) -> None:
    ref1, _q1 = actor_subscriber()
    ref2, _q2 = actor_subscriber()
    store.subscribe_to_all_streams("s", ref1, concurrency_limit=2)
    store.subscribe_to_all_streams("s", ref2, concurrency_limit=2)
    store.append_to_stream("stream", 0, events(6))
    ref1.stop()
    ref2.stop()
    # The name is free again once the subscription ended.
    q3 = QueueSubscriber()
    sub3 = wait_until(
        lambda: _try_subscribe(store, "s", q3), timeout=5, what="the subscription to end"
    )
    assert q3.subscribed() is sub3
    assert ids(q3.batch()) == [1, 2, 3, 4, 5, 6]  # nothing was acked


def _try_subscribe(store: EventStore, name: str, q: QueueSubscriber) -> Subscription | None:
    try:
        return store.subscribe_to_all_streams(name, q)
    except SubscriptionAlreadyExistsError:
        return None


def test_sends_pending_events_to_newly_connected_subscribers(store: EventStore) -> None:
    ((sub1, q1),) = group(store, "s", 1, concurrency_limit=3)
    store.append_to_stream("stream", 0, events(6))
    assert ids(q1.batch()) == [1]
    sub1.ack(1)
    assert ids(q1.batch()) == [2]
    ((sub2, q2),) = group(store, "s", 1, concurrency_limit=3)
    assert ids(q2.batch()) == [3]
    ((_sub3, q3),) = group(store, "s", 1, concurrency_limit=3)
    assert ids(q3.batch()) == [4]
    sub2.ack(3)
    assert ids(q2.batch()) == [5]
    sub1.ack(2)
    assert ids(q1.batch()) == [6]
    for q in (q1, q2, q3):
        q.nothing(QUIET)


def test_excludes_events_filtered_by_selector(store: EventStore, dsn: str, schema: str) -> None:
    def selector(event: RecordedEvent) -> bool:
        return event.event_id % 3 == 0

    (sub1, q1), (sub2, q2) = group(store, "s", 2, concurrency_limit=2, selector=selector)
    store.append_to_stream("stream", 0, events(12))
    assert ids(q1.batch()) == [3]
    assert ids(q2.batch()) == [6]
    sub1.ack(3)
    last_ack(dsn, schema, "s", 5)
    assert ids(q1.batch()) == [9]
    sub1.ack(9)
    assert ids(q1.batch()) == [12]
    sub2.ack(6)
    last_ack(dsn, schema, "s", 11)
    sub1.ack(12)
    last_ack(dsn, schema, "s", 12)
    q1.nothing(QUIET)
    q2.nothing(0)


# "concurrent subscriber buffer size"
def test_subscriber_sets_its_buffer_size(store: EventStore) -> None:
    ((sub1, q1),) = group(store, "s", 1, concurrency_limit=2, buffer_size=2)
    store.append_to_stream("stream", 0, events(6))
    for expected in ([1, 2], [3, 4], [5, 6]):
        batch = q1.batch()
        assert ids(batch) == expected
        sub1.ack(batch)
    q1.nothing(QUIET)


def test_round_robin_balancing_with_different_buffer_sizes(store: EventStore) -> None:
    ((sub1, q1),) = group(store, "s", 1, concurrency_limit=2, buffer_size=2)
    ((sub2, q2),) = group(store, "s", 1, concurrency_limit=2, buffer_size=3)
    store.append_to_stream("stream", 0, events(12))
    assert ids(q1.batch()) == [1, 3]
    assert ids(q2.batch()) == [2, 4, 5]
    sub1.ack(1)
    assert ids(q1.batch()) == [6]
    sub2.ack([2, 4, 5])
    assert ids(q2.batch()) == [7, 8, 9]
    sub1.ack([3, 6])
    assert ids(q1.batch()) == [10, 11]
    sub2.ack(7)
    assert ids(q2.batch()) == [12]
    sub2.ack(12)
    q1.nothing(QUIET)
    q2.nothing(0)


# "concurrent subscription catch-up"
def test_catch_up_sends_event_to_next_available_subscriber_after_ack(store: EventStore) -> None:
    store.append_to_stream("stream", 0, events(3))
    (sub1, q1), (sub2, q2) = group(store, "s", 2, concurrency_limit=2)
    store.append_to_stream("stream", 3, events(3, start=4))
    assert ids(q1.batch()) == [1]
    assert ids(q2.batch()) == [2]
    for position in (2, 3, 4):
        sub2.ack(position)
        assert ids(q2.batch()) == [position + 1]
    sub1.ack(1)
    assert ids(q1.batch()) == [6]
    q1.nothing(QUIET)
    q2.nothing(0)


# subscription_partitioning_test.exs
def by_n(modulo: int) -> Callable[[RecordedEvent], int]:
    return lambda event: event.data["n"] % modulo


def test_partitions_events_by_partition_by(store: EventStore) -> None:
    (_, q1), (_, q2), (_, q3) = group(
        store, "s", 3, concurrency_limit=3, buffer_size=3, partition_by=by_n(2)
    )
    store.append_to_stream("stream", 0, events(9))
    assert ids(q1.batch()) == [1, 3, 5]
    assert ids(q2.batch()) == [2, 4, 6]
    for q in (q1, q2, q3):
        q.nothing(QUIET)


def test_sends_new_events_to_same_partition_after_ack(store: EventStore) -> None:
    (sub1, q1), (sub2, q2), (sub3, q3) = group(
        store, "s", 3, concurrency_limit=3, buffer_size=2, partition_by=by_n(3)
    )
    store.append_to_stream("stream", 0, events(9))
    assert ids(q1.batch()) == [1, 4]
    assert ids(q2.batch()) == [2, 5]
    assert ids(q3.batch()) == [3, 6]
    sub1.ack([1, 4])
    assert ids(q1.batch()) == [7]
    sub1.ack(7)
    q1.nothing(QUIET)
    sub2.ack([2, 5])
    assert ids(q2.batch()) == [8]
    sub3.ack([3, 6])
    assert ids(q3.batch()) == [9]


def test_redistributes_partitions_once_acked_and_another_subscriber_is_free(
    store: EventStore,
) -> None:
    options: dict[str, Any] = {"concurrency_limit": 3, "buffer_size": 2, "partition_by": by_n(4)}
    (sub1, q1), (sub2, q2) = group(store, "s", 2, **options)
    store.append_to_stream("stream", 0, events(16))
    assert ids(q1.batch()) == [1, 5]
    assert ids(q2.batch()) == [2, 6]
    sub1.ack([1, 5])
    assert ids(q1.batch()) == [3, 7]
    ((sub3, q3),) = group(store, "s", 1, **options)
    for expected in ([4, 8], [9, 13], [12, 16]):
        batch = q3.batch()
        assert ids(batch) == expected
        sub3.ack(batch)
    q3.nothing(QUIET)
    sub1.ack([3, 7])
    assert ids(q1.batch()) == [11, 15]
    sub2.ack([2, 6])
    assert ids(q2.batch()) == [10, 14]


# subscription_partition_subscriber_down_test.exs
@pytest.mark.parametrize("buffer_size", [1, 2])
def test_partition_of_a_subscriber_that_dies_moves_in_order(
    store: EventStore, dsn: str, schema: str, buffer_size: int
) -> None:
    ref, q1 = actor_subscriber()
    sub1 = store.subscribe_to_all_streams(
        "s", ref, concurrency_limit=2, buffer_size=buffer_size, partition_by=_stream
    )
    assert q1.subscribed() is sub1
    q2 = QueueSubscriber()
    sub2 = join(store, "s", q2, concurrency_limit=2, buffer_size=buffer_size, partition_by=_stream)
    store.append_to_stream("stream-a", 0, events(4))
    store.append_to_stream("stream-b", 0, events(4, start=5))
    first1, first2 = q1.batch(), q2.batch()
    assert {first1[0].stream_uuid, first2[0].stream_uuid} == {"stream-a", "stream-b"}
    assert len(first1) == len(first2) == buffer_size
    ref.stop()
    got = list(first2)
    sub2.ack(first2)
    deadline = time.monotonic() + 10
    while len(got) < 8:  # the dead one's events come again, then the rest
        batch = q2.batch(timeout=max(0.1, deadline - time.monotonic()))
        # One partition at a time: never a batch of two streams.
        assert len({e.stream_uuid for e in batch}) == 1
        got.extend(batch)
        sub2.ack(batch)
    q2.nothing(QUIET)
    # Each stream whole and in order (the dead subscriber's events first, again).
    for stream in ("stream-a", "stream-b"):
        assert [e.stream_version for e in got if e.stream_uuid == stream] == [1, 2, 3, 4]
    last_ack(dsn, schema, "s", 8)


def _stream(event: RecordedEvent) -> str:
    return event.stream_uuid


# Beyond the Elixir suite
def test_unsubscribe_of_one_handle_removes_only_that_subscriber(store: EventStore) -> None:
    (sub1, q1), (sub2, q2) = group(store, "s", 2, concurrency_limit=2)
    store.append_to_stream("stream", 0, events(4))
    assert ids(q1.batch()) == [1]
    assert ids(q2.batch()) == [2]
    sub1.unsubscribe()
    sub2.ack(2)
    assert ids(q2.batch()) == [1]  # sub1's event in flight goes to sub2
    sub2.ack(1)
    assert ids(q2.batch()) == [3]
    q1.nothing(QUIET)
    # A new subscriber may take the free place.
    ((sub3, q3),) = group(store, "s", 1, concurrency_limit=2)
    assert ids(q3.batch()) == [4]
    sub2.unsubscribe()
    sub3.unsubscribe()  # the last one: the subscription ends, nothing told
    q3.nothing(QUIET)
    ((_sub4, q4),) = group(store, "s", 1)  # the name is free again
    assert ids(q4.batch()) == [3, 4]


def test_unsubscribe_by_name_stops_every_subscriber(store: EventStore) -> None:
    (_, q1), (_, q2) = group(store, "s", 2, concurrency_limit=2)
    store.unsubscribe_from_all_streams("s")
    store.append_to_stream("stream", 0, events(2))
    q1.nothing(QUIET)
    q2.nothing(0)


def test_restart_delivers_again_events_acked_above_the_checkpoint(
    store: EventStore, dsn: str, schema: str
) -> None:
    (_sub1, q1), (sub2, q2) = group(store, "s", 2, concurrency_limit=2)
    store.append_to_stream("stream", 0, events(4))
    assert ids(q1.batch()) == [1]
    assert ids(q2.batch()) == [2]
    sub2.ack(2)
    assert ids(q2.batch()) == [3]
    sub2.ack(3)
    assert ids(q2.batch()) == [4]
    store.unsubscribe_from_all_streams("s")
    assert checkpoint(dsn, schema, ALL, "s") == 0
    ((_sub, q),) = group(store, "s", 1)
    assert ids(q.batch()) == [1, 2, 3, 4]  # at least once


def test_stream_subscription_with_competing_consumers(
    store: EventStore, dsn: str, schema: str
) -> None:
    store.append_to_stream("other", 0, events(2))
    q1, q2 = QueueSubscriber(), QueueSubscriber()
    sub1 = store.subscribe_to_stream("stream", "s", q1, concurrency_limit=2)
    sub2 = store.subscribe_to_stream("stream", "s", q2, concurrency_limit=2)
    assert q1.subscribed() is sub1 and q2.subscribed() is sub2
    store.append_to_stream("stream", 0, events(4))
    b1, b2 = q1.batch(), q2.batch()
    assert [e.stream_version for e in b1 + b2] == [1, 2]
    sub1.ack(b1)
    sub2.ack(b2)
    rest = q1.collect(sub1, 1) + q2.collect(sub2, 1)
    assert sorted(e.stream_version for e in rest) == [3, 4]
    wait_until(lambda: checkpoint(dsn, schema, "stream", "s") == 4)


def test_nack_retry_skip_park_with_competing_consumers(store: EventStore) -> None:
    (sub1, q1), (sub2, q2) = group(store, "s", 2, concurrency_limit=2, retry_delay=0, max_retries=1)
    store.append_to_stream("stream", 0, events(3))
    e1, e2 = q1.batch()[0], q2.batch()[0]
    assert (e1.event_id, e2.event_id) == (1, 2)
    sub1.nack(e1, "retry")
    again = q1.batch()  # sub1 is the one with room
    assert ids(again) == [1]
    sub1.nack(again[0], "retry", reason="still failing")  # max_retries reached: parked
    assert ids(q1.batch()) == [3]
    sub2.nack(e2, "skip")
    sub1.ack(3)
    wait_until(lambda: store.subscription_info("s").checkpoint == 3)
    parked = store.parked_events("s")
    assert [(p.event.event_id, p.reason, p.retries) for p in parked] == [(1, "still failing", 1)]
    assert store.replay_parked("s") == 1
    assert ids(q2.batch(timeout=5)) == [1]  # to the one sent to least recently
    sub2.ack(1)
    wait_until(lambda: store.parked_events("s") == [], timeout=5)
    assert store.subscription_info("s").checkpoint == 3
    q1.nothing(QUIET)
    q2.nothing(0)


def test_partition_by_failure_stops_the_subscription(store: EventStore) -> None:
    def fails(event: RecordedEvent) -> Any:
        if event.data["n"] == 3:
            raise RuntimeError("boom")
        return "one key"

    (_sub1, q1), (_sub2, q2) = group(
        store, "s", 2, concurrency_limit=2, buffer_size=2, partition_by=fails
    )
    store.append_to_stream("stream", 0, events(4))
    assert ids(q1.batch()) == [1, 2]  # the events before the bad one
    for q in (q1, q2):
        message = q.next(timeout=5)
        assert isinstance(message, SubscriptionStopped), message
        assert "partition_by failed on event 3" in message.reason


@pytest.mark.parametrize("when", ["ack, then stopped", "stopped, then ack"])
def test_events_acked_before_a_failure_are_stored(
    store: EventStore, dsn: str, schema: str, when: str
) -> None:
    """Issue 17, item 21, with competing consumers: the acks of the events delivered before
    the one partition_by fails on are stored, also when told after SubscriptionStopped."""

    def fails(event: RecordedEvent) -> Any:
        if event.data["n"] == 4:
            raise RuntimeError("boom")
        return event.stream_uuid

    ((sub1, q1),) = group(store, "s", 1, concurrency_limit=2, buffer_size=3, partition_by=fails)
    store.append_to_stream("stream", 0, events(5))
    batch = q1.batch()
    assert ids(batch) == [1, 2, 3]
    if when == "ack, then stopped":
        sub1.ack(batch)
    message = q1.next(timeout=5)
    assert isinstance(message, SubscriptionStopped), message
    if when == "stopped, then ack":
        sub1.ack(batch[:2])
        sub1.ack(batch[2])
    last_ack(dsn, schema, "s", 3)


def test_ack_in_a_transaction_is_refused(store: EventStore) -> None:
    ((sub1, _q1),) = group(store, "s", 1, concurrency_limit=2)
    with pytest.raises(ValueError, match="concurrency_limit=1"):
        sub1.ack(1, conn=object())


def test_a_replay_is_acked_and_new_events_keep_arriving_acks_in_transactions_refused(
    store: EventStore, dsn: str, schema: str
) -> None:
    """Issue 17, item 3, on the competing path: an ack with conn= is refused before anything
    is written (also for a replayed event); a plain ack of the replay moves nothing back."""
    ((sub1, q1),) = group(store, "s", 1, concurrency_limit=2, buffer_size=3)
    store.append_to_stream("stream", 0, events(3))
    batch = q1.batch()
    assert ids(batch) == [1, 2, 3]
    sub1.nack(batch[1], "park", "later")
    sub1.ack([batch[0], batch[2]])
    last_ack(dsn, schema, "s", 3)
    assert store.replay_parked("s") == 1
    replayed = q1.batch()
    assert ids(replayed) == [2]
    refused = pytest.raises(ValueError, match="concurrency_limit=1")
    with psycopg.connect(dsn) as conn, conn.transaction(), refused:
        sub1.ack(replayed, conn=conn)
    assert [p.event.event_id for p in store.parked_events("s")] == [2]
    sub1.ack(replayed)
    wait_until(lambda: store.parked_events("s") == [], what="off the parked list")
    store.append_to_stream("stream", 3, events(2, start=4))
    assert ids(q1.collect(sub1, 2)) == [4, 5]
    last_ack(dsn, schema, "s", 5)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"concurrency_limit": 0}, ValueError),
        ({"concurrency_limit": -1}, ValueError),
        ({"concurrency_limit": "2"}, TypeError),
        ({"concurrency_limit": True}, TypeError),
        ({"buffer_size": 0}, ValueError),
        ({"buffer_size": 1.5}, TypeError),
        ({"partition_by": "stream_uuid"}, TypeError),
        ({"concurrency_limit": 2, "standby": True}, ValueError),
        ({"concurrency_limit": 2, "mixed_batches": True}, ValueError),
    ],
)
def test_bad_options_raise_at_subscribe_time(
    store: EventStore, dsn: str, schema: str, options: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        store.subscribe_to_all_streams("s", QueueSubscriber(), **options)
    with pytest.raises(error):
        store.subscribe_to_stream("stream", "s", QueueSubscriber(), **options)
    assert checkpoint(dsn, schema, ALL, "s") is None  # nothing written


def test_many_events_many_subscribers_nothing_lost_or_skipped(
    store: EventStore, dsn: str, schema: str
) -> None:
    """Four subscribers acking from their own threads, partitions by stream: every event
    once, each stream in order, the checkpoint at the end."""
    streams, per_stream = 8, 50
    got: dict[str, list[int]] = {}
    lock = threading.Lock()
    seen = threading.Event()

    class Worker:
        def tell(self, message: Any) -> None:
            if isinstance(message, Events):
                with lock:
                    for e in message.events:
                        got.setdefault(e.stream_uuid, []).append(e.stream_version)
                    if sum(len(v) for v in got.values()) >= streams * per_stream:
                        seen.set()
                threading.Thread(target=message.subscription.ack, args=(message.events,)).start()

    for _ in range(4):
        store.subscribe_to_all_streams(
            "s", Worker(), concurrency_limit=4, buffer_size=3, partition_by=_stream
        )
    for round_ in range(per_stream // 10):
        for s in range(streams):
            store.append_to_stream(f"s-{s}", round_ * 10, events(10))
    assert seen.wait(20)
    assert sorted(got) == [f"s-{s}" for s in range(streams)]
    for versions in got.values():
        assert versions == list(range(1, per_stream + 1))
    wait_until(lambda: checkpoint(dsn, schema, ALL, "s") == streams * per_stream)


def test_subscribed_is_told_to_each(store: EventStore) -> None:
    q1, q2 = QueueSubscriber(), QueueSubscriber()
    sub1 = store.subscribe_to_all_streams("s", q1, concurrency_limit=2)
    sub2 = store.subscribe_to_all_streams("s", q2, concurrency_limit=2)
    m1, m2 = q1.next(), q2.next()
    assert isinstance(m1, Subscribed) and m1.subscription is sub1
    assert isinstance(m2, Subscribed) and m2.subscription is sub2


def test_a_crashed_actor_restarts_with_every_subscriber(
    store: EventStore, dsn: str, schema: str
) -> None:
    (sub1, q1), (_sub2, q2) = group(store, "s", 2, concurrency_limit=2)
    store.append_to_stream("stream", 0, events(4))
    assert ids(q1.batch()) == [1]
    assert ids(q2.batch()) == [2]
    sub1.ack(1)
    assert ids(q1.batch()) == [3]
    last_ack(dsn, schema, "s", 1)
    ref = store._registry.peek("subscription:" + json.dumps([ALL, "s"]))
    assert ref is not None
    ref.tell(Crash(RuntimeError("crashed by a test")))
    # Both are still members: 2 and 3 (in flight, not acked) come again, one to each.
    got = {ids(q1.batch(timeout=5))[0], ids(q2.batch(timeout=5))[0]}
    assert got == {2, 3}
    with pytest.raises(SubscriptionAlreadyExistsError):
        store.subscribe_to_all_streams("s", QueueSubscriber(), concurrency_limit=2)


def test_asyncio_competing_consumers(dsn: str, schema: str) -> None:
    """Two async iterations under one name share the events; unsubscribing one hands its
    events in flight to the other."""
    from eventstore_actors.aio import AsyncEventStore

    async def main() -> None:
        async with await AsyncEventStore.start(dsn, schema=schema) as store:
            sub1 = await store.subscribe_to_all_streams("s", concurrency_limit=2)
            sub2 = await store.subscribe_to_all_streams("s", concurrency_limit=2)
            with pytest.raises(SubscriptionAlreadyExistsError):
                await store.subscribe_to_all_streams("s", concurrency_limit=2)
            await store.append_to_stream("stream", 0, events(4))
            first1 = await asyncio.wait_for(anext(sub1), 10)
            first2 = await asyncio.wait_for(anext(sub2), 10)
            assert ids(first1) + ids(first2) == [1, 2]
            await sub1.unsubscribe()
            got = list(first2)
            await sub2.ack(first2)
            while len(got) < 4:
                batch = await asyncio.wait_for(anext(sub2), 10)
                got.extend(batch)
                await sub2.ack(batch)
            assert sorted(ids(got)) == [1, 2, 3, 4]
            await sub2.unsubscribe()

    asyncio.run(main())


def test_a_single_subscribers_handle_unsubscribes_it(store: EventStore) -> None:
    """Without competing consumers, `handle.unsubscribe()` is `unsubscribe_from_*`; a handle
    of an earlier subscription of the name does not stop a newer one."""
    old, _ = group(store, "s", 1)[0]
    old.unsubscribe()
    new, q = group(store, "s", 1)[0]
    old.unsubscribe()  # stale: nothing happens
    store.append_to_stream("stream", 0, events(1))
    assert ids(q.batch()) == [1]
    new.unsubscribe()
    store.append_to_stream("stream", 1, events(1, start=2))
    q.nothing(QUIET)
