"""link_to_stream (ported from commanded/eventstore test/storage/link_events_test.exs and the
link parts of test/streams/single_stream_test.exs), the expected-version rules, bad input
(nothing written), links racing appends, and subscriptions to a linking stream: positions are
event_numbers, delivered live and in catch-up, from this and from another store instance.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import pytest
from support import QueueSubscriber, checkpoint, wait_until
from support.factory import event_ids, make_events, new_stream, versions
from support.storage_sql import sql

from eventstore_actors import (
    ANY_VERSION,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    CannotAppendToAllStreamError,
    DuplicateEventError,
    EventNotFoundError,
    EventStore,
    RecordedEvent,
    StreamDeletedError,
    StreamExistsError,
    StreamNotFoundError,
    WrongExpectedVersionError,
)

MakeStore = Callable[..., EventStore]


def numbers(events: list[RecordedEvent]) -> list[int]:
    return [e.event_number for e in events]


def source(store: EventStore, count: int = 3) -> list[RecordedEvent]:
    stream = new_stream()
    store.append_to_stream(stream, 0, make_events(count))
    return store.read_stream_forward(stream)


def links_count(dsn: str, schema: str) -> int:
    with sql(dsn, schema) as conn:
        row = conn.execute("SELECT count(*) FROM links").fetchone()
    assert row is not None
    return int(row[0])


# link_events_test.exs ------------------------------------------------------------------------
def test_link_a_single_event_to_a_new_stream(store: EventStore) -> None:
    (event,) = source(store, 1)
    target = new_stream()
    result = store.link_to_stream(target, 0, [event])
    assert result == AppendResult(target, 1, 1, 1, 1)
    (read,) = store.read_stream_forward(target)
    assert read == event and read.event_number == 1
    assert read.stream_uuid == event.stream_uuid and read.stream_version == 1


def test_link_multiple_events_to_a_new_stream(store: EventStore) -> None:
    events = source(store, 3)
    target = new_stream()
    assert store.link_to_stream(target, NO_STREAM, events) == AppendResult(target, 1, 3, 1, 3)
    read = store.read_stream_forward(target)
    assert numbers(read) == [1, 2, 3] and event_ids(read) == [1, 2, 3]
    assert read == events


def test_link_events_that_do_not_exist(store: EventStore, dsn: str, schema: str) -> None:
    source(store, 2)
    target = new_stream()
    with pytest.raises(EventNotFoundError) as err:
        store.link_to_stream(target, 0, [1, 99, 2, 100])
    assert err.value.event_id == 99
    assert links_count(dsn, schema) == 0
    with pytest.raises(StreamNotFoundError):
        store.stream_info(target)  # not even created


def test_link_events_to_the_same_stream_concurrently(make_store: MakeStore) -> None:
    """Five racing links of the same events: one wins, the others are duplicates (some from
    another store instance, as from another process)."""
    stores = [make_store(), make_store()]
    events = source(stores[0], 3)
    target = new_stream()
    results: list[Any] = []
    barrier = threading.Barrier(5)

    def link(i: int) -> None:
        barrier.wait()
        try:
            results.append(stores[i % 2].link_to_stream(target, ANY_VERSION, events))
        except DuplicateEventError as exc:
            results.append(exc)

    threads = [threading.Thread(target=link, args=(i,)) for i in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert [r for r in results if isinstance(r, AppendResult)] == [AppendResult(target, 1, 3, 1, 3)]
    assert sum(isinstance(r, DuplicateEventError) for r in results) == 4
    assert numbers(stores[1].read_stream_forward(target)) == [1, 2, 3]


def test_link_events_to_the_same_stream_twice_fails(
    store: EventStore, dsn: str, schema: str
) -> None:
    events = source(store, 3)
    target = new_stream()
    store.link_to_stream(target, 0, events)
    for again in (events, [events[1]], [4, 2]):  # 4 would be new, 2 is not: nothing written
        store.append_to_stream(new_stream(), 0, make_events(1)) if again == [4, 2] else None
        with pytest.raises(DuplicateEventError):
            store.link_to_stream(target, ANY_VERSION, again)
    assert links_count(dsn, schema) == 3
    assert store.stream_info(target).stream_version == 3


def test_the_same_event_twice_in_one_call_is_a_duplicate(
    store: EventStore, dsn: str, schema: str
) -> None:
    source(store, 2)
    with pytest.raises(DuplicateEventError):
        store.link_to_stream(new_stream(), 0, [1, 2, 1])
    assert links_count(dsn, schema) == 0


def test_a_streams_own_event_cannot_be_linked_into_it(store: EventStore) -> None:
    events = source(store, 2)
    with pytest.raises(DuplicateEventError):
        store.link_to_stream(events[0].stream_uuid, ANY_VERSION, [events[1]])
    assert store.stream_info(events[0].stream_uuid).stream_version == 2


def test_link_events_to_different_streams(store: EventStore) -> None:
    events = source(store, 3)
    for target in (new_stream(), new_stream()):
        assert store.link_to_stream(target, 0, events).last_version == 3
        assert event_ids(store.read_stream_forward(target)) == [1, 2, 3]


# Positions, expected versions, $all ----------------------------------------------------------
def test_links_and_appends_share_the_streams_positions(store: EventStore) -> None:
    events = source(store, 3)  # ids 1-3
    target = new_stream()
    store.append_to_stream(target, 0, make_events(1))  # id 4, position 1
    assert store.link_to_stream(target, 1, [events[0], 2]) == AppendResult(target, 2, 3, 1, 2)
    result = store.append_to_stream(target, 3, make_events(1))  # id 5, position 4
    assert result == AppendResult(target, 4, 4, 5, 5)
    assert store.link_to_stream(target, STREAM_EXISTS, [3]) == AppendResult(target, 5, 5, 3, 3)
    read = store.read_stream_forward(target)
    assert numbers(read) == [1, 2, 3, 4, 5]
    assert event_ids(read) == [4, 1, 2, 5, 3]
    assert versions(read) == [1, 1, 2, 4, 3]
    assert store.stream_info(target).stream_version == 5
    # Links are not events: $all shows each event once, in its own stream.
    all_events = store.read_all_streams_forward()
    assert event_ids(all_events) == [1, 2, 3, 4, 5]
    assert numbers(all_events) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("expected", "error"),
    [
        (0, WrongExpectedVersionError),
        (2, WrongExpectedVersionError),
        (NO_STREAM, StreamExistsError),
    ],
)
def test_link_to_an_existing_stream_checks_the_expected_version(
    store: EventStore, dsn: str, schema: str, expected: Any, error: type[Exception]
) -> None:
    events = source(store, 2)
    target = new_stream()
    store.link_to_stream(target, 0, [events[0]])
    with pytest.raises(error) as err:
        store.link_to_stream(target, expected, [events[1]])
    assert getattr(err.value, "actual_version", 1) == 1
    assert links_count(dsn, schema) == 1


@pytest.mark.parametrize(
    ("expected", "error"),
    [(1, WrongExpectedVersionError), (STREAM_EXISTS, StreamNotFoundError)],
)
def test_link_to_a_missing_stream_checks_the_expected_version(
    store: EventStore, dsn: str, schema: str, expected: Any, error: type[Exception]
) -> None:
    source(store, 1)
    with pytest.raises(error):
        store.link_to_stream(new_stream(), expected, [1])
    assert links_count(dsn, schema) == 0


def test_link_to_a_soft_deleted_stream(store: EventStore, dsn: str, schema: str) -> None:
    events = source(store, 2)
    target = new_stream()
    store.link_to_stream(target, 0, [events[0]])
    store.delete_stream(target, ANY_VERSION)
    for expected in (1, ANY_VERSION, STREAM_EXISTS, NO_STREAM, 0):
        with pytest.raises(StreamDeletedError):
            store.link_to_stream(target, expected, [events[1]])
    assert links_count(dsn, schema) == 1
    # Events of a soft-deleted stream may still be linked elsewhere.
    store.delete_stream(events[0].stream_uuid, ANY_VERSION)
    assert store.link_to_stream(new_stream(), 0, events).last_version == 2


def test_link_to_all_streams_is_refused(store: EventStore) -> None:
    source(store, 1)
    with pytest.raises(CannotAppendToAllStreamError):
        store.link_to_stream("$all", ANY_VERSION, [1])


@pytest.mark.parametrize(
    ("stream", "expected", "items", "error"),
    [
        (None, 0, [1], TypeError),
        ("", 0, [1], ValueError),
        ("x" * 2000, 0, [1], ValueError),
        ("{t}", None, [1], TypeError),
        ("{t}", -1, [1], ValueError),
        ("{t}", True, [1], TypeError),
        ("{t}", "0", [1], TypeError),
        ("{t}", 0, [], ValueError),
        ("{t}", 0, 1, TypeError),
        ("{t}", 0, "1", TypeError),
        ("{t}", 0, b"1", TypeError),
        ("{t}", 0, {1: 1}, TypeError),
        ("{t}", 0, {1}, TypeError),
        ("{t}", 0, [1, None], TypeError),
        ("{t}", 0, [1, True], TypeError),
        ("{t}", 0, [1, 2.0], TypeError),
        ("{t}", 0, [1, "2"], TypeError),
        ("{t}", 0, [1, 0], ValueError),
        ("{t}", 0, [1, -2], ValueError),
        ("{t}", 0, [1, 2**63], ValueError),
    ],
)
def test_bad_arguments_link_nothing(
    store: EventStore,
    dsn: str,
    schema: str,
    stream: Any,
    expected: Any,
    items: Any,
    error: type[Exception],
) -> None:
    source(store, 2)
    target = new_stream()
    with pytest.raises(error):
        store.link_to_stream(target if stream == "{t}" else stream, expected, items)
    assert links_count(dsn, schema) == 0
    with pytest.raises(StreamNotFoundError):
        store.stream_info(target)


def test_links_racing_appends_to_the_linking_stream(make_store: MakeStore) -> None:
    """ANY_VERSION appends and links from two store instances: every position 1..N once, in
    commit order, each caller's result naming the positions it got."""
    stores = [make_store(), make_store()]
    events = source(stores[0], 40)
    target = new_stream()
    results: list[AppendResult] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        store = stores[i % 2]
        for k in range(5):
            if (i + k) % 2:
                ids = [events[i * 5 + k].event_id]
                result: AppendResult | None = store.link_to_stream(target, ANY_VERSION, ids)
            else:
                result = store.append_to_stream(target, ANY_VERSION, make_events(1))
            assert result is not None
            with lock:
                results.append(result)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    read = stores[1].read_stream_forward(target)
    assert numbers(read) == list(range(1, 41))
    assert sorted(r.first_version for r in results) == list(range(1, 41))
    by_position = {r.first_version: r.first_event_id for r in results}
    assert [by_position[e.event_number] for e in read] == event_ids(read)
    assert stores[0].stream_info(target).stream_version == 40


# Subscriptions to a linking stream -------------------------------------------------------------
def test_catch_up_subscription_to_a_linking_stream(
    store: EventStore, dsn: str, schema: str
) -> None:
    events = source(store, 3)  # ids 1-3
    target = new_stream()
    store.append_to_stream(target, 0, make_events(1))  # id 4, position 1
    store.link_to_stream(target, 1, events)  # positions 2-4
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_stream(target, "links", subscriber)
    subscriber.subscribed()
    batch = subscriber.batch()
    assert numbers(batch) == [1, 2, 3, 4] and event_ids(batch) == [4, 1, 2, 3]
    assert [sub.position_of(e) for e in batch] == [1, 2, 3, 4]
    sub.ack(batch[2])  # by event_number: 3
    wait_until(lambda: checkpoint(dsn, schema, target, "links") == 3)
    store.unsubscribe_from_stream(target, "links")
    # Restart: resumes after event_number 3.
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_stream(target, "links", subscriber)
    subscriber.subscribed()
    (again,) = subscriber.batch()
    assert (again.event_number, again.event_id) == (4, 3)


def test_live_subscription_to_a_linking_stream(store: EventStore, dsn: str, schema: str) -> None:
    events = source(store, 3)
    target = new_stream()
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_stream(target, "links", subscriber)
    subscriber.subscribed()
    store.link_to_stream(target, 0, events[:2])
    batch = subscriber.batch()
    assert numbers(batch) == [1, 2] and event_ids(batch) == [1, 2]
    sub.ack(batch)
    store.append_to_stream(target, 2, make_events(2))  # own events, positions 3-4, ids 4-5
    batch = subscriber.batch()
    assert numbers(batch) == [3, 4] and versions(batch) == [3, 4] and event_ids(batch) == [4, 5]
    sub.ack(batch)
    store.link_to_stream(target, 4, [events[2]])
    (linked,) = subscriber.batch()
    assert (linked.event_number, linked.event_id, linked.stream_version) == (5, 3, 3)
    sub.ack(linked)
    wait_until(lambda: checkpoint(dsn, schema, target, "links") == 5)
    subscriber.nothing()


def test_links_from_another_store_reach_a_stream_subscription(
    make_store: MakeStore, dsn: str, schema: str
) -> None:
    linker, holder = make_store(), make_store()
    events = source(linker, 3)
    target = new_stream()
    subscriber = QueueSubscriber()
    sub = holder.subscribe_to_stream(target, "links", subscriber)
    subscriber.subscribed()
    linker.link_to_stream(target, 0, events[:1])
    (first,) = subscriber.batch(timeout=3.0)
    assert (first.event_number, first.event_id) == (1, 1)
    sub.ack(first)
    linker.append_to_stream(target, 1, make_events(1))  # id 4, position 2
    linker.link_to_stream(target, 2, events[1:])
    got = subscriber.collect(sub, 3, timeout=3.0)
    assert numbers(got) == [2, 3, 4] and event_ids(got) == [4, 2, 3]
    wait_until(lambda: checkpoint(dsn, schema, target, "links") == 4)


def test_all_streams_subscription_does_not_see_links(store: EventStore) -> None:
    events = source(store, 2)
    store.link_to_stream(new_stream(), 0, events)
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_all_streams("all", subscriber)
    subscriber.subscribed()
    assert event_ids(subscriber.collect(sub, 2)) == [1, 2]
    store.link_to_stream(new_stream(), 0, events)
    subscriber.nothing()


def test_a_linking_stream_subscription_steps_over_hard_deleted_links(
    make_store: MakeStore, dsn: str, schema: str
) -> None:
    """Hard-deleting a linked stream leaves gaps in the linking stream's positions: its
    subscription moves past them, checkpoint included."""
    store = make_store(enable_hard_deletes=True)
    doomed, kept = source(store, 2), source(store, 1)  # ids 1-2, 3
    target = new_stream()
    store.link_to_stream(target, 0, [*doomed, *kept])  # positions 1-3
    store.delete_stream(doomed[0].stream_uuid, ANY_VERSION, hard=True)
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_stream(target, "links", subscriber)
    subscriber.subscribed()
    (event,) = subscriber.batch()
    assert (event.event_number, event.event_id) == (3, 3)
    sub.ack(event)
    wait_until(lambda: checkpoint(dsn, schema, target, "links") == 3)
    # A deleted tail: link two more, delete their stream; the checkpoint follows.
    more = source(store, 2)  # ids 4-5
    store.link_to_stream(target, 3, more)
    got = subscriber.collect(sub, 2)
    assert numbers(got) == [4, 5]
    extra = source(store, 1)  # id 6
    store.link_to_stream(target, 5, extra)
    store.delete_stream(extra[0].stream_uuid, ANY_VERSION, hard=True)

    def settled() -> bool:  # the link may be read (and delivered) before the delete
        try:
            sub.ack(subscriber.queue.get_nowait().events)
        except queue.Empty:
            pass
        return checkpoint(dsn, schema, target, "links") == 6

    wait_until(settled, timeout=5.0, what="the checkpoint past the deleted link")
    subscriber.nothing()
    # Restarting across the gap: nothing is delivered again.
    store.unsubscribe_from_stream(target, "links")
    subscriber = QueueSubscriber()
    store.subscribe_to_stream(target, "links", subscriber)
    subscriber.subscribed()
    subscriber.nothing()
