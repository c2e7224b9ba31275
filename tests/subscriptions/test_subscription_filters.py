"""Subscription filters (API part 2, "Subscriptions: new options"): `selector` in the
subscription actor, `event_types` and `stream_prefix` in the database. Filtered events are
never delivered and count as acked: the stored checkpoint moves past them, so a subscription
whose filter matches nothing does not read the store again after a restart.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from support import QueueSubscriber, checkpoint, wait_until

from eventstore_actors import (
    EventData,
    Events,
    EventStore,
    RecordedEvent,
    Subscribed,
    SubscriptionStopped,
)
from eventstore_actors.storage import reader

ALL = "$all"


def typed(event_type: str, count: int, **data: Any) -> list[EventData]:
    return [EventData({"i": i, **data}, event_type=event_type) for i in range(count)]


def drain(subscriber: QueueSubscriber, sub: Any, count: int) -> list[RecordedEvent]:
    got: list[RecordedEvent] = subscriber.collect(sub, count)
    return got


@pytest.fixture
def rows_read(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """How many rows each catch-up read of a subscription returned (a spy on the reader)."""
    counts: list[int] = []
    all_covered, stream_covered = reader.read_all_covered, reader.read_stream_covered

    def spy_all(*args: Any, **kwargs: Any) -> Any:
        found = all_covered(*args, **kwargs)
        counts.append(len(found[0]))
        return found

    def spy_stream(*args: Any, **kwargs: Any) -> Any:
        found = stream_covered(*args, **kwargs)
        counts.append(len(found[0]))
        return found

    monkeypatch.setattr(reader, "read_all_covered", spy_all)
    monkeypatch.setattr(reader, "read_stream_covered", spy_stream)
    yield counts


# event_types and stream_prefix -----------------------------------------------------------------
def test_event_types_catch_up_and_live(store: EventStore, dsn: str, schema: str) -> None:
    store.append_to_stream("a", 0, typed("Keep", 2) + typed("Drop", 3) + typed("Keep", 1))
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_all_streams("types", subscriber, event_types=["Keep", "Other"])
    subscriber.subscribed()
    got = drain(subscriber, sub, 3)
    assert [e.event_id for e in got] == [1, 2, 6]
    store.append_to_stream("b", 0, typed("Drop", 2) + typed("Other", 1))  # 7, 8, 9
    got = drain(subscriber, sub, 1)
    assert [(e.event_id, e.event_type) for e in got] == [(9, "Other")]
    subscriber.nothing()
    wait_until(lambda: checkpoint(dsn, schema, ALL, "types") == 9, what="checkpoint 9")


def test_filtered_tail_moves_the_checkpoint(store: EventStore, dsn: str, schema: str) -> None:
    """Events filtered out after the last delivered one count as acked too."""
    store.append_to_stream("a", 0, typed("Keep", 1))
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_all_streams("tail", subscriber, event_types=["Keep"])
    subscriber.subscribed()
    drain(subscriber, sub, 1)
    store.append_to_stream("a", 1, typed("Drop", 4))  # live, filtered: 2..5
    wait_until(lambda: checkpoint(dsn, schema, ALL, "tail") == 5, what="checkpoint 5")
    subscriber.nothing()


def test_stream_prefix_catch_up_and_live(store: EventStore) -> None:
    store.append_to_stream("order-1", 0, typed("E", 2))
    store.append_to_stream("user-1", 0, typed("E", 2))
    store.append_to_stream("order_x", 0, typed("E", 1))  # "_" is literal, not a wildcard
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_all_streams("orders", subscriber, stream_prefix="order-")
    subscriber.subscribed()
    got = drain(subscriber, sub, 2)
    assert {e.stream_uuid for e in got} == {"order-1"}
    store.append_to_stream("user-2", 0, typed("E", 1))
    store.append_to_stream("order-2", 0, typed("E", 1))
    got = drain(subscriber, sub, 1)
    assert [e.stream_uuid for e in got] == ["order-2"]
    subscriber.nothing()


def test_event_types_and_prefix_together(store: EventStore) -> None:
    store.append_to_stream("order-1", 0, typed("Placed", 1) + typed("Paid", 1))
    store.append_to_stream("user-1", 0, typed("Placed", 1))
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_all_streams(
        "both", subscriber, event_types=["Placed"], stream_prefix="order-"
    )
    subscriber.subscribed()
    got = drain(subscriber, sub, 1)
    assert [(e.stream_uuid, e.event_type) for e in got] == [("order-1", "Placed")]
    subscriber.nothing()


def test_event_types_on_a_stream_subscription(
    store: EventStore, dsn: str, schema: str, rows_read: list[int]
) -> None:
    store.append_to_stream("s", 0, typed("A", 3) + typed("B", 2))
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_stream("s", "only-b", subscriber, event_types=["B"])
    subscriber.subscribed()
    got = drain(subscriber, sub, 2)
    assert [e.event_number for e in got] == [4, 5]
    assert sum(rows_read) == 2  # the database filtered: the A events were never moved
    store.append_to_stream("s", 5, typed("A", 2) + typed("B", 1))  # 6, 7 filtered, 8
    got = drain(subscriber, sub, 1)
    assert [e.event_number for e in got] == [8]
    subscriber.nothing()
    wait_until(lambda: checkpoint(dsn, schema, "s", "only-b") == 8, what="checkpoint 8")


def test_event_types_on_a_linking_stream(store: EventStore) -> None:
    """Linked events are filtered by their type too (the link part of the stream read)."""
    store.append_to_stream("src", 0, typed("A", 2) + typed("B", 2))
    source = store.read_stream_forward("src")
    store.link_to_stream("links", 0, source)
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_stream("links", "linked-b", subscriber, event_types=["B"])
    subscriber.subscribed()
    got = drain(subscriber, sub, 2)
    assert [(e.event_number, e.event_type) for e in got] == [(3, "B"), (4, "B")]
    subscriber.nothing()


def test_catch_up_reads_move_only_what_is_delivered(
    store: EventStore, rows_read: list[int]
) -> None:
    for n in range(5):
        store.append_to_stream("s", n * 201, typed("Drop", 200) + typed("Keep", 1))
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_all_streams("few", subscriber, event_types=["Keep"])
    subscriber.subscribed()
    got = drain(subscriber, sub, 5)
    assert [e.event_id for e in got] == [201, 402, 603, 804, 1005]
    assert sum(rows_read) == 5


def test_matching_nothing_does_not_reread_after_restart(
    store: EventStore, dsn: str, schema: str, rows_read: list[int]
) -> None:
    """5,000 events the filter drops, live: the stored checkpoint follows them (within the
    normal interval), so a restart reads nothing old; and a catch-up over them moves the
    checkpoint just the same."""
    subscriber = QueueSubscriber()
    store.subscribe_to_all_streams("none", subscriber, event_types=["Never"])
    subscriber.subscribed()
    for n in range(10):
        store.append_to_stream(f"s-{n}", 0, typed("Drop", 500))
    wait_until(lambda: checkpoint(dsn, schema, ALL, "none") == 5000, what="checkpoint 5000")
    store.unsubscribe_from_all_streams("none")

    rows_read.clear()
    again = QueueSubscriber()
    sub = store.subscribe_to_all_streams("none", again, event_types=["Never"])
    again.subscribed()
    store.append_to_stream("late", 0, typed("Never", 1))
    got = drain(again, sub, 1)
    assert [e.event_id for e in got] == [5001]
    # None of the 5,000 old rows is read again: event 5001 comes either from a catch-up read
    # (one row) or straight from the publisher (no read), depending on timing.
    assert sum(rows_read) <= 1

    # A subscription from the origin over the same store: nothing delivered, checkpoint moved.
    third = QueueSubscriber()
    store.subscribe_to_all_streams("other", third, event_types=["Nothing"])
    third.subscribed()
    wait_until(lambda: checkpoint(dsn, schema, ALL, "other") == 5001, what="checkpoint 5001")
    third.nothing()


def test_filtered_checkpoint_is_written_with_checkpoint_threshold(
    store: EventStore, dsn: str, schema: str
) -> None:
    """Filtered positions count towards checkpoint_threshold."""
    subscriber = QueueSubscriber()
    store.subscribe_to_all_streams(
        "tuned-none", subscriber, event_types=["Never"], checkpoint_threshold=100
    )
    subscriber.subscribed()
    store.append_to_stream("s", 0, typed("Drop", 300))
    wait_until(lambda: (checkpoint(dsn, schema, ALL, "tuned-none") or 0) >= 200, what="checkpoint")


# selector --------------------------------------------------------------------------------------
def test_selector_catch_up_and_live(store: EventStore, dsn: str, schema: str) -> None:
    store.append_to_stream("s", 0, [EventData({"n": n}, event_type="N") for n in range(1, 7)])
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_all_streams(
        "even", subscriber, selector=lambda e: e.data["n"] % 2 == 0
    )
    subscriber.subscribed()
    got = drain(subscriber, sub, 3)
    assert [e.data["n"] for e in got] == [2, 4, 6]
    store.append_to_stream("s", 6, [EventData({"n": n}, event_type="N") for n in (7, 8, 9)])
    got = drain(subscriber, sub, 1)
    assert [e.data["n"] for e in got] == [8]
    subscriber.nothing()
    wait_until(lambda: checkpoint(dsn, schema, ALL, "even") == 9, what="checkpoint 9")


def test_selector_on_a_stream_subscription(store: EventStore, dsn: str, schema: str) -> None:
    store.append_to_stream("s", 0, [EventData({"n": n}, event_type="N") for n in range(1, 4)])
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_stream("s", "odd", subscriber, selector=lambda e: e.data["n"] % 2)
    subscriber.subscribed()
    assert [e.data["n"] for e in drain(subscriber, sub, 2)] == [1, 3]
    store.append_to_stream("s", 3, [EventData({"n": n}, event_type="N") for n in (4, 5, 6)])
    assert [e.data["n"] for e in drain(subscriber, sub, 1)] == [5]
    wait_until(lambda: checkpoint(dsn, schema, "s", "odd") == 6, what="checkpoint 6")
    subscriber.nothing()


def _boom_on(n: int) -> Any:
    def selector(event: RecordedEvent) -> bool:
        if event.data["n"] == n:
            raise RuntimeError("selector boom")
        return True

    return selector


def _until_stopped(subscriber: QueueSubscriber, sub: Any) -> tuple[list[int], str]:
    got: list[int] = []
    while True:
        message = subscriber.next()
        if isinstance(message, Subscribed):
            continue
        if isinstance(message, SubscriptionStopped):
            return got, message.reason
        assert isinstance(message, Events)
        got.extend(e.data["n"] for e in message.events)
        sub.ack(message.events)


def test_selector_that_raises_in_catch_up_stops_after_what_came_before(
    store: EventStore,
) -> None:
    store.append_to_stream("s", 0, [EventData({"n": n}, event_type="N") for n in range(1, 6)])
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_all_streams("boom", subscriber, selector=_boom_on(3))
    got, reason = _until_stopped(subscriber, sub)
    assert got == [1, 2]
    assert "selector" in reason and "boom" in reason
    subscriber.nothing()


def test_selector_that_raises_live_stops_after_what_came_before(store: EventStore) -> None:
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_all_streams("boom-live", subscriber, selector=_boom_on(3))
    subscriber.subscribed()
    store.append_to_stream("s", 0, [EventData({"n": n}, event_type="N") for n in range(1, 6)])
    got, reason = _until_stopped(subscriber, sub)
    assert got == [1, 2]
    assert "selector" in reason
    subscriber.nothing()


def test_selector_that_raises_on_a_stream_subscription(store: EventStore) -> None:
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_stream("s", "boom-s", subscriber, selector=_boom_on(2))
    subscriber.subscribed()
    store.append_to_stream("s", 0, [EventData({"n": n}, event_type="N") for n in range(1, 4)])
    got, reason = _until_stopped(subscriber, sub)
    assert got == [1]
    assert "selector" in reason


# Bad input ---------------------------------------------------------------------------------------
def _subscription_rows(dsn: str, schema: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f'SELECT count(*) FROM "{schema}".subscriptions').fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"stream_prefix": "x-"}, ValueError),
        ({"event_types": "Single"}, TypeError),
        ({"event_types": []}, ValueError),
        ({"event_types": [1]}, TypeError),
        ({"selector": 5}, TypeError),
        ({"checkpoint_threshold": 0}, ValueError),
        ({"checkpoint_threshold": -3}, ValueError),
        ({"checkpoint_threshold": 1.5}, TypeError),
        ({"checkpoint_after": -0.1}, ValueError),
        ({"checkpoint_after": float("nan")}, ValueError),
        ({"checkpoint_after": "1"}, TypeError),
    ],
)
def test_bad_options_raise_and_write_nothing(
    store: EventStore, dsn: str, schema: str, options: dict[str, Any], error: type[Exception]
) -> None:
    subscriber = QueueSubscriber()
    with pytest.raises(error):
        store.subscribe_to_stream("s", "bad", subscriber, **options)
    if "stream_prefix" not in options:
        with pytest.raises(error):
            store.subscribe_to_all_streams("bad", subscriber, **options)
    assert _subscription_rows(dsn, schema) == 0
    subscriber.nothing(0.05)


def test_empty_stream_prefix_is_refused(store: EventStore) -> None:
    with pytest.raises((ValueError, TypeError)):
        store.subscribe_to_all_streams("bad", QueueSubscriber(), stream_prefix="")
