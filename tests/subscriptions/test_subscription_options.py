"""Subscription options of version 2 (API part 2): standby, mixed_batches and max_batch,
transient subscriptions, subscription info and `eventstore-actors status`.

Standby and info run across OS processes where the contract speaks of processes (the `child`
fixture, tests/support/child.py, killed with SIGKILL), and across two stores in one process
(which the contract treats as two processes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pykka
import pytest
from psycopg import sql
from support import (
    QUIET,
    ChildProcess,
    QueueSubscriber,
    actor_subscriber,
    checkpoint,
    checkpoints,
    events,
    wait_until,
)

import eventstore_actors
from eventstore_actors import (
    EventData,
    Events,
    EventStore,
    RecordedEvent,
    StoreUnavailableError,
    Subscribed,
    SubscriptionAlreadyExistsError,
    SubscriptionInfo,
    SubscriptionNotFoundError,
    SubscriptionStopped,
    TransientSubscription,
)
from eventstore_actors.storage.migrations import SCHEMA_VERSION
from eventstore_actors.subscriptions.transient import fresh_events

ALL = "$all"


def interleave(store: EventStore, streams: list[str], rounds: int) -> int:
    """Round-robin one event per stream, `rounds` times; returns how many were appended."""
    for r in range(rounds):
        for s in streams:
            store.append_to_stream(s, r, [EventData({"s": s, "r": r}, event_type="tests.I")])
    return rounds * len(streams)


# Mixed batches and max_batch -------------------------------------------------------------------
def test_mixed_batches_hold_several_streams_up_to_max_batch(store: EventStore) -> None:
    total = interleave(store, ["a", "b", "c"], 5)
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_all_streams("mixed", subscriber, mixed_batches=True, max_batch=4)
    subscriber.subscribed()
    got: list[RecordedEvent] = []
    sizes = []
    while len(got) < total:
        batch = subscriber.batch()
        sizes.append(len(batch))
        got.extend(batch)
        sub.ack(batch)
    assert [e.event_id for e in got] == list(range(1, total + 1))
    assert max(sizes) == 4 and all(s <= 4 for s in sizes)
    assert sizes[0] == 4 and len({e.stream_uuid for e in got[:4]}) == 3


def test_without_mixed_batches_each_batch_holds_one_stream(store: EventStore) -> None:
    interleave(store, ["a", "b"], 3)
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_all_streams("plain", subscriber)
    subscriber.subscribed()
    got = subscriber.collect(sub, 6)
    assert [e.event_id for e in got] == list(range(1, 7))
    # collect acked batch by batch; the first batch was the one event of stream a
    assert all(isinstance(e, RecordedEvent) for e in got)


def test_max_batch_caps_ordinary_batches(store: EventStore) -> None:
    store.append_to_stream("s", 0, events(10))
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_stream("s", "capped", subscriber, max_batch=3)
    subscriber.subscribed()
    sizes = []
    for _ in range(4):
        batch = subscriber.batch()
        sizes.append(len(batch))
        sub.ack(batch)
    assert sizes == [3, 3, 3, 1]


# Standby ---------------------------------------------------------------------------------------
def _child_acked(child: ChildProcess, up_to: int) -> None:
    """Read the child's notices until it reported events up to `up_to` (it auto-acks)."""
    last = 0
    while last < up_to:
        notice = child.notice()
        if notice["event"] == "events":
            last = notice["events"][-1][0]


def test_standby_takes_over_when_the_holding_process_is_killed(
    store: EventStore, child: ChildProcess, dsn: str, schema: str
) -> None:
    child.ok({"cmd": "subscribe", "stream": ALL, "name": "ha", "auto_ack": True})
    assert child.notice()["event"] == "subscribed"
    store.append_to_stream("s", 0, events(5))
    _child_acked(child, 5)
    wait_until(lambda: checkpoint(dsn, schema, ALL, "ha") == 5, what="the child's checkpoint")

    subscriber = QueueSubscriber()
    began = time.monotonic()
    sub = store.subscribe_to_all_streams("ha", subscriber, standby=True)
    assert time.monotonic() - began < 2.0, "a standby subscribe returns at once"
    store.append_to_stream("s", 5, events(2, start=6))
    _child_acked(child, 7)  # the holder still delivers; the standby is told nothing
    subscriber.nothing(QUIET)

    wait_until(lambda: checkpoint(dsn, schema, ALL, "ha") == 7, what="the child's checkpoint")
    store.append_to_stream("s", 7, events(1, start=8))  # the child may or may not ack this one
    child.proc.kill()  # SIGKILL: no unsubscribe, no unlock, no final flush
    child.proc.wait(timeout=10)
    killed = time.monotonic()
    assert subscriber.subscribed(timeout=10.0) is sub
    assert time.monotonic() - killed < 5.0, "the take-over came within a few seconds"
    stored = checkpoint(dsn, schema, ALL, "ha")  # final: its holder is dead
    assert stored is not None and stored >= 7
    # (If the child acked event 8 before it died, nothing is due until event 9.)
    store.append_to_stream("s", 8, events(1, start=9))
    got = [e.event_id for e in subscriber.collect(sub, 9 - stored)]
    assert got == list(range(stored + 1, 10)), "delivery resumes right after the checkpoint"


def test_standby_between_two_stores_of_one_process(make_store: Callable[..., EventStore]) -> None:
    first, second = make_store(), make_store()
    first.append_to_stream("s", 0, events(3))
    holder = QueueSubscriber()
    held = first.subscribe_to_all_streams("ha", holder)
    holder.subscribed()
    held.ack(holder.batch())
    waiting = QueueSubscriber()
    sub = second.subscribe_to_all_streams("ha", waiting, standby=True)
    waiting.nothing(QUIET)
    first.unsubscribe_from_all_streams("ha")
    assert waiting.subscribed(timeout=5.0) is sub
    second.append_to_stream("s", 3, events(1, start=4))
    assert [e.event_id for e in waiting.batch()] == [4]


def test_standby_does_not_wait_on_a_name_this_store_holds(store: EventStore) -> None:
    store.subscribe_to_all_streams("mine", QueueSubscriber())
    with pytest.raises(SubscriptionAlreadyExistsError):
        store.subscribe_to_all_streams("mine", QueueSubscriber(), standby=True)
    store.subscribe_to_stream("s", "mine", QueueSubscriber(), standby=True)
    with pytest.raises(SubscriptionAlreadyExistsError):
        store.subscribe_to_stream("s", "mine", QueueSubscriber(), standby=True)


def test_standby_with_a_free_name_is_an_ordinary_subscription(store: EventStore) -> None:
    store.append_to_stream("s", 0, events(2))
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_all_streams("free", subscriber, standby=True)
    assert subscriber.subscribed() is sub
    assert len(subscriber.collect(sub, 2)) == 2


def test_a_standby_is_told_stopped_when_the_store_stops(make_store: Callable[..., EventStore]):
    first, second = make_store(), make_store()
    first.subscribe_to_all_streams("ha", QueueSubscriber())
    waiting = QueueSubscriber()
    second.subscribe_to_all_streams("ha", waiting, standby=True)
    second.stop()
    assert isinstance(waiting.next(), SubscriptionStopped)
    waiting.nothing(QUIET)


# Transient subscriptions -----------------------------------------------------------------------
def test_transient_delivers_what_is_committed_after_subscribe(store: EventStore) -> None:
    store.append_to_stream("s", 0, events(2))  # before: not delivered
    one, two, all_streams = QueueSubscriber(), QueueSubscriber(), QueueSubscriber()
    h1 = store.subscribe("s", one)
    h2 = store.subscribe("s", two)  # any number per stream
    h3 = store.subscribe(ALL, all_streams)
    assert isinstance(h1, TransientSubscription) and h1 is not h2
    store.append_to_stream("other", 0, events(1, start=3))
    store.append_to_stream("s", 2, events(2, start=4))
    for subscriber, handle in ((one, h1), (two, h2)):
        message = subscriber.next()
        assert isinstance(message, Events) and message.subscription is handle
        assert [e.stream_version for e in message.events] == [3, 4]
        subscriber.nothing(QUIET)
    got: list[RecordedEvent] = []
    while len(got) < 3:
        message = all_streams.next()
        assert isinstance(message, Events) and message.subscription is h3
        got.extend(message.events)
    assert [e.event_id for e in got] == [3, 4, 5]
    assert not any(isinstance(m, Subscribed) for m in list(one.queue.queue))
    assert store.subscriptions() == []


def test_transient_delivers_in_order_without_acks(store: EventStore) -> None:
    subscriber = QueueSubscriber()
    store.subscribe(ALL, subscriber)
    for n in range(20):
        store.append_to_stream(f"s{n % 3}", n // 3, events(1, start=n))
    got: list[int] = []
    while len(got) < 20:
        got.extend(e.event_id for e in subscriber.batch())
    assert got == list(range(1, 21))


def test_nothing_after_unsubscribe_returns(store: EventStore) -> None:
    first, second = QueueSubscriber(), QueueSubscriber()
    h1 = store.subscribe(ALL, first)
    h2 = store.subscribe(ALL, second)
    h1.unsubscribe()
    store.unsubscribe(h2)
    store.append_to_stream("s", 0, events(3))
    first.nothing(QUIET)
    second.nothing()
    h1.unsubscribe()  # idempotent


def test_transient_selector_and_mapper(store: EventStore) -> None:
    subscriber = QueueSubscriber()
    store.subscribe(
        ALL,
        subscriber,
        selector=lambda e: e.data["n"] % 2 == 0,
        mapper=lambda e: e.data["n"],
    )
    store.append_to_stream("s", 0, events(6))
    got: list[int] = []
    while len(got) < 3:
        got.extend(subscriber.batch())
    assert got == [2, 4, 6]


@pytest.mark.parametrize("which", ["selector", "mapper"])
def test_a_failing_selector_or_mapper_ends_it_with_subscription_stopped(
    store: EventStore, which: str
) -> None:
    def boom(event: RecordedEvent) -> Any:
        if event.data["n"] == 3:
            raise RuntimeError("boom")
        return True if which == "selector" else event.data["n"]

    subscriber = QueueSubscriber()
    handle = store.subscribe(ALL, subscriber, **{which: boom})
    store.append_to_stream("s", 0, events(5))
    got: list[Any] = []
    while True:
        message = subscriber.next()
        if isinstance(message, SubscriptionStopped):
            break
        got.extend(message.events)
    assert message.subscription is handle and "boom" in message.reason
    assert len(got) == 2
    store.append_to_stream("s", 5, events(1))
    subscriber.nothing(QUIET)


def test_store_stop_ends_transient_subscriptions(make_store: Callable[..., EventStore]) -> None:
    store = make_store()
    subscriber = QueueSubscriber()
    handle = store.subscribe(ALL, subscriber)
    store.stop()
    message = subscriber.next()
    assert isinstance(message, SubscriptionStopped) and message.subscription is handle
    subscriber.nothing(QUIET)


class Gate:
    """A subscriber whose tell() blocks until released (a slow consumer)."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.inner = QueueSubscriber()

    def tell(self, message: Any) -> None:
        self.open.wait(30)
        self.inner.tell(message)


def test_a_transient_subscriber_that_falls_behind_is_stopped(
    make_store: Callable[..., EventStore],
) -> None:
    store = make_store(subscription_max_size=5)
    gate = Gate()
    store.subscribe(ALL, gate)
    for n in range(30):
        store.append_to_stream("s", n, events(1, start=n))
    gate.open.set()
    while True:
        message = gate.inner.next()
        if isinstance(message, SubscriptionStopped):
            break
    assert "fell behind" in message.reason
    gate.inner.nothing(QUIET)


def test_a_pykka_transient_subscriber_with_a_full_inbox_is_stopped(
    make_store: Callable[..., EventStore],
) -> None:
    store = make_store(subscription_max_size=3)
    release = threading.Event()

    class Slow(pykka.ThreadingActor):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[Any] = []

        def on_receive(self, message: Any) -> None:
            release.wait(30)
            self.seen.append(message)

    ref = Slow.start()
    try:
        store.subscribe(ALL, ref)
        for n in range(12):
            store.append_to_stream("s", n, events(1, start=n))
        release.set()
        wait_until(
            lambda: any(isinstance(m, SubscriptionStopped) for m in ref.proxy().seen.get()),
            what="SubscriptionStopped",
        )
        stopped = [m for m in ref.proxy().seen.get() if isinstance(m, SubscriptionStopped)]
        assert "fell behind" in stopped[0].reason
    finally:
        release.set()
        ref.stop()


def test_transient_ends_when_its_subscriber_actor_stops(store: EventStore) -> None:
    ref, reader = actor_subscriber()
    store.subscribe(ALL, ref)
    ref.stop()
    time.sleep(QUIET)  # ticks notice the dead subscriber
    store.append_to_stream("s", 0, events(1))
    reader.nothing(QUIET)


def test_fresh_events_finds_holes() -> None:
    @dataclass_like
    class E:
        event_id: int

    evs = [E(3), E(4)]  # type: ignore[call-arg]
    assert fresh_events(evs, 2) == (None, evs)  # type: ignore[arg-type]
    assert fresh_events(evs, 0) == ((1, 2), evs)  # type: ignore[arg-type]
    assert fresh_events(evs, 3) == (None, evs[1:])  # type: ignore[arg-type]
    assert fresh_events(evs, 4) == (None, [])  # type: ignore[arg-type]


def dataclass_like(cls: type) -> type:
    from dataclasses import dataclass

    return dataclass(frozen=True)(cls)


# Subscription info and status ------------------------------------------------------------------
def test_subscription_info_fields(store: EventStore, dsn: str, schema: str) -> None:
    store.append_to_stream("s", 0, events(4))
    store.append_to_stream("t", 0, events(2))
    on_all, on_s = QueueSubscriber(), QueueSubscriber()
    sub_all = store.subscribe_to_all_streams("proj", on_all)
    sub_s = store.subscribe_to_stream("s", "proj", on_s)
    on_all.subscribed()
    on_s.subscribed()
    sub_all.ack(on_all.batch())  # events 1-4 of stream s
    sub_s.ack(on_s.batch())
    store.subscribe(ALL, QueueSubscriber())  # transient: never listed
    wait_until(lambda: checkpoint(dsn, schema, ALL, "proj") == 4, what="checkpoint")
    wait_until(lambda: checkpoint(dsn, schema, "s", "proj") == 4, what="checkpoint")
    infos = store.subscriptions()
    assert [(i.stream_uuid, i.subscription_name) for i in infos] == [(ALL, "proj"), ("s", "proj")]
    info_all = store.subscription_info("proj")
    assert isinstance(info_all, SubscriptionInfo)
    assert (info_all.checkpoint, info_all.head, info_all.lag) == (4, 6, 2)
    assert info_all.active and info_all.parked == 0 and info_all.partition is None
    assert info_all.holder is not None and str(os.getpid()) in info_all.holder
    info_s = store.subscription_info("proj", "s", partition=None)
    assert (info_s.checkpoint, info_s.head, info_s.lag) == (4, 4, 0)
    assert info_s.holder == info_all.holder, "one holder text per store instance"
    store.unsubscribe_from_stream("s", "proj")
    info_s = store.subscription_info("proj", "s")
    assert not info_s.active and info_s.holder is None and info_s.checkpoint == 4


def test_two_stores_are_two_holders(make_store: Callable[..., EventStore]) -> None:
    first, second = make_store(), make_store()
    first.subscribe_to_all_streams("one", QueueSubscriber())
    second.subscribe_to_all_streams("two", QueueSubscriber())
    holders = {i.subscription_name: i.holder for i in first.subscriptions()}
    assert holders["one"] != holders["two"]
    assert all(str(os.getpid()) in (h or "") for h in holders.values())


def test_info_across_processes(
    store: EventStore, child: ChildProcess, dsn: str, schema: str
) -> None:
    child.ok({"cmd": "subscribe", "stream": ALL, "name": "there", "auto_ack": True})
    assert child.notice()["event"] == "subscribed"
    info = store.subscription_info("there")
    assert info.active and info.holder is not None and str(child.proc.pid) in info.holder
    child.proc.kill()
    child.proc.wait(timeout=10)
    wait_until(lambda: not store.subscription_info("there").active, what="the lock to go")
    assert store.subscription_info("there").holder is None


def test_parked_events_are_counted(store: EventStore, dsn: str, schema: str) -> None:
    store.append_to_stream("s", 0, events(3))  # parked entries count while their event is stored
    store.subscribe_to_all_streams("p", QueueSubscriber())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.parked_events (stream_uuid, subscription_name, event_id, reason)"
                " VALUES ('$all', 'p', 1, 'test'), ('$all', 'p', 2, NULL), ('$all', 'q', 3, NULL)"
            ).format(sql.Identifier(schema))
        )
    assert store.subscription_info("p").parked == 2


def test_subscription_info_refuses_unknown_names_and_partitions(store: EventStore) -> None:
    store.subscribe_to_all_streams("known", QueueSubscriber())
    with pytest.raises(SubscriptionNotFoundError):
        store.subscription_info("unknown")
    with pytest.raises(SubscriptionNotFoundError):
        store.subscription_info("known", "some-stream")
    for partition in (0, 1, "x"):
        with pytest.raises(SubscriptionNotFoundError):
            store.subscription_info("known", partition=partition)
    with pytest.raises(TypeError):
        store.subscription_info(1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        store.subscription_info("")
    with pytest.raises(TypeError):
        store.subscription_info("known", None)  # type: ignore[arg-type]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`eventstore-actors ARGS` in a child process (the command line configures logging)."""
    env = dict(os.environ)
    root = str(Path(eventstore_actors.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, "-m", "eventstore_actors.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_status_command(store: EventStore, dsn: str, schema: str) -> None:
    store.append_to_stream("s", 0, events(3))
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_all_streams("proj", subscriber)
    subscriber.subscribed()
    sub.ack(subscriber.batch())
    wait_until(lambda: checkpoint(dsn, schema, ALL, "proj") == 3, what="checkpoint")
    result = cli("status", "--dsn", dsn, "--schema", schema, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["schema_version"] == SCHEMA_VERSION
    assert report["head"] == 3 and report["streams"] == 1
    (row,) = report["subscriptions"]
    assert row["subscription_name"] == "proj" and row["checkpoint"] == 3 and row["lag"] == 0
    assert row["active"] is True and str(os.getpid()) in row["holder"]
    assert row["parked"] == 0
    result = cli("status", "--dsn", dsn, "--schema", schema)
    assert result.returncode == 0, result.stderr
    table = result.stdout
    assert (
        f"version {SCHEMA_VERSION}" in table and "head event_id 3" in table and "1 streams" in table
    )
    assert "proj" in table and "checkpoint" in table and "holder" in table


def test_status_of_a_schema_without_a_store(dsn: str) -> None:
    result = cli("status", "--dsn", dsn, "--schema", "no_such_store_here")
    assert result.returncode == 1
    assert "not initialised" in result.stderr and len(result.stderr.splitlines()) == 1


# Bad input: a clear exception at subscribe time, nothing written -------------------------------
BAD_OPTIONS: list[tuple[dict[str, Any], type[Exception]]] = [
    ({"standby": "yes"}, TypeError),
    ({"standby": None}, TypeError),
    ({"mixed_batches": 1}, TypeError),
    ({"max_batch": 0}, ValueError),
    ({"max_batch": -5}, ValueError),
    ({"max_batch": 1.5}, TypeError),
    ({"max_batch": True}, TypeError),
    ({"max_batch": "10"}, TypeError),
]


@pytest.mark.parametrize(("options", "error"), BAD_OPTIONS)
def test_bad_options_are_refused_at_subscribe_time(
    store: EventStore, dsn: str, schema: str, options: dict[str, Any], error: type[Exception]
) -> None:
    subscriber = QueueSubscriber()
    with pytest.raises(error):
        store.subscribe_to_all_streams("bad", subscriber, **options)
    with pytest.raises(error):
        store.subscribe_to_stream("s", "bad", subscriber, **options)
    assert checkpoints(dsn, schema) == {}
    subscriber.nothing(0.1)


def test_mixed_batches_on_a_stream_subscription_is_refused(
    store: EventStore, dsn: str, schema: str
) -> None:
    subscriber = QueueSubscriber()
    with pytest.raises(ValueError, match="all-streams"):
        store.subscribe_to_stream("s", "bad", subscriber, mixed_batches=True)
    store.subscribe_to_stream("s", "ok", subscriber, mixed_batches=False)
    assert checkpoints(dsn, schema) == {("s", "ok"): 0}


def test_bad_transient_arguments(store: EventStore) -> None:
    subscriber = QueueSubscriber()
    with pytest.raises(TypeError):
        store.subscribe(1, subscriber)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        store.subscribe("", subscriber)
    with pytest.raises(TypeError, match="tell"):
        store.subscribe(ALL, object())
    with pytest.raises(TypeError, match="selector"):
        store.subscribe(ALL, subscriber, selector=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="mapper"):
        store.subscribe(ALL, subscriber, mapper="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.subscribe(ALL, subscriber, start_from="origin")  # type: ignore[call-arg]
    ref, _ = actor_subscriber()
    ref.stop()
    with pytest.raises(ValueError, match="not running"):
        store.subscribe(ALL, ref)
    with pytest.raises(TypeError):
        store.unsubscribe("handle")  # type: ignore[arg-type]
    handle = store.subscribe(ALL, subscriber)
    with pytest.raises(TypeError, match="no acks"):
        handle.ack(1)
    with pytest.raises(TypeError):
        store.ack(handle, 1)
    store.append_to_stream("s", 0, events(1))
    assert isinstance(subscriber.next(), Events)


def test_subscribing_on_a_stopped_store_is_refused_at_once(
    make_store: Callable[..., EventStore],
) -> None:
    """A stopped store's listener never listens: subscribe refuses at once rather than
    waiting connect_timeout for it (it waited 5 s by default, then raised)."""
    store = make_store(connect_timeout=60)
    store.stop()
    sub = QueueSubscriber()
    calls: list[Callable[[], object]] = [
        lambda: store.subscribe_to_all_streams("a", sub),
        lambda: store.subscribe_to_all_streams("g", sub, partitions=2),
        lambda: store.subscribe_to_stream("s", "b", sub),
    ]
    for call in calls:
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError, match="stopped"):
            call()
        assert time.monotonic() - started < 30  # far below connect_timeout
