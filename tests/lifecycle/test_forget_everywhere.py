"""`forget_subject` is honoured by every store instance before it returns (API.md: it "evicts
[the key] from every process's cache before returning"), also one whose notification
connection is frozen or gone: events that instance decoded earlier and hands out after the
call returned come FORGOTTEN. An adversarial probe found a second process handing them out
in clear: for as long as its frozen listener went unnoticed (10 s), and for ever while its
listener could not reconnect. And a forget whose KeyStore deletion or commit fails leaves no
half-forgotten subject (the probe's: the key gone from the KeyStore, the subject not marked
forgotten, every read of its events failing)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from support import QueueSubscriber, client_ports, wait_until
from support.keystore import MemoryKeyStore
from support.proxy import Proxy

from eventstore_actors import ANY_VERSION, FORGOTTEN, Encryption, EventData, EventStore
from eventstore_actors.errors import EventStoreError
from eventstore_actors.lifecycle import eviction

KEY = bytes(range(32))
MakeStore = Callable[..., EventStore]


def _append(store: EventStore, count: int, subject: str = "bob") -> None:
    store.append_to_stream(
        "s", ANY_VERSION, [EventData({"secret": n}, "T", subject=subject) for n in range(count)]
    )


def _keyring(store: EventStore) -> Any:
    return store.settings.serializer.keyring  # type: ignore[attr-defined]


def _held_batch(store: EventStore) -> tuple[Any, QueueSubscriber, list[Any]]:
    """A subscription of `store` to $all (one event per batch) whose first batch is
    delivered and not acked: the rest waits in memory, decoded."""
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_all_streams("sub", subscriber, max_batch=1)
    subscriber.subscribed()
    first = subscriber.batch()
    assert [e.data for e in first] == [{"secret": 0}], "in clear before the forget"
    return sub, subscriber, first


def _rest_after_ack(sub: Any, subscriber: QueueSubscriber, first: list[Any], n: int) -> list[Any]:
    sub.ack(first)
    return subscriber.collect(sub, n)


def _listener_port(dsn: str, schema: str, proxy: Proxy) -> int:
    """The proxied (upstream) port of the listener that holds the key-cache lock through
    `proxy`: the other instance's listener."""

    def found() -> int | None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            pids = eviction.listening(conn, schema)
        mine = [p for p in client_ports(dsn, pids) if p in proxy.upstream_ports()]
        return mine[0] if len(mine) == 1 else None

    return wait_until(found, what="the proxied listener")


def test_forget_returns_once_every_instance_evicted(make_store: MakeStore) -> None:
    forgetting = make_store(encryption=Encryption(master_key=KEY))
    other = make_store(encryption=Encryption(master_key=KEY))  # stands for another process
    _append(forgetting, 4)
    sub, subscriber, first = _held_batch(other)
    assert _keyring(other).cached("bob")
    started = time.monotonic()
    assert forgetting.forget_subject("bob") == 4
    # No wait: the other instance answered that it evicted before the call returned (and
    # well before its lease would have run out).
    assert not _keyring(other).cached("bob")
    assert time.monotonic() - started < eviction.LEASE
    rest = _rest_after_ack(sub, subscriber, first, 3)
    assert all(e.forgotten and e.data is FORGOTTEN for e in rest), [e.data for e in rest]


@pytest.mark.parametrize("fault", ["frozen", "lost"])
def test_an_instance_whose_listener_is_frozen_or_lost_hands_out_nothing_in_clear(
    make_store: MakeStore, dsn: str, schema: str, proxy: Proxy, fault: str
) -> None:
    forgetting = make_store(encryption=Encryption(master_key=KEY))
    other = make_store(
        encryption=Encryption(master_key=KEY), session_dsn=proxy.dsn(dsn), health_interval=30.0
    )
    _append(forgetting, 4)
    sub, subscriber, first = _held_batch(other)
    pages = other.stream_forward("s", read_batch_size=10)
    assert next(pages).data == {"secret": 0}  # the rest of the page waits, decoded
    port = _listener_port(dsn, schema, proxy)
    if fault == "frozen":  # a silent peer: nothing comes, nothing fails for a while
        proxy.freeze([port])
    else:  # its connection ends, and no new one gets through
        proxy.blackhole(True)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE client_port = %s",
                (port,),
            )
        wait_until(lambda: _keyring(other).lease_until == 0.0, what="the lease to end")
    try:
        assert forgetting.forget_subject("bob") == 4
        assert next(pages).forgotten
        rest = _rest_after_ack(sub, subscriber, first, 3)
        assert all(e.forgotten and e.data is FORGOTTEN for e in rest), [e.data for e in rest]
    finally:
        proxy.thaw()
        proxy.blackhole(False)


class _FailingDelete(MemoryKeyStore):
    def __init__(self) -> None:
        super().__init__()
        self.fail = True

    def delete(self, subject: str) -> None:
        if self.fail:
            raise ConnectionError("the KMS is away")
        super().delete(subject)


def test_a_key_store_that_fails_to_delete_leaves_the_subject_forgotten(
    make_store: MakeStore,
) -> None:
    keys = _FailingDelete()
    store = make_store(encryption=Encryption(key_store=keys))
    _append(store, 2)
    with pytest.raises(EventStoreError, match="forget_subject again") as raised:
        store.forget_subject("bob")
    assert "bob" not in str(raised.value) and "KMS is away" not in str(raised.value)
    assert store.is_forgotten("bob")
    assert all(e.forgotten for e in store.read_stream_forward("s"))
    assert all(e.forgotten for e in store.read_all_streams_forward())
    keys.fail = False
    assert store.forget_subject("bob") == 0  # again: the deletion is done now
    assert keys.deleted == ["bob"] and "bob" not in keys.keys


def test_a_forget_that_does_not_commit_leaves_the_key_store_alone(
    make_store: MakeStore, dsn: str, schema: str
) -> None:
    keys = MemoryKeyStore()
    store = make_store(encryption=Encryption(key_store=keys))
    _append(store, 2)
    with psycopg.connect(dsn, autocommit=True) as conn:  # the commit fails
        conn.execute(f'SET search_path TO "{schema}"')
        conn.execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'refused at commit'; END $$"
        )
        conn.execute(
            "CREATE CONSTRAINT TRIGGER refuse AFTER INSERT ON forgotten_subjects "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse()"
        )
    with pytest.raises(EventStoreError):
        store.forget_subject("bob")
    assert not store.is_forgotten("bob")
    assert keys.deleted == [] and "bob" in keys.keys
    assert [e.data for e in store.read_stream_forward("s")] == [{"secret": 0}, {"secret": 1}]
