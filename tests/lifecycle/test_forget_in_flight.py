"""Events decoded before `forget_subject` returned and handed out after it: a subscription's
batches waiting behind an unacked one (catching up or live), a transient subscription's, a
page being streamed, and in another store instance once its notice arrived. Each comes as
FORGOTTEN (API.md: "From then on every read (..., streaming, ..., subscriptions, catch-up,
archives) yields those events with data=FORGOTTEN and forgotten=True"). An adversarial probe
found all of them handed out in clear: the reads decided when they ran, before the forget."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from support import QueueSubscriber, wait_until

from eventstore_actors import ANY_VERSION, FORGOTTEN, Encryption, EventData, EventStore

KEY = bytes(range(32))
MakeStore = Callable[..., EventStore]


def _append(store: EventStore, count: int, subject: str = "bob") -> None:
    """`count` events of `subject`, alternating two streams: one event per batch."""
    for n in range(count):
        store.append_to_stream(
            f"s-{n % 2}", ANY_VERSION, [EventData({"secret": n}, "T", subject=subject)]
        )


def _keyring(store: EventStore) -> Any:
    return store.settings.serializer.keyring  # type: ignore[attr-defined]


@pytest.mark.parametrize("when", ["catching up", "live"])
def test_batches_waiting_behind_an_unacked_one_come_forgotten(
    make_store: MakeStore, when: str
) -> None:
    store = make_store(encryption=Encryption(master_key=KEY))
    if when == "catching up":
        _append(store, 6)  # read as one page, then handed out one batch at a time
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_all_streams("sub", subscriber)
    subscriber.subscribed()
    if when == "live":
        _append(store, 6)  # decoded by the publisher, buffered behind the first batch
    first = subscriber.batch()
    assert [e.data for e in first] == [{"secret": 0}], "in clear before the forget"
    assert store.forget_subject("bob") == 6
    sub.ack(first)
    rest = subscriber.collect(sub, 5)
    assert [e.event_id for e in rest] == [2, 3, 4, 5, 6]
    assert all(e.forgotten and e.data is FORGOTTEN for e in rest), [e.data for e in rest]


def test_a_transient_subscription_hands_out_nothing_in_clear_after_a_forget(
    make_store: MakeStore,
) -> None:
    store = make_store(encryption=Encryption(master_key=KEY))
    held: list[Any] = []

    class Slow(QueueSubscriber):
        """Keeps the first batch's tell() until the forget is done: the rest waits."""

        def tell(self, message: Any) -> None:
            super().tell(message)
            if not held and getattr(message, "events", None):
                held.append(True)
                wait_until(lambda: len(held) > 1, what="the forget")

    subscriber = Slow()
    store.subscribe("$all", subscriber)  # no Subscribed, no acks
    _append(store, 4)
    first = subscriber.batch()
    assert [e.data for e in first] == [{"secret": 0}]
    assert store.forget_subject("bob") == 4
    held.append(True)
    rest: list[Any] = []
    while len(rest) < 3:
        rest.extend(subscriber.batch())
    assert all(e.forgotten and e.data is FORGOTTEN for e in rest), [e.data for e in rest]


@pytest.mark.parametrize("read", ["stream_forward", "stream_all_forward"])
def test_a_page_being_streamed_comes_forgotten_after_a_forget(
    make_store: MakeStore, read: str
) -> None:
    store = make_store(encryption=Encryption(master_key=KEY))
    for n in range(5):
        store.append_to_stream("s", ANY_VERSION, [EventData({"secret": n}, "T", subject="bob")])
    events = (
        store.stream_forward("s", read_batch_size=100)
        if read == "stream_forward"
        else store.stream_all_forward(read_batch_size=100)
    )
    first = next(events)  # the whole page is read (and decoded) now
    assert first.data == {"secret": 0}
    assert store.forget_subject("bob") == 5
    rest = list(events)
    assert len(rest) == 4
    assert all(e.forgotten and e.data is FORGOTTEN for e in rest), [e.data for e in rest]


def test_another_instance_hands_out_nothing_in_clear_once_notified(
    make_store: MakeStore,
) -> None:
    forgetting = make_store(encryption=Encryption(master_key=KEY))
    other = make_store(encryption=Encryption(master_key=KEY))  # stands for another process
    _append(forgetting, 6)
    subscriber = QueueSubscriber()
    sub = other.subscribe_to_all_streams("sub", subscriber)
    subscriber.subscribed()
    first = subscriber.batch()
    assert [e.data for e in first] == [{"secret": 0}]
    keyring = _keyring(other)
    assert keyring.cached("bob")
    assert forgetting.forget_subject("bob") == 6
    wait_until(lambda: not keyring.cached("bob"), what="the other instance's notice")
    sub.ack(first)
    rest = subscriber.collect(sub, 5)
    assert all(e.forgotten and e.data is FORGOTTEN for e in rest), [e.data for e in rest]


def test_events_of_other_subjects_and_without_one_stay_in_clear(make_store: MakeStore) -> None:
    store = make_store(encryption=Encryption(master_key=KEY))
    store.append_to_stream("s", ANY_VERSION, [EventData({"n": 0}, "T")])
    _append(store, 2, subject="ann")
    _append(store, 2, subject="bob")
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_all_streams("sub", subscriber)
    subscriber.subscribed()
    first = subscriber.batch()
    assert store.forget_subject("bob") == 2
    sub.ack(first)
    rest = subscriber.collect(sub, 4)
    assert [(e.subject, e.forgotten) for e in rest] == [
        ("ann", False),
        ("ann", False),
        ("bob", True),
        ("bob", True),
    ]
    assert [e.data for e in rest[:2]] == [{"secret": 0}, {"secret": 1}]


def test_a_key_fetched_while_a_forget_evicted_it_is_not_cached(make_store: MakeStore) -> None:
    """A fetch that began before a forget's eviction may carry the key from a snapshot before
    the forget: used for its own rows (their generation decides), never cached, so that a
    cached key keeps meaning "not forgotten since" for events decoded earlier."""
    store = make_store(encryption=Encryption(master_key=KEY))
    _append(store, 1)
    keyring = _keyring(store)
    assert keyring.cached("bob")
    key, before = keyring.state[1]["bob"], keyring.evictions
    keyring.evict("bob")  # the forget's eviction, while that fetch was under way
    keyring._keep("bob", key, keyring.generation, None, before)  # the fetch ends
    assert not keyring.cached("bob")
    keyring._keep("bob", key, keyring.generation, None, keyring.evictions)  # a later fetch
    assert keyring.cached("bob")


def test_the_asyncio_api_hands_out_nothing_in_clear_after_a_forget(dsn: str, schema: str) -> None:
    """A transient subscription of the asyncio API: batches told while nothing iterated wait
    in its queue; those handed out after the forget come as FORGOTTEN (an adversarial probe
    found all six in clear)."""
    import asyncio

    from eventstore_actors.aio import AsyncEventStore

    async def main() -> list[Any]:
        started = AsyncEventStore.start(dsn, schema=schema, encryption=Encryption(master_key=KEY))
        async with await started as store:
            sub = await store.subscribe("$all")
            for n in range(4):
                await store.append_to_stream(
                    f"s-{n % 2}", ANY_VERSION, [EventData({"secret": n}, "T", subject="bob")]
                )
            deadline = asyncio.get_running_loop().time() + 10
            while sub._queue.qsize() < 4:  # told, waiting for the iteration
                assert asyncio.get_running_loop().time() < deadline, "never told"
                await asyncio.sleep(0.01)
            assert await store.forget_subject("bob") == 4
            got: list[Any] = []
            async for batch in sub:
                got.extend(batch)
                if len(got) == 4:
                    break
            return got

    got = asyncio.run(main())
    assert all(e.forgotten and e.data is FORGOTTEN for e in got), [e.data for e in got]
