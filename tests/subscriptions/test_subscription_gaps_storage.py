"""All-streams subscriptions across gaps left by hard deletes, against a running store: live,
catching up, restarting; checkpoints move past deleted events (a deleted tail too) without
stalling, and an event that is committing is never taken for a deleted one.

A range of event_ids that no reader ever sees is made deterministic by appending and
hard-deleting in one transaction of the test's own (`conn=` appends, then the schema's
delete_stream()): the ids are used, the NOTIFY goes out at commit, no event is left.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql
from support import QueueSubscriber, checkpoint, wait_until
from support.factory import event_ids, make_events, new_stream

from eventstore_actors import ANY_VERSION, EventStore

MakeStore = Callable[..., EventStore]


@pytest.fixture
def hard_store(make_store: MakeStore) -> EventStore:
    return make_store(enable_hard_deletes=True)


@contextmanager
def transaction(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn) as conn:  # not autocommit: one transaction, committed at exit
        yield conn


def deleted_range(store: EventStore, dsn: str, schema: str, count: int) -> None:
    """Use `count` event_ids that nobody will ever read: appended and hard-deleted in one
    transaction."""
    stream = new_stream()
    with transaction(dsn) as conn:
        store.append_to_stream(stream, 0, make_events(count), conn=conn)
        conn.execute(
            pgsql.SQL("SELECT status FROM {}.delete_stream(%s, -1, true, %s, 'tests')").format(
                pgsql.Identifier(schema)
            ),
            (stream, store.settings.channel),
        )


def appended(store: EventStore, count: int) -> list[int]:
    result = store.append_to_stream(new_stream(), 0, make_events(count))
    assert result is not None
    return list(range(result.first_event_id, result.last_event_id + 1))


def stored(dsn: str, schema: str, name: str = "gaps") -> Callable[[], int | None]:
    return lambda: checkpoint(dsn, schema, "$all", name)


def test_live_subscription_steps_over_deleted_ranges(
    hard_store: EventStore, dsn: str, schema: str
) -> None:
    """A live subscription hears of ranges whose events are gone before anyone read them
    (the publisher's covered reads): it moves on, and the events after them arrive."""
    assert appended(hard_store, 3) == [1, 2, 3]
    subscriber = QueueSubscriber()
    sub = hard_store.subscribe_to_all_streams("gaps", subscriber)
    subscriber.subscribed()
    assert event_ids(subscriber.collect(sub, 3)) == [1, 2, 3]

    deleted_range(hard_store, dsn, schema, 3)  # 4-6: a deleted tail, live
    wait_until(lambda: stored(dsn, schema)() == 6, what="the checkpoint past the deleted tail")
    subscriber.nothing()

    assert appended(hard_store, 1) == [7]  # the writer's rows right after a covered gap
    assert event_ids(subscriber.collect(sub, 1)) == [7]
    deleted_range(hard_store, dsn, schema, 2)  # 8-9
    assert appended(hard_store, 2) == [10, 11]  # may reach the publisher before 8-9's notice
    assert event_ids(subscriber.collect(sub, 2)) == [10, 11]
    wait_until(lambda: stored(dsn, schema)() == 11, what="checkpoint 11")
    subscriber.nothing()


def test_live_subscription_in_another_store_steps_over_deleted_ranges(
    make_store: MakeStore, dsn: str, schema: str
) -> None:
    """The same through notifications only: the deletes and appends come from another
    store instance (as from another process)."""
    writer = make_store(enable_hard_deletes=True)
    reader = make_store()
    subscriber = QueueSubscriber()
    sub = reader.subscribe_to_all_streams("gaps", subscriber)
    subscriber.subscribed()
    appended(writer, 2)
    deleted_range(writer, dsn, schema, 2)
    appended(writer, 1)
    deleted_range(writer, dsn, schema, 3)
    assert event_ids(subscriber.collect(sub, 3)) == [1, 2, 5]
    wait_until(lambda: stored(dsn, schema)() == 8, what="checkpoint 8")
    subscriber.nothing()


def test_catching_up_subscription_steps_over_deleted_ranges(
    hard_store: EventStore, dsn: str, schema: str
) -> None:
    """Reads limited by max_size: a full read covers only up to its last event, a short one
    up to the counter; the checkpoint ends on the deleted tail."""
    appended(hard_store, 2)  # 1-2
    deleted_range(hard_store, dsn, schema, 4)  # 3-6
    appended(hard_store, 2)  # 7-8
    deleted_range(hard_store, dsn, schema, 2)  # 9-10
    appended(hard_store, 1)  # 11
    deleted_range(hard_store, dsn, schema, 3)  # 12-14, the tail
    for max_size in (1, 2, 1000):
        name = f"gaps-{max_size}"
        subscriber = QueueSubscriber()
        sub = hard_store.subscribe_to_all_streams(name, subscriber, max_size=max_size)
        subscriber.subscribed()
        assert event_ids(subscriber.collect(sub, 5)) == [1, 2, 7, 8, 11]
        wait_until(lambda n=name: stored(dsn, schema, n)() == 14, what=f"{name} at 14")  # type: ignore[misc]
        subscriber.nothing()


def test_restart_across_a_deleted_range(hard_store: EventStore, dsn: str, schema: str) -> None:
    appended(hard_store, 2)
    subscriber = QueueSubscriber()
    sub = hard_store.subscribe_to_all_streams("gaps", subscriber)
    subscriber.subscribed()
    subscriber.collect(sub, 2)
    wait_until(lambda: stored(dsn, schema)() == 2, what="checkpoint 2")  # acks are told
    hard_store.unsubscribe_from_all_streams("gaps")
    deleted_range(hard_store, dsn, schema, 5)  # 3-7, while nobody listens
    wait_until(lambda: hard_store.stream_info("$all").stream_version == 7)
    subscriber = QueueSubscriber()
    sub = hard_store.subscribe_to_all_streams("gaps", subscriber)
    subscriber.subscribed()
    wait_until(lambda: stored(dsn, schema)() == 7, what="checkpoint 7 after the restart")
    subscriber.nothing()
    assert appended(hard_store, 1) == [8]
    assert event_ids(subscriber.collect(sub, 1)) == [8]


def test_a_committing_event_is_never_taken_for_a_deleted_one(
    hard_store: EventStore, dsn: str, schema: str
) -> None:
    """While a transaction holds event_id 7 uncommitted (an outbox append), a subscription
    catches up past the deleted 4-6: it covers up to 6, not 7, and delivers 7 once it
    commits."""
    appended(hard_store, 3)
    deleted_range(hard_store, dsn, schema, 3)
    late = new_stream()
    with transaction(dsn) as conn:
        hard_store.append_to_stream(late, 0, make_events(1), conn=conn)  # id 7, not visible
        subscriber = QueueSubscriber()
        sub = hard_store.subscribe_to_all_streams("gaps", subscriber)
        subscriber.subscribed()
        assert event_ids(subscriber.collect(sub, 3)) == [1, 2, 3]
        wait_until(lambda: stored(dsn, schema)() == 6, what="checkpoint 6")
        subscriber.nothing()
        assert stored(dsn, schema)() == 6
    (event,) = subscriber.collect(sub, 1)
    assert (event.event_id, event.stream_uuid) == (7, late)
    wait_until(lambda: stored(dsn, schema)() == 7, what="checkpoint 7")


def test_hard_deletes_racing_a_live_subscription(
    make_store: MakeStore, dsn: str, schema: str
) -> None:
    """Another store appends to doomed streams and deletes them while appending to kept
    ones; the subscription gets every kept event once, in order, and its checkpoint reaches
    the head (the last ids are deleted ones)."""
    writer = make_store(enable_hard_deletes=True)
    reader = make_store()
    subscriber = QueueSubscriber()
    sub = reader.subscribe_to_all_streams("gaps", subscriber)
    subscriber.subscribed()
    kept: list[int] = []

    def work() -> None:
        for i in range(25):
            doomed = new_stream()
            writer.append_to_stream(doomed, 0, make_events(2))
            kept.extend(appended(writer, 1 + i % 3))
            writer.delete_stream(doomed, ANY_VERSION, hard=True)
        deleted_range(writer, dsn, schema, 2)

    thread = threading.Thread(target=work)
    thread.start()
    got: list[int] = []
    thread.join(timeout=60)
    assert not thread.is_alive()
    while len(got) < len(kept):
        events = subscriber.batch()
        got.extend(e.event_id for e in events if e.event_id in kept)
        sub.ack(events)
    head = writer.stream_info("$all").stream_version
    wait_until(lambda: stored(dsn, schema)() == head, what="checkpoint at the head")
    assert got == kept
