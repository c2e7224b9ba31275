"""Nack, retry, park (API part 2, "Nack, retry, park"; KurrentDB's persistent subscriptions
are the model): `sub.nack`, `max_retries`, `retry_delay`, the parked list in PostgreSQL,
`store.parked_events` and `store.replay_parked`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from support import (
    QueueSubscriber,
    checkpoint,
    lock_backends,
    subscription_lock_key,
    wait_until,
)

from eventstore_actors import EventData, EventStore, ParkedEvent, RecordedEvent

ALL = "$all"


def numbered(first: int, count: int) -> list[EventData]:
    return [EventData({"n": n}, event_type="N") for n in range(first, first + count)]


def ids(batch: list[RecordedEvent]) -> list[int]:
    return [e.event_id for e in batch]


def subscribe(store: EventStore, name: str, **options: Any) -> tuple[QueueSubscriber, Any]:
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_all_streams(name, subscriber, **options)
    subscriber.subscribed()
    return subscriber, sub


def test_retry_redelivers_alone_then_parks_after_max_retries(
    store: EventStore, dsn: str, schema: str
) -> None:
    subscriber, sub = subscribe(store, "retry", max_retries=2, retry_delay=0.2)
    store.append_to_stream("s", 0, numbered(1, 3))
    batch = subscriber.batch()
    assert ids(batch) == [1, 2, 3]
    nacked_at = time.monotonic()
    sub.nack(batch[1], "retry", "first")
    deliveries = 1
    while True:
        again = subscriber.batch()
        if ids(again) != [2]:
            break
        assert time.monotonic() - nacked_at >= 0.2, "retried before retry_delay"
        deliveries += 1
        nacked_at = time.monotonic()
        sub.nack(again[0], "retry", f"try {deliveries}")
    assert deliveries == 3  # 1 + max_retries
    assert ids(again) == [3]  # delivery goes on once it is parked
    sub.ack(again)
    parked = store.parked_events("retry")
    assert [(p.event.event_id, p.retries, p.reason) for p in parked] == [(2, 2, "try 3")]
    assert isinstance(parked[0], ParkedEvent) and parked[0].parked_at is not None
    wait_until(lambda: checkpoint(dsn, schema, ALL, "retry") == 3, what="checkpoint 3")


def test_nacking_acks_the_events_before_it(store: EventStore, dsn: str, schema: str) -> None:
    subscriber, sub = subscribe(store, "before", retry_delay=10.0)
    store.append_to_stream("s", 0, numbered(1, 4))
    subscriber.batch()
    sub.nack(3, "retry")
    wait_until(lambda: checkpoint(dsn, schema, ALL, "before") == 2, what="checkpoint 2")
    subscriber.nothing(0.3)  # the retry waits its delay; event 4 waits behind it


def test_order_holds_while_a_retry_is_pending(store: EventStore) -> None:
    subscriber, sub = subscribe(store, "order", retry_delay=0.3)
    store.append_to_stream("s", 0, numbered(1, 2))
    batch = subscriber.batch()
    sub.nack(batch[0], "retry")
    store.append_to_stream("s", 2, numbered(3, 3))  # live events arrive meanwhile
    store.append_to_stream("t", 0, numbered(6, 1))
    got: list[int] = []
    while len(got) < 6:
        message = subscriber.batch()
        got.extend(ids(message))
        sub.ack(message)
    assert got == [1, 2, 3, 4, 5, 6]


def test_skip_counts_as_acked_and_resends_the_rest(
    store: EventStore, dsn: str, schema: str
) -> None:
    subscriber, sub = subscribe(store, "skip")
    store.append_to_stream("s", 0, numbered(1, 3))
    batch = subscriber.batch()
    sub.nack(batch[1], "skip")
    rest = subscriber.batch()
    assert ids(rest) == [3]
    wait_until(lambda: checkpoint(dsn, schema, ALL, "skip") == 2, what="checkpoint 2")
    sub.ack(rest)
    wait_until(lambda: checkpoint(dsn, schema, ALL, "skip") == 3, what="checkpoint 3")
    assert store.parked_events("skip") == []


def test_park_stores_it_and_survives_restarts(store: EventStore, dsn: str, schema: str) -> None:
    subscriber, sub = subscribe(store, "park")
    store.append_to_stream("s", 0, numbered(1, 3))
    batch = subscriber.batch()
    sub.nack(batch[0], "park", "cannot handle")
    rest = subscriber.batch()
    assert ids(rest) == [2, 3]
    sub.ack(rest)
    wait_until(lambda: checkpoint(dsn, schema, ALL, "park") == 3, what="checkpoint 3")
    store.unsubscribe_from_all_streams("park")
    parked = store.parked_events("park")
    assert [(p.event.event_id, p.reason, p.retries) for p in parked] == [(1, "cannot handle", 0)]
    assert parked[0].event.data == {"n": 1}
    subscriber, sub = subscribe(store, "park")
    subscriber.nothing()  # parked: not delivered again by a restart
    assert len(store.parked_events("park")) == 1


def test_max_retries_zero_parks_at_once(store: EventStore) -> None:
    subscriber, sub = subscribe(store, "zero", max_retries=0, retry_delay=5.0)
    store.append_to_stream("s", 0, numbered(1, 2))
    batch = subscriber.batch()
    sub.nack(batch[0], "retry", "nope")
    assert ids(subscriber.batch()) == [2]
    assert [(p.event.event_id, p.retries) for p in store.parked_events("zero")] == [(1, 0)]


def _park_ids(store: EventStore, sub: Any, subscriber: QueueSubscriber, bad: set[int]) -> None:
    """Receive every batch until none comes, parking the events in `bad`, acking the rest."""
    while True:
        try:
            batch = subscriber.batch(timeout=0.5)
        except AssertionError:
            return
        for event in batch:
            if event.event_id in bad:
                sub.nack(event, "park", f"bad {event.event_id}")
                break
        else:
            sub.ack(batch)


def test_replay_parked_delivers_them_first_in_order_and_removes_acked(
    store: EventStore, dsn: str, schema: str
) -> None:
    subscriber, sub = subscribe(store, "replay")
    store.append_to_stream("s", 0, numbered(1, 5))
    _park_ids(store, sub, subscriber, {2, 4})
    assert [p.event.event_id for p in store.parked_events("replay")] == [2, 4]
    wait_until(lambda: checkpoint(dsn, schema, ALL, "replay") == 5, what="checkpoint 5")
    assert store.replay_parked("replay") == 2
    store.append_to_stream("s", 5, numbered(6, 1))
    first = subscriber.batch()
    assert ids(first) == [2]
    sub.ack(first)
    second = subscriber.batch()
    assert ids(second) == [4]
    sub.ack(second)
    newer = subscriber.batch()
    assert ids(newer) == [6]
    sub.ack(newer)
    wait_until(lambda: store.parked_events("replay") == [], what="the parked list emptied")
    wait_until(lambda: checkpoint(dsn, schema, ALL, "replay") == 6, what="checkpoint 6")


def test_a_replayed_event_can_be_parked_again_or_skipped(store: EventStore) -> None:
    subscriber, sub = subscribe(store, "again", retry_delay=0.05, max_retries=1)
    store.append_to_stream("s", 0, numbered(1, 2))
    _park_ids(store, sub, subscriber, {1, 2})
    assert store.replay_parked("again") == 2
    one = subscriber.batch()
    assert ids(one) == [1]
    sub.nack(one[0], "retry", "still bad")
    assert ids(subscriber.batch()) == [1]  # retried once (max_retries=1)
    sub.nack(one[0], "retry", "given up")
    two = subscriber.batch()
    assert ids(two) == [2]
    sub.nack(two[0], "skip")
    wait_until(
        lambda: (
            [(p.event.event_id, p.reason) for p in store.parked_events("again")]
            == [(1, "given up")]
        ),
        what="1 parked again, 2 skipped",
    )
    subscriber.nothing()


def test_replay_parked_from_another_store(
    store: EventStore, make_store: Callable[..., EventStore]
) -> None:
    subscriber, sub = subscribe(store, "remote")
    store.append_to_stream("s", 0, numbered(1, 2))
    _park_ids(store, sub, subscriber, {1})
    other = make_store()
    assert other.replay_parked("remote") == 1
    batch = subscriber.batch()  # picked up on the holder's health check
    assert ids(batch) == [1]
    sub.ack(batch)
    wait_until(lambda: other.parked_events("remote") == [], what="removed once acked")


def test_stream_subscription_park_and_replay(store: EventStore) -> None:
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_stream("s", "s-park", subscriber)
    subscriber.subscribed()
    store.append_to_stream("other", 0, numbered(1, 1))
    store.append_to_stream("s", 0, numbered(2, 3))
    batch = subscriber.batch()
    assert [e.event_number for e in batch] == [1, 2, 3]
    sub.nack(batch[1], "park", "bad")
    rest = subscriber.batch()
    assert [e.event_number for e in rest] == [3]
    sub.ack(rest)
    parked = store.parked_events("s-park", "s")
    assert [(p.event.stream_uuid, p.event.event_number) for p in parked] == [("s", 2)]
    assert store.replay_parked("s-park", "s") == 1
    again = subscriber.batch()
    assert [e.event_number for e in again] == [2]
    sub.ack(again)
    wait_until(lambda: store.parked_events("s-park", "s") == [], what="removed once acked")


# A transient failure while parking ---------------------------------------------------------
@contextmanager
def park_cancelled(dsn: str, schema: str, name: str) -> Iterator[None]:
    """After the block, the subscription's park statement waits on a lock another session
    holds on parked_events and is cancelled there (57014, a failure of the moment: the lock
    connection is fine); then the table is released."""
    (pid,) = lock_backends(dsn, subscription_lock_key(schema, ALL, name))
    with (
        psycopg.connect(dsn, autocommit=True) as blocker,
        psycopg.connect(dsn, autocommit=True) as probe,
    ):

        def parking() -> Any:
            """The start of the park statement waiting on the lock, or None."""
            row = probe.execute(
                "SELECT query_start FROM pg_stat_activity WHERE pid = %s "
                "AND wait_event_type = 'Lock' AND query LIKE '%%parked_events%%'",
                (pid,),
            ).fetchone()
            return None if row is None else row[0]

        with blocker.transaction():
            blocker.execute(f"LOCK TABLE {schema}.parked_events IN SHARE MODE")
            yield
            wait_until(lambda: parking() is not None, what="the park waiting on the lock")
            started = parking()
            probe.execute("SELECT pg_cancel_backend(%s)", (pid,))
            wait_until(lambda: parking() != started, what="the park statement cancelled")


def test_a_cancelled_park_is_not_lost(store: EventStore, dsn: str, schema: str) -> None:
    """Issue 17 item 12a: the park of a nacked event fails for a reason of the moment: the
    nack is done again (the event is parked, the events after it come again), no stall."""
    subscriber, sub = subscribe(store, "park-cancelled")
    store.append_to_stream("s", 0, numbered(1, 3))
    batch = subscriber.batch()
    assert ids(batch) == [1, 2, 3]
    with park_cancelled(dsn, schema, "park-cancelled"):
        sub.nack(batch[0], "park", "cannot handle")
    rest = subscriber.batch(timeout=10)
    assert ids(rest) == [2, 3]
    sub.ack(rest)
    wait_until(lambda: checkpoint(dsn, schema, ALL, "park-cancelled") == 3, what="checkpoint 3")
    parked = store.parked_events("park-cancelled")
    assert [(p.event.event_id, p.reason) for p in parked] == [(1, "cannot handle")]


def test_a_cancelled_park_of_a_replayed_event_keeps_its_retries(
    store: EventStore, dsn: str, schema: str
) -> None:
    """The same for a replayed parked event whose retries ran out: parked again once, with its
    count, not given max_retries more tries by the redone nack."""
    name = "replay-cancelled"
    subscriber, sub = subscribe(store, name, max_retries=1, retry_delay=0)
    store.append_to_stream("s", 0, numbered(1, 2))
    batch = subscriber.batch()
    sub.nack(batch[0], "park", "first")
    sub.ack(subscriber.batch())
    wait_until(lambda: checkpoint(dsn, schema, ALL, name) == 2, what="checkpoint 2")
    assert store.replay_parked(name) == 1
    again = subscriber.batch()
    assert ids(again) == [1]
    sub.nack(again[0], "retry", "once")
    again = subscriber.batch()
    assert ids(again) == [1]
    with park_cancelled(dsn, schema, name):
        sub.nack(again[0], "retry", "twice")  # max_retries reached: parked again
    wait_until(
        lambda: (
            [(p.event.event_id, p.retries, p.reason) for p in store.parked_events(name)]
            == [(1, 1, "twice")]
        ),
        what="parked again with its retries",
    )
    subscriber.nothing()


def test_a_cancelled_park_is_not_lost_with_competing_consumers(
    store: EventStore, dsn: str, schema: str
) -> None:
    subscriber, sub = subscribe(store, "park-cc", concurrency_limit=2, buffer_size=3)
    store.append_to_stream("s", 0, numbered(1, 3))
    got = subscriber.collect(sub, 3, ack=False)
    assert ids(got) == [1, 2, 3]
    with park_cancelled(dsn, schema, "park-cc"):
        sub.nack(got[0], "park", "cannot handle")
    sub.ack(got[1:])
    wait_until(lambda: checkpoint(dsn, schema, ALL, "park-cc") == 3, what="checkpoint 3")
    parked = store.parked_events("park-cc")
    assert [(p.event.event_id, p.reason) for p in parked] == [(1, "cannot handle")]
    store.append_to_stream("s", 3, numbered(4, 1))
    assert ids(subscriber.batch()) == [4]


# Bad input ---------------------------------------------------------------------------------------
def test_bad_nacks_raise(store: EventStore) -> None:
    _subscriber, sub = subscribe(store, "bad-nack")
    with pytest.raises(ValueError):
        sub.nack(1, "explode")
    with pytest.raises(TypeError):
        sub.nack(1, "retry", reason=5)
    with pytest.raises(TypeError):
        sub.nack([1, 2], "skip")
    with pytest.raises(ValueError):
        sub.nack(-1, "skip")


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"max_retries": -1}, ValueError),
        ({"max_retries": 1.5}, TypeError),
        ({"retry_delay": -0.5}, ValueError),
        ({"retry_delay": "1"}, TypeError),
    ],
)
def test_bad_retry_options(
    store: EventStore, options: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        store.subscribe_to_all_streams("bad", QueueSubscriber(), **options)
    with pytest.raises(error):
        store.subscribe_to_stream("s", "bad", QueueSubscriber(), **options)
    assert store.subscriptions() == []


def test_forget_parked_takes_them_off_the_list_for_good(
    store: EventStore, dsn: str, schema: str
) -> None:
    """forget_parked drops the chosen parked events (or all): a replay then has nothing of
    them to deliver; bad event_ids are refused before anything is deleted."""
    subscriber, sub = subscribe(store, "forget")
    store.append_to_stream("s", 0, numbered(1, 5))
    _park_ids(store, sub, subscriber, {1, 3, 5})
    assert [p.event.event_id for p in store.parked_events("forget")] == [1, 3, 5]
    with pytest.raises(ValueError):
        store.forget_parked("forget", event_ids=[3, 0])
    with pytest.raises(TypeError):
        store.forget_parked("forget", event_ids="3")  # type: ignore[arg-type]
    assert store.forget_parked("forget", event_ids=[3, 99]) == 1
    assert [p.event.event_id for p in store.parked_events("forget")] == [1, 5]
    assert store.forget_parked("forget") == 2
    assert store.parked_events("forget") == []
    assert store.replay_parked("forget") == 0
    subscriber.nothing()
