"""Checkpoint tuning (API part 2): `checkpoint_threshold` and `checkpoint_after`.

The stored checkpoint never passes an unacked event under any setting, during catch-up
included: the Elixir project's pull request 327 fixed a `checkpoint_after` timer that fired
mid catch-up and wrote a checkpoint tens of millions of events ahead. Some cases are ported
from commanded/eventstore's test/subscriptions/subscription_buffer_checkpoint_resume_test.exs
and subscription_buffer_catchup_mode_test.exs (those about `checkpoint_after`, resuming and
catch-up; `buffer_flush_after` and partitions do not apply here).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from support import QueueSubscriber, checkpoint, wait_until

from eventstore_actors import (
    EventData,
    Events,
    EventStore,
    JsonSerializer,
    RecordedEvent,
    SerializationError,
    Subscribed,
    SubscriptionStopped,
)

ALL = "$all"


def typed(event_type: str, count: int) -> list[EventData]:
    return [EventData({"i": i}, event_type=event_type) for i in range(count)]


def stored(dsn: str, schema: str, name: str, stream: str = ALL) -> int:
    return checkpoint(dsn, schema, stream, name) or 0


def subscribe(store: EventStore, name: str, **options: Any) -> tuple[QueueSubscriber, Any]:
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_all_streams(name, subscriber, **options)
    subscriber.subscribed()
    return subscriber, sub


# Without options -------------------------------------------------------------------------------
def test_untuned_checkpoint_follows_each_ack_within_a_second(
    store: EventStore, dsn: str, schema: str
) -> None:
    subscriber, sub = subscribe(store, "plain")
    store.append_to_stream("s", 0, typed("E", 10))
    batch = subscriber.batch()
    for position in (3, 7, 10):
        sub.ack(position)
        wait_until(lambda p=position: stored(dsn, schema, "plain") == p, timeout=1.0)
    assert len(batch) == 10


# checkpoint_threshold --------------------------------------------------------------------------
def test_threshold_alone_writes_every_n_acked_events_and_on_stop(
    store: EventStore, dsn: str, schema: str
) -> None:
    subscriber, sub = subscribe(store, "every5", checkpoint_threshold=5)
    store.append_to_stream("s", 0, typed("E", 20))
    subscriber.batch()
    sub.ack(3)
    sub.ack(5)
    wait_until(lambda: stored(dsn, schema, "every5") == 5, what="the 5th ack written")
    sub.ack(7)
    time.sleep(1.0)  # no time limit: a tick or two pass without writing 7
    assert stored(dsn, schema, "every5") == 5
    sub.ack(12)
    wait_until(lambda: stored(dsn, schema, "every5") == 12, what="5 more acked")
    sub.ack(14)
    store.unsubscribe_from_all_streams("every5")
    assert stored(dsn, schema, "every5") == 14  # the last ack is written on stop


def test_threshold_one_writes_every_ack(store: EventStore, dsn: str, schema: str) -> None:
    subscriber, sub = subscribe(store, "every1", checkpoint_threshold=1, checkpoint_after=60)
    store.append_to_stream("s", 0, typed("E", 5))
    subscriber.batch()
    for position in range(1, 6):
        sub.ack(position)
        wait_until(lambda p=position: stored(dsn, schema, "every1") == p, timeout=1.0)


# checkpoint_after ------------------------------------------------------------------------------
def test_after_alone_writes_once_the_time_passed(store: EventStore, dsn: str, schema: str) -> None:
    subscriber, sub = subscribe(store, "timed", checkpoint_after=0.6)
    store.append_to_stream("s", 0, typed("E", 2000))
    subscriber.batch()  # max_batch 1000
    acked_at = time.monotonic()
    for position in range(1, 1001):  # a thousand acks: no threshold applies
        sub.ack(position)
    value = stored(dsn, schema, "timed")
    if time.monotonic() - acked_at < 0.6:
        assert value == 0, "written before checkpoint_after passed"
    wait_until(lambda: stored(dsn, schema, "timed") == 1000, what="the timed write")
    assert time.monotonic() - acked_at >= 0.6


def test_after_zero_writes_each_ack(store: EventStore, dsn: str, schema: str) -> None:
    subscriber, sub = subscribe(store, "zero", checkpoint_after=0)
    store.append_to_stream("s", 0, typed("E", 3))
    subscriber.batch()
    for position in (1, 2, 3):
        sub.ack(position)
        wait_until(lambda p=position: stored(dsn, schema, "zero") == p, timeout=1.0)


def test_large_settings_write_only_on_stop(store: EventStore, dsn: str, schema: str) -> None:
    subscriber, sub = subscribe(store, "lazy", checkpoint_threshold=10**9, checkpoint_after=10**6)
    store.append_to_stream("s", 0, typed("E", 5))
    sub.ack(subscriber.batch())
    time.sleep(1.0)  # several ticks: neither limit is reached
    assert stored(dsn, schema, "lazy") == 0
    store.unsubscribe_from_all_streams("lazy")
    assert stored(dsn, schema, "lazy") == 5


# Never past an unacked event (the Elixir project's pull request 327) ----------------------------
@pytest.mark.parametrize(
    "options",
    [
        {"checkpoint_after": 0.01},
        {"checkpoint_after": 0},
        {"checkpoint_threshold": 1},
        {"checkpoint_threshold": 7, "checkpoint_after": 0.03},
        {"checkpoint_threshold": 10**9, "checkpoint_after": 10**6},
        {},
    ],
    ids=["after-10ms", "after-0", "threshold-1", "both", "large", "untuned"],
)
def test_checkpoint_never_passes_an_unacked_event_during_catch_up(
    store: EventStore, dsn: str, schema: str, options: dict[str, Any]
) -> None:
    """A slow subscriber mid catch-up (small batches, small max_size so storage is read
    many times), with timers and thresholds firing: before each ack the stored checkpoint is
    at most what was acked."""
    for n in range(6):
        store.append_to_stream(f"s-{n}", 0, typed("E", 100))
    subscriber, sub = subscribe(store, "slow", max_size=20, max_batch=7, **options)
    acked = 0
    while acked < 600:
        message = subscriber.next()
        assert isinstance(message, Events)
        events: list[RecordedEvent] = list(message.events)
        assert events[0].event_id == acked + 1
        time.sleep(0.005)  # the subscriber is slow: ticks and timers run meanwhile
        value = stored(dsn, schema, "slow")
        assert value <= acked, f"checkpoint {value} stored with only {acked} acked"
        sub.ack(events)
        acked = events[-1].event_id
    store.unsubscribe_from_all_streams("slow")
    assert stored(dsn, schema, "slow") == 600


@pytest.mark.parametrize(
    "options",
    [{"checkpoint_after": 0.01}, {"checkpoint_threshold": 1}, {}],
    ids=["after", "threshold", "untuned"],
)
def test_an_unacked_batch_holds_the_checkpoint_whatever_comes_after(
    store: EventStore, dsn: str, schema: str, options: dict[str, Any]
) -> None:
    """An unacked event followed by thousands of events (filtered out or waiting): timers and
    thresholds fire, the checkpoint stays right before it."""
    store.append_to_stream("a", 0, typed("Keep", 3))
    store.append_to_stream("b", 0, typed("Drop", 3000) + typed("Keep", 1))
    subscriber, sub = subscribe(store, "held", event_types=["Keep"], **options)
    first = subscriber.batch()
    sub.ack(first[0])  # 1 acked; 2 and 3 not
    wait_until(lambda: stored(dsn, schema, "held") == 1, what="the first ack")
    deadline = time.monotonic() + 1.0  # several ticks and health checks
    while time.monotonic() < deadline:
        assert stored(dsn, schema, "held") == 1
        time.sleep(0.05)
    subscriber.nothing(0.05)  # the next batch waits for the ack
    sub.ack(first)
    last = subscriber.batch()
    assert [e.event_id for e in last] == [3004]
    sub.ack(last)
    store.unsubscribe_from_all_streams("held")
    assert stored(dsn, schema, "held") == 3004


def test_stream_subscription_threshold(store: EventStore, dsn: str, schema: str) -> None:
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_stream("s", "s-every3", subscriber, checkpoint_threshold=3)
    subscriber.subscribed()
    store.append_to_stream("s", 0, typed("E", 6))
    subscriber.batch()
    sub.ack(2)
    time.sleep(0.5)
    assert stored(dsn, schema, "s-every3", "s") == 0
    sub.ack(4)
    wait_until(lambda: stored(dsn, schema, "s-every3", "s") == 4, what="3 acked")


# Ported: subscription_buffer_checkpoint_resume_test.exs / catchup_mode_test.exs ---------------
def _collect(subscriber: QueueSubscriber, sub: Any, count: int) -> list[int]:
    return [e.event_id for e in subscriber.collect(sub, count)]


def test_resume_from_checkpoint_receives_only_new_events(store: EventStore) -> None:
    options: dict[str, Any] = {"max_size": 2, "checkpoint_after": 0.05}
    subscriber, sub = subscribe(store, "resume", **options)
    store.append_to_stream("stream1", 0, typed("E", 5))
    assert _collect(subscriber, sub, 5) == [1, 2, 3, 4, 5]
    store.unsubscribe_from_all_streams("resume")
    subscriber, sub = subscribe(store, "resume", **options)
    store.append_to_stream("stream1", 5, typed("E", 5))
    assert _collect(subscriber, sub, 5) == [6, 7, 8, 9, 10]
    subscriber.nothing()


def test_multiple_checkpoint_cycles_maintain_correctness(store: EventStore) -> None:
    options: dict[str, Any] = {"max_size": 2, "checkpoint_after": 0.05}
    for cycle in range(3):
        subscriber, sub = subscribe(store, "cycles", **options)
        store.append_to_stream("stream1", cycle * 2, typed("E", 2))
        assert _collect(subscriber, sub, 2) == [cycle * 2 + 1, cycle * 2 + 2]
        store.unsubscribe_from_all_streams("cycles")


def test_checkpoint_at_max_capacity_then_resume(store: EventStore) -> None:
    options: dict[str, Any] = {"max_size": 2, "checkpoint_after": 0.05}
    subscriber, sub = subscribe(store, "capacity", **options)
    store.append_to_stream("stream1", 0, typed("E", 5))
    sizes = []
    got: list[int] = []
    while len(got) < 5:
        message = subscriber.next()
        if isinstance(message, Subscribed):
            continue
        assert isinstance(message, Events)
        sizes.append(len(message.events))
        got.extend(e.event_id for e in message.events)
        sub.ack(message.events)
    assert got == [1, 2, 3, 4, 5] and max(sizes) <= 2
    store.unsubscribe_from_all_streams("capacity")
    subscriber, sub = subscribe(store, "capacity", **options)
    store.append_to_stream("stream1", 5, typed("E", 1))
    assert _collect(subscriber, sub, 1) == [6]


def test_catch_up_to_live_loses_and_replays_nothing(store: EventStore) -> None:
    subscriber, sub = subscribe(store, "transition", max_size=2, checkpoint_threshold=2)
    store.append_to_stream("stream1", 0, typed("E", 3))
    got = _collect(subscriber, sub, 3)
    store.append_to_stream("stream1", 3, typed("E", 3))
    got += _collect(subscriber, sub, 3)
    store.append_to_stream("stream1", 6, typed("E", 3))
    got += _collect(subscriber, sub, 3)
    assert got == list(range(1, 10))
    subscriber.nothing()


def test_large_catch_up_in_order(store: EventStore) -> None:
    store.append_to_stream("stream1", 0, typed("E", 50))
    subscriber, sub = subscribe(store, "large", max_size=5, checkpoint_after=0.1)
    assert _collect(subscriber, sub, 50) == list(range(1, 51))


# Acks are stored whatever ends the subscription (issue 17, item 21) -----------------------------
class Picky(JsonSerializer):
    """Cannot rebuild events of type Bad."""

    def deserialize(self, data: bytes, type: str | None = None) -> Any:
        if type == "Bad":
            raise SerializationError("cannot rebuild Bad")
        return super().deserialize(data, type)


class Mortal(QueueSubscriber):
    """A subscriber that can die (`is_alive` is what the subscription checks)."""

    def __init__(self) -> None:
        super().__init__()
        self.alive = True

    def is_alive(self) -> bool:
        return self.alive


def _fails_on_bad(event: RecordedEvent) -> Any:
    if event.event_type == "Bad":
        raise RuntimeError("cannot take Bad")
    return event


ENDS_BY_ITSELF = ["bad event", "mapper", "selector"]
TUNINGS = {"untuned": {}, "large": {"checkpoint_threshold": 10**9, "checkpoint_after": 10**6}}


@pytest.mark.parametrize("tuning", sorted(TUNINGS))
@pytest.mark.parametrize("when", ["ack, then stopped", "stopped, then ack"])
@pytest.mark.parametrize("reason", ENDS_BY_ITSELF)
def test_events_acked_before_a_failure_are_stored(
    make_store: Any, dsn: str, schema: str, reason: str, when: str, tuning: str
) -> None:
    """Events 1-3, then one the subscription cannot take (4): 1-3 are delivered, the
    subscription stops, and the ack of 3 is stored, whether it comes before the
    SubscriptionStopped is read or after."""
    options: dict[str, Any] = dict(TUNINGS[tuning])
    if reason == "bad event":
        store = make_store(serializer=Picky())
    else:
        store = make_store()
        options["mapper" if reason == "mapper" else "selector"] = _fails_on_bad
    store.append_to_stream("s", 0, [*typed("E", 3), *typed("Bad", 1), *typed("E", 1)])
    subscriber, sub = subscribe(store, "fails", **options)
    batch = subscriber.batch()
    assert [e.event_id for e in batch] == [1, 2, 3]
    if when == "ack, then stopped":
        sub.ack(batch)
    message = subscriber.next()
    assert isinstance(message, SubscriptionStopped), message
    if when == "stopped, then ack":
        sub.ack(batch)
    wait_until(lambda: stored(dsn, schema, "fails") == 3, timeout=5, what="checkpoint 3")
    again, _ = subscribe(store, "fails", **options)  # the name is free; 1-3 come no more
    assert isinstance(again.next(), SubscriptionStopped)


@pytest.mark.parametrize("tuning", sorted(TUNINGS))
@pytest.mark.parametrize("reason", ["unsubscribe", "subscriber death", "store stop"])
def test_acks_are_stored_whatever_stops_the_subscription(
    make_store: Any, dsn: str, schema: str, reason: str, tuning: str
) -> None:
    store = make_store()
    subscriber = Mortal()
    sub = store.subscribe_to_all_streams("ends", subscriber, **TUNINGS[tuning])
    subscriber.subscribed()
    store.append_to_stream("s", 0, typed("E", 3))
    sub.ack(subscriber.batch())
    if reason == "unsubscribe":
        store.unsubscribe_from_all_streams("ends")
    elif reason == "subscriber death":
        subscriber.alive = False
        message = subscriber.next()
        assert isinstance(message, SubscriptionStopped), message
    else:
        store.stop()
    wait_until(lambda: stored(dsn, schema, "ends") == 3, timeout=5, what="checkpoint 3")


def test_an_ack_told_after_a_failure_is_not_stored_once_a_later_run_holds_the_name(
    make_store: Any, dsn: str, schema: str
) -> None:
    """Those events are the later run's to ack (see test_a_stale_handle_cannot_ack_a_later_
    subscription): the late ack of the run that stopped is dropped."""
    picky = make_store(serializer=Picky())
    picky.append_to_stream("s", 0, [*typed("E", 3), *typed("Bad", 1)])
    subscriber, sub = subscribe(picky, "fails")
    batch = subscriber.batch()
    assert isinstance(subscriber.next(), SubscriptionStopped)
    later, _ = subscribe(make_store(), "fails")  # it can rebuild every event
    assert [e.event_id for e in later.batch()] == [1, 2, 3, 4]
    started = time.monotonic()
    sub.ack(batch)
    assert time.monotonic() - started < 3.0  # a late ack is stored (or not) before it returns
    assert stored(dsn, schema, "fails") == 0
