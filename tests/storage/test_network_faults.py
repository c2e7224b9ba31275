"""Item 6 of issue 7: connect timeouts and a health-checked LISTEN connection, through a proxy.

A store reaches PostgreSQL through `support.proxy.Proxy`, which can black-hole new connections
(a server that accepts and never answers) or freeze existing ones (a silent, half-open peer).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from support import (
    QueueSubscriber,
    checkpoint,
    client_ports,
    events,
    listener_backends,
    wait_until,
)
from support.proxy import FAST, Proxy

from eventstore_actors import ConfigError, EventStore, StoreUnavailableError
from eventstore_actors.config import Settings
from eventstore_actors.storage.pool import ReadPool


def test_start_fails_fast_with_config_error_when_the_server_never_answers(
    proxy: Proxy, dsn: str, schema: str
) -> None:
    proxy.blackhole(True)
    began = time.monotonic()
    with pytest.raises(ConfigError, match="cannot connect"):
        EventStore.start(proxy.dsn(dsn), schema=schema, connect_timeout=2.0)
    elapsed = time.monotonic() - began
    assert elapsed < 6.0, f"start took {elapsed:.1f} s against a silent server"
    assert proxy.accepted >= 1  # it did reach the silent server


def test_read_pool_open_fails_fast_when_the_server_never_answers(
    proxy: Proxy, dsn: str, schema: str
) -> None:
    # The second step of start: the schema check answered, then the server went silent.
    proxy.blackhole(True)
    pool = ReadPool(Settings(dsn=proxy.dsn(dsn), schema=schema, connect_timeout=2.0))
    began = time.monotonic()
    with pytest.raises(ConfigError, match="cannot connect"):
        pool.open()
    elapsed = time.monotonic() - began
    assert elapsed < 8.0, f"opening the pool took {elapsed:.1f} s against a silent server"


def test_half_open_listen_connection_is_noticed_and_replaced(
    proxied_store: Callable[..., EventStore],
    make_store: Callable[..., EventStore],
    proxy: Proxy,
    dsn: str,
    schema: str,
) -> None:
    store = proxied_store()
    other = make_store()  # another process's store, connected directly
    subscriber = QueueSubscriber()
    store.subscribe_to_all_streams("watch", subscriber)
    sub = subscriber.subscribed()
    other.append_to_stream("s-1", 0, events(1))
    assert [e.event_id for e in subscriber.collect(sub, 1)] == [1]

    listeners = wait_until(lambda: listener_backends(dsn, schema), what="the LISTEN backend")
    assert proxy.freeze(client_ports(dsn, listeners)) == 1
    other.append_to_stream("s-1", 1, events(3, start=2))

    # Noticed after health_interval of silence plus health_timeout, then a reconnect's catch-up.
    got = subscriber.collect(sub, 3, timeout=FAST["health_interval"] + FAST["health_timeout"] + 4)
    assert [e.event_id for e in got] == [2, 3, 4]
    # And the new LISTEN connection delivers live again.
    other.append_to_stream("s-2", 0, events(1))
    assert [e.event_id for e in subscriber.collect(sub, 1, timeout=3.0)] == [5]


def test_events_keep_arriving_when_every_connection_goes_silent(
    proxied_store: Callable[..., EventStore],
    make_store: Callable[..., EventStore],
    proxy: Proxy,
    dsn: str,
    schema: str,
) -> None:
    store = proxied_store()
    other = make_store()
    subscriber = QueueSubscriber()
    store.subscribe_to_all_streams("watch", subscriber)
    sub = subscriber.subscribed()
    other.append_to_stream("s-1", 0, events(1))
    assert [e.event_id for e in subscriber.collect(sub, 1)] == [1]
    # Its ack stored first: a checkpoint still queued when its connection goes is lost, and
    # the event comes again (at least once), which is not what this test is about.
    wait_until(lambda: checkpoint(dsn, schema, "$all", "watch") == 1, what="the ack stored")

    assert proxy.freeze() >= 3  # writer, publisher, listener, subscription, pool
    other.append_to_stream("s-1", 1, events(3, start=2))
    # Every dedicated connection is given up by the listener's probe or the watchdog
    # (io_timeout), and the replacements (new connections pass the proxy) catch up.
    got = subscriber.collect(sub, 3, timeout=FAST["io_timeout"] + FAST["health_timeout"] + 10)
    assert [e.event_id for e in got] == [2, 3, 4]


def test_appends_and_reads_fail_in_bounded_time_while_the_server_never_answers(
    proxied_store: Callable[..., EventStore], proxy: Proxy
) -> None:
    store = proxied_store(call_timeout=5.0, pool_size=2)
    store.append_to_stream("s-1", 0, events(1))
    proxy.blackhole(True)
    proxy.cut()  # every connection must be made again, and no new one is answered

    for call in (
        lambda: store.append_to_stream("s-1", 1, events(1, start=2)),
        lambda: store.append_to_stream("s-1", 1, events(1, start=2)),
        lambda: store.read_stream_forward("s-1"),
        lambda: store.read_all_streams_forward(),
    ):
        began = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            call()
        elapsed = time.monotonic() - began
        assert elapsed < 12.0, f"a call took {elapsed:.1f} s against a silent server"

    proxy.blackhole(False)
    proxy.cut()  # the held, unanswered connections
    # Back to normal without restarting the store (the reconnects are bounded too).
    wait_until(lambda: _appended(store), timeout=15.0, interval=0.2, what="an append to succeed")
    # The read pool refills at psycopg-pool's reconnect pace, and a read waits for a pooled
    # connection no longer than io_timeout ("Deadlines everywhere"): poll, bounded, as above.
    versions = wait_until(lambda: _versions(store), timeout=15.0, interval=0.2, what="a read")
    assert versions == [1, 2]


def _versions(store: EventStore) -> list[int] | None:
    try:
        return [e.stream_version for e in store.read_stream_forward("s-1")]
    except StoreUnavailableError:
        return None


def _appended(store: EventStore) -> bool:
    try:
        store.append_to_stream("s-1", 1, events(1, start=2))
    except StoreUnavailableError:
        return False
    return True
