"""Catch-up pages read ahead (subscriptions/prefetch.py): the page after the one handed over
is read on the read pool while the subscriber works, and only what a read done then would
return is ever served: in order, nothing twice, nothing skipped; a read for another state
machine or another start (a restart, a lock loss, a resync) discards it, a short page is
never kept (it would go live on a stale head), and no read-ahead thread outlives its actor.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support import QueueSubscriber, checkpoint, kill_backends, lock_backends, wait_until
from support import subscription_lock_key as lock_key
from support.factory import make_events, new_stream

from eventstore_actors import EventStore
from eventstore_actors.config import Settings
from eventstore_actors.storage import reader
from eventstore_actors.storage.pool import ReadPool
from eventstore_actors.subscriptions.prefetch import Ahead, Page, Work

MakeStore = Callable[..., EventStore]


def _threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "eventstore-prefetch"]


@pytest.fixture
def pool(dsn: str, schema: str) -> Iterator[ReadPool]:
    found = ReadPool(Settings(dsn=dsn, schema=schema))
    found.open()
    try:
        yield found
    finally:
        found.close()


def _query(start: int, count: int) -> Work:
    def read(conn: Any) -> Page:
        rows, covered = reader.read_all_covered(conn, start, count)
        return rows, covered, False

    return read


def _ahead(pool: ReadPool, page: int = 10) -> tuple[Ahead, list[int]]:
    """An `Ahead` whose reads done now are counted (by their start)."""
    fresh: list[int] = []

    def now(work: Work) -> Page:
        found = pool.run(work)
        fresh.append(found[0][0][0] if found[0] else -1)
        return found

    return Ahead(pool, 10, page, now, 30.0), fresh


def _ids(found: Page) -> list[int]:
    return [row[0] for row in found[0]]


def test_pages_come_in_order_and_the_next_one_is_read_ahead(
    store: EventStore, pool: ReadPool
) -> None:
    store.append_to_stream(new_stream(), 0, make_events(35))
    ahead, fresh = _ahead(pool)
    owner = object()
    seen: list[int] = []
    start = 1
    while True:
        found = ahead.take(owner, start, 10, _query)
        seen += _ids(found)
        if len(found[0]) < 10:
            break
        assert ahead.pending  # the next page is on its way
        start = found[1] + 1
    assert seen == list(range(1, 36))
    assert fresh == [1, 31]  # the first read, and the short tail (never kept ahead)
    ahead.close()


def test_a_smaller_limit_takes_part_of_the_page_and_keeps_the_rest(
    store: EventStore, pool: ReadPool
) -> None:
    store.append_to_stream(new_stream(), 0, make_events(30))
    ahead, fresh = _ahead(pool)
    owner = object()
    assert _ids(ahead.take(owner, 1, 10, _query)) == list(range(1, 11))
    part = ahead.take(owner, 11, 4, _query)
    assert _ids(part) == [11, 12, 13, 14] and part[1] == 14
    rest = ahead.take(owner, 15, 10, _query)  # 6 kept, 4 more read ahead meanwhile
    assert _ids(rest) == list(range(15, 25)) and rest[1] == 24
    assert fresh == [1]
    ahead.close()


def test_another_state_machine_or_start_never_gets_the_page_read_ahead(
    store: EventStore, pool: ReadPool
) -> None:
    """A restart, a lock loss or a resync makes a new state machine (or a start elsewhere):
    what was read ahead for the old one is thrown away, and the read is done afresh."""
    store.append_to_stream(new_stream(), 0, make_events(40))
    ahead, fresh = _ahead(pool)
    first, second = object(), object()
    assert _ids(ahead.take(first, 1, 10, _query)) == list(range(1, 11))
    assert _ids(ahead.take(first, 11, 4, _query)) == [11, 12, 13, 14]  # 15.. kept ahead
    # The checkpoint went back to 10 (a lock loss, a resync): 11.. again, for the new state
    # machine, never the rows kept ahead from 15 for the old one.
    assert _ids(ahead.take(second, 11, 4, _query)) == [11, 12, 13, 14]
    # The same state machine asking for another start: read afresh, never what was read
    # ahead from 15.
    assert _ids(ahead.take(second, 3, 10, _query)) == list(range(3, 13))
    assert fresh == [1, 11, 3]
    ahead.close()


def test_a_short_page_read_ahead_is_not_kept(store: EventStore, pool: ReadPool) -> None:
    """Read ahead at the head, it covers up to the head of then: an event appended since
    must be seen, so the read that goes live is done again."""
    stream = new_stream()
    store.append_to_stream(stream, 0, make_events(10))
    ahead, fresh = _ahead(pool)
    owner = object()
    assert _ids(ahead.take(owner, 1, 10, _query)) == list(range(1, 11))
    wait_until(lambda: not ahead.running, what="the read ahead to finish (short)")
    store.append_to_stream(stream, 10, make_events(3))
    found = ahead.take(owner, 11, 10, _query)
    assert _ids(found) == [11, 12, 13] and found[1] == 13
    assert fresh == [1, 11]
    ahead.close()


def test_close_leaves_no_thread_and_nothing_kept(store: EventStore, pool: ReadPool) -> None:
    store.append_to_stream(new_stream(), 0, make_events(2000))
    ahead, _ = _ahead(pool, page=1000)
    owner = object()
    ahead.take(owner, 1, 1000, _query)
    ahead.close()
    assert not ahead.running and ahead.held == 0
    assert not _threads()


# Through a running subscription --------------------------------------------------------------
def test_catch_up_across_a_lock_loss_is_in_order_from_the_checkpoint(
    make_store: MakeStore, dsn: str, schema: str
) -> None:
    """The lock connection dies mid catch-up, with a page read ahead: the subscription
    starts again after its stored checkpoint and goes on in order (at least once), never
    with the page read ahead for the state before."""
    store = make_store()
    total = 4000
    for _ in range(4):
        store.append_to_stream(new_stream(), 0, make_events(1000))
    subscriber = QueueSubscriber()
    store.subscribe_to_all_streams("ahead", subscriber, start_from="origin")
    got: list[int] = []
    sub = subscriber.subscribed()
    killed = False
    while not got or got[-1] < total:
        events = subscriber.batch()
        ids = [e.event_id for e in events]
        if got and ids[0] != got[-1] + 1:  # a restart: from after the stored checkpoint
            assert killed and ids[0] <= got[-1] + 1
            got = got[: ids[0] - 1]
        assert ids == list(range(len(got) + 1, len(got) + 1 + len(ids)))
        got += ids
        sub.ack(events)
        if not killed and len(got) >= 1500 and not store.settings.shared_lock_session:
            key = lock_key(schema, "$all", "ahead")
            killed = kill_backends(dsn, lock_backends(dsn, key)) > 0
    assert got == list(range(1, total + 1))
    wait_until(lambda: checkpoint(dsn, schema, "$all", "ahead") == total)


def test_replay_parked_while_a_page_is_read_ahead(store: EventStore) -> None:
    """A parked event replayed mid catch-up comes once, ahead of the rest; the catch-up goes
    on in order with nothing twice and nothing skipped."""
    for _ in range(3):
        store.append_to_stream(new_stream(), 0, make_events(1000))
    subscriber = QueueSubscriber()
    store.subscribe_to_all_streams("replayed", subscriber, start_from="origin", max_batch=100)
    sub = subscriber.subscribed()
    first = subscriber.batch()
    assert [e.event_id for e in first] == list(range(1, 101))
    sub.nack(first[-1], "park")  # the others before it count as acked
    wait_until(lambda: store.parked_events("replayed"), what="event 100 parked")
    assert store.replay_parked("replayed") == 1
    got = [e.event_id for e in first]
    replayed = 0
    while got[-1] < 3000 or not replayed:
        events = subscriber.batch()
        if [e.event_id for e in events] == [100]:
            replayed += 1
        else:
            assert events[0].event_id == got[-1] + 1
            got += [e.event_id for e in events]
        sub.ack(events)
    assert replayed == 1
    assert got == list(range(1, 3001))
    subscriber.nothing()


def test_unsubscribe_during_catch_up_leaves_no_read_ahead_thread(store: EventStore) -> None:
    for _ in range(5):
        store.append_to_stream(new_stream(), 0, make_events(1000))
    subscriber = QueueSubscriber()
    store.subscribe_to_all_streams("stopped", subscriber, start_from="origin")
    sub = subscriber.subscribed()
    sub.ack(subscriber.batch())  # the first page is handed over: the next is read ahead
    sub.unsubscribe()
    wait_until(lambda: not _threads(), what="no read-ahead thread left")
