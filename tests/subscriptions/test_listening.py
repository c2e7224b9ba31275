"""The listener starts with the store's first subscription (notifications/listener.Listening):
a store that only appends and reads holds no LISTEN connection and is not woken by its own
commits; a subscribe returns once the store listens, so another process's commits right
after it are delivered; with encryption the store listens from the start (forgets evict its
cached keys)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest
from support import QueueSubscriber, events, listener_backends, wait_until

from eventstore_actors import Encryption, EventStore, StoreUnavailableError

MakeStore = Callable[..., EventStore]


def _listening(dsn: str, schema: str) -> int:
    """Backends LISTENing on the test schema's channel (its stores' listeners)."""
    return len(listener_backends(dsn, schema))


def test_a_store_listens_from_its_first_subscription_on(
    make_store: MakeStore, dsn: str, schema: str
) -> None:
    store = make_store()
    other = make_store()  # another process, as far as notifications go
    store.append_to_stream("mine", 0, events(1))
    assert store.read_all_streams_forward()
    assert _listening(dsn, schema) == 0, "no subscription: nothing listens"

    sub = QueueSubscriber()
    handle = store.subscribe_to_all_streams("all", sub)
    assert _listening(dsn, schema) == 1, "listening before the subscribe returned"
    other.append_to_stream("theirs", 0, events(2))  # notified, not read by a timer
    got = sub.collect(handle, 3)
    assert [(e.stream_uuid, e.event_id) for e in got] == [
        ("mine", 1),
        ("theirs", 2),
        ("theirs", 3),
    ]
    store.unsubscribe_from_all_streams("all")
    other.append_to_stream("theirs", 2, events(1, start=3))
    assert _listening(dsn, schema) == 1, "once started, it listens until the store stops"


def test_a_transient_subscription_starts_the_listener_too(
    make_store: MakeStore, dsn: str, schema: str
) -> None:
    store = make_store()
    other = make_store()
    sub = QueueSubscriber()
    store.subscribe("$all", sub)
    assert _listening(dsn, schema) == 1
    other.append_to_stream("theirs", 0, events(2))
    got: list[int] = []
    while len(got) < 2:  # no acks: batches as they come
        message = sub.next()
        got.extend(e.event_id for e in getattr(message, "events", ()))
    assert got == [1, 2]


def test_a_store_with_encryption_listens_from_the_start(
    make_store: MakeStore, dsn: str, schema: str
) -> None:
    store = make_store(encryption=Encryption(master_key=os.urandom(32)))
    wait_until(lambda: _listening(dsn, schema) == 1, what="the listener of a store with encryption")
    # Still recognisable once it renewed its key cache's lease (a notice to itself, sent
    # with a LISTEN: lifecycle/eviction.py).
    keyring = store.settings.serializer.keyring  # type: ignore[attr-defined]
    first = keyring.lease_until
    wait_until(lambda: keyring.lease_until > first, what="a renewed lease")
    assert _listening(dsn, schema) == 1


def test_a_subscribe_while_the_database_is_unreachable_fails_at_once(
    dsn: str, schema: str, make_store: MakeStore
) -> None:
    """Its first subscription starts the listener; a listener that cannot connect does not
    hold the subscribe for its connect budget: the subscribe fails as it did before."""
    from support.proxy import Proxy

    make_store()  # the schema
    with Proxy.for_dsn(dsn) as proxy:
        store = EventStore.start(proxy.dsn(dsn), schema=schema)
        try:
            store.append_to_stream("s", 0, events(1))
            proxy.close()  # refused from now on
            began = time.monotonic()
            with pytest.raises(StoreUnavailableError):
                store.subscribe_to_all_streams("sub", QueueSubscriber())
            assert time.monotonic() - began < 2.0  # not connect_timeout (5 s) and more
        finally:
            store.stop()


def test_a_restarted_publisher_listens_again(make_store: MakeStore, dsn: str, schema: str) -> None:
    """The listener belongs to the publisher: its successor starts one at once, since the
    store wants to listen (Listening.attach), and another process's commits keep coming."""
    from eventstore_actors.actors.supervised import Crash

    store = make_store()
    other = make_store()
    sub = QueueSubscriber()
    handle = store.subscribe_to_all_streams("all", sub)
    other.append_to_stream("theirs", 0, events(1))
    assert [e.event_id for e in sub.collect(handle, 1)] == [1]
    old = store._registry.peek("publisher")
    assert old is not None
    old.tell(Crash(RuntimeError("crashed by a test")))

    def restarted() -> bool:
        ref = store._registry.peek("publisher")
        return ref is not None and ref is not old and ref.is_alive()

    wait_until(restarted, what="the publisher to restart")
    wait_until(lambda: _listening(dsn, schema) == 1, what="the new publisher's listener")
    other.append_to_stream("theirs", 1, events(2, start=2))
    assert [e.event_id for e in sub.collect(handle, 2)] == [2, 3]
