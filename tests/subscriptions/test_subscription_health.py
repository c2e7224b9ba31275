"""Subscription health (API.md part 3, "Subscription health: lag in time and stalls").

`SubscriptionInfo.lag_seconds`, `.state` and `.last_ack_at`; the `stall_after` option; a
stall found within stall_after + 5 s, logged once as a WARNING, counted in `metrics()` and the
Prometheus export, cleared by the next ack; "stopped" after an error until subscribed again;
the same view from another store and from `eventstore-actors status [--check]`. Real
PostgreSQL; every wait is a bounded poll or a queue read (stall_after is 0.5 s here).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from support import QueueSubscriber, actor_subscriber, events, wait_until
from support.cli import cli
from support.release1 import release_tree, run_release

from eventstore_actors import (
    Events,
    EventStore,
    SubscriptionInfo,
    SubscriptionStopped,
    admin,
)
from eventstore_actors.aio import AsyncEventStore
from eventstore_actors.storage.migrations import SCHEMA_VERSION

#: The last commit of the previous release (schema version 3).
RELEASE_3 = "726adba"

#: A short stall_after for the tests, and how long a stall may take to be found (the spec's
#: bound: stall_after + 5 s).
STALL = 0.5
FOUND_WITHIN = STALL + 5.0


def info(store: EventStore, name: str = "p", stream: str = "$all") -> SubscriptionInfo:
    return store.subscription_info(name, stream)


def state_becomes(
    store: EventStore, state: str, name: str = "p", stream: str = "$all", timeout: float = 10.0
) -> SubscriptionInfo:
    """Poll until the subscription's state is `state` (bounded); its info then."""
    return wait_until(
        lambda: (found := info(store, name, stream)).state == state and found,
        timeout=timeout,
        what=f"{name} on {stream} to be {state}",
    )


def stall_warnings(caplog: pytest.LogCaptureFixture, name: str = "p") -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name.startswith("eventstore_actors")
        and r.levelno == logging.WARNING
        and "stalled" in r.getMessage()
        and repr(name) in r.getMessage()
    ]


def stall_count(store: EventStore) -> float:
    return sum(v for k, v in store.metrics().items() if k.startswith("subscription_stalls_total"))


# stall_after: checked before anything is written ---------------------------------------------
BAD = [0, -1, 0.0, math.nan, math.inf, "5", None, True]


@pytest.mark.parametrize("bad", BAD, ids=repr)
def test_bad_stall_after_is_a_value_error_on_every_subscribe_path(
    store: EventStore, bad: Any
) -> None:
    sub = QueueSubscriber()
    attempts: list[Callable[[], Any]] = [
        lambda: store.subscribe_to_stream("s", "p", sub, stall_after=bad),
        lambda: store.subscribe_to_all_streams("p", sub, stall_after=bad),
        lambda: store.subscribe_to_all_streams("c", sub, concurrency_limit=2, stall_after=bad),
        lambda: store.subscribe_to_all_streams("g", sub, partitions=2, stall_after=bad),
    ]
    for attempt in attempts:
        with pytest.raises(ValueError, match="stall_after"):
            attempt()
    assert store.subscriptions() == []
    sub.nothing(0.0)


def test_bad_stall_after_in_the_asyncio_api(dsn: str, schema: str) -> None:
    async def main() -> None:
        async with await AsyncEventStore.start(dsn, schema=schema) as store:
            with pytest.raises(ValueError, match="stall_after"):
                await store.subscribe_to_all_streams("p", stall_after=-2)
            with pytest.raises(ValueError, match="stall_after"):
                await store.subscribe_to_stream("s", "p", stall_after="soon")  # type: ignore[typeddict-item]
            assert await store.subscriptions() == []
            # Kept: an async subscription nobody refers to any more is unsubscribed.
            held = await store.subscribe_to_all_streams("q", stall_after=STALL)
            (found,) = await store.subscriptions()
            assert found.subscription_name == "q" and found.state in ("live", "catching_up")
            await held.unsubscribe()

    asyncio.run(main())


# States ---------------------------------------------------------------------------------------
def test_catching_up_then_live_then_idle(store: EventStore) -> None:
    store.append_to_stream("s", 0, events(3))
    sub = QueueSubscriber()
    handle = store.subscribe_to_all_streams("p", sub, start_from="origin", stall_after=30)
    sub.subscribed()
    batch = sub.batch()
    # Held, delivering events stored before it caught up, not acked yet.
    found = info(store)
    assert found.active and found.state == "catching_up"
    assert found.lag == 3 and found.lag_seconds is not None and found.lag_seconds >= 0
    assert found.last_ack_at is None
    handle.ack(batch)
    found = state_becomes(store, "live")
    assert found.lag == 0 and found.lag_seconds is None and found.last_ack_at is not None
    # The row says it too (written once, not per event).
    assert all(r.state == "live" for r in store.subscriptions())
    store.unsubscribe_from_all_streams("p")
    found = state_becomes(store, "idle")
    assert not found.active


def test_lag_seconds_is_the_age_of_the_oldest_unacked_event(store: EventStore) -> None:
    sub = QueueSubscriber()
    handle = store.subscribe_to_stream("s", "p", sub, stall_after=30)
    sub.subscribed()
    assert info(store, stream="s").lag_seconds is None
    store.append_to_stream("s", 0, events(1))
    batch = sub.batch()
    first = info(store, stream="s").lag_seconds
    assert first is not None
    # It grows while the event stays unacked (bounded poll).
    wait_until(lambda: (info(store, stream="s").lag_seconds or 0) > first + 0.2)
    handle.ack(batch)
    wait_until(lambda: info(store, stream="s").lag_seconds is None)


def test_a_clean_stop_leaves_its_subscriptions_idle(
    make_store: Callable[..., EventStore],
) -> None:
    first = make_store()
    sub = QueueSubscriber()
    first.subscribe_to_all_streams("p", sub, stall_after=STALL)
    sub.subscribed()
    first.append_to_stream("s", 0, events(1))
    sub.batch()
    state_becomes(first, "stalled")
    first.stop()
    other = make_store()
    assert state_becomes(other, "idle").state == "idle"


# Stalls ---------------------------------------------------------------------------------------
def test_a_stall_is_found_logged_once_counted_and_cleared_by_acks(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="eventstore_actors")
    sub = QueueSubscriber()
    handle = store.subscribe_to_all_streams("p", sub, stall_after=STALL)
    sub.subscribed()
    state_becomes(store, "live")
    assert stall_count(store) == 0
    store.append_to_stream("s", 0, events(2))
    batch = sub.batch()
    found = state_becomes(store, "stalled", timeout=FOUND_WITHIN)
    assert found.active and found.lag == 2 and found.lag_seconds is not None
    assert stall_count(store) == 1
    metrics = store.metrics()
    stalled = [k for k, v in metrics.items() if k.startswith("subscription_stalled{") and v == 1]
    assert stalled == ['subscription_stalled{stream="$all",name="p"}']
    assert metrics["subscriptions_stalled"] == 1
    # Still stalled a while later: still one WARNING, one count (a queue read as the wait).
    sub.nothing(4 * STALL)
    assert info(store).state == "stalled"
    assert len(stall_warnings(caplog)) == 1 and stall_count(store) == 1
    # Acks resume: the state clears itself.
    handle.ack(batch)
    found = state_becomes(store, "live", timeout=5.0)
    assert found.lag == 0 and found.last_ack_at is not None
    assert store.metrics()["subscriptions_stalled"] == 0
    # A second stall is a second WARNING and a second count.
    store.append_to_stream("s", 2, events(1))
    batch = sub.batch()
    state_becomes(store, "stalled", timeout=FOUND_WITHIN)
    assert len(stall_warnings(caplog)) == 2 and stall_count(store) == 2
    handle.ack(batch)
    state_becomes(store, "live", timeout=5.0)


def test_a_subscriber_that_acks_in_time_never_stalls(store: EventStore) -> None:
    sub = QueueSubscriber()
    handle = store.subscribe_to_all_streams("p", sub, stall_after=STALL)
    sub.subscribed()
    for n in range(5):
        store.append_to_stream("s", n, events(1))
        handle.ack(sub.batch())
    sub.nothing(4 * STALL)  # idle, nothing in flight: not a stall
    assert info(store).state == "live" and stall_count(store) == 0


@pytest.mark.parametrize("when", ["live", "catching up"])
def test_a_subscriber_whose_tell_blocks_stalls(store: EventStore, when: str) -> None:
    """A subscriber whose tell() never returns (a synchronous projection that hangs) on its
    first batch: stalled within the bound (an adversarial probe found it shown 'live' with
    lag 3 for ever: the stall clock started only after tell() returned)."""
    release = threading.Event()
    told: list[Any] = []

    class Hanging(QueueSubscriber):
        def tell(self, message: Any) -> None:
            super().tell(message)
            if isinstance(message, Events) and not told:
                told.append(message)
                release.wait(FOUND_WITHIN + 10)

    if when == "catching up":
        store.append_to_stream("s", 0, events(3))
    sub = Hanging()
    handle = store.subscribe_to_all_streams("p", sub, stall_after=STALL)
    sub.subscribed()
    if when == "live":
        store.append_to_stream("s", 0, events(3))
    try:
        found = state_becomes(store, "stalled", timeout=FOUND_WITHIN)
        assert found.lag > 0
    finally:
        release.set()
    handle.ack(sub.batch())
    state_becomes(store, "live", timeout=5.0)


def test_competing_consumers_and_group_partitions_stall_too(store: EventStore) -> None:
    first, second = QueueSubscriber(), QueueSubscriber()
    store.subscribe_to_all_streams("c", first, concurrency_limit=2, stall_after=STALL)
    store.subscribe_to_all_streams("c", second, concurrency_limit=2, stall_after=STALL)
    first.subscribed(), second.subscribed()
    group = QueueSubscriber()
    store.subscribe_to_all_streams("g", group, partitions=2, stall_after=STALL)
    group.subscribed()
    store.append_to_stream("s", 0, events(1))
    state_becomes(store, "stalled", name="c", timeout=FOUND_WITHIN)
    message = group.next()
    assert isinstance(message, Events)
    rows = wait_until(
        lambda: [
            r for r in store.subscriptions() if r.state == "stalled" and r.partition is not None
        ]
    )
    assert len(rows) == 1 and rows[0].subscription_name == "g"
    message.subscription.ack(message.events)
    wait_until(
        lambda: all(r.state != "stalled" for r in store.subscriptions() if r.partition is not None)
    )


def test_a_competing_consumer_that_never_acks_stalls_while_its_sibling_acks(
    store: EventStore,
) -> None:
    """The stall clock counts from the delivery of the oldest unacked event: acks of later
    events by another consumer of the same subscription do not restart it (an adversarial
    probe found a subscription 'live', its checkpoint at 0 for 18 s, status --check 0)."""
    first, second = QueueSubscriber(), QueueSubscriber()
    store.subscribe_to_all_streams("c", first, concurrency_limit=2, stall_after=STALL)
    store.subscribe_to_all_streams("c", second, concurrency_limit=2, stall_after=STALL)
    first.subscribed(), second.subscribed()
    store.append_to_stream("s-0", 0, events(1))  # never acked by whoever gets it
    wait_until(lambda: not first.queue.empty() or not second.queue.empty(), what="a delivery")
    stuck, acking = (first, second) if not first.queue.empty() else (second, first)
    held = stuck.next()
    assert isinstance(held, Events)
    deadline = time.monotonic() + FOUND_WITHIN
    n = 0
    while info(store, "c").state != "stalled":
        assert time.monotonic() < deadline, f"not stalled: {info(store, 'c')}"
        n += 1
        store.append_to_stream(f"s-{n}", 0, events(1))  # to the other one, which acks it
        message = acking.next()
        assert isinstance(message, Events)
        message.subscription.ack(message.events)
    assert info(store, "c").checkpoint == 0
    held.subscription.ack(held.events)
    state_becomes(store, "live", name="c", timeout=FOUND_WITHIN)


def test_an_ack_in_the_callers_transaction_clears_a_stall_and_sets_last_ack_at(
    dsn: str, store: EventStore
) -> None:
    sub = QueueSubscriber()
    handle = store.subscribe_to_all_streams("p", sub, stall_after=STALL)
    sub.subscribed()
    store.append_to_stream("s", 0, events(2))
    batch = sub.batch()
    state_becomes(store, "stalled", timeout=FOUND_WITHIN)
    with psycopg.connect(dsn) as conn, conn.transaction():
        handle.ack(batch, conn=conn)
    found = state_becomes(store, "live", timeout=5.0)
    assert found.checkpoint == 2 and found.last_ack_at is not None


# Stopped ----------------------------------------------------------------------------------------
def failing(event: Any) -> Any:
    raise RuntimeError("the projection cannot map this event")


def test_stopped_after_an_error_until_subscribed_again(store: EventStore) -> None:
    sub = QueueSubscriber()
    store.subscribe_to_all_streams("p", sub, mapper=failing, stall_after=STALL)
    sub.subscribed()
    store.append_to_stream("s", 0, events(1))
    stopped = sub.next()
    assert isinstance(stopped, SubscriptionStopped) and "mapper" in stopped.reason
    found = state_becomes(store, "stopped")
    assert not found.active and found.holder is None
    assert store.metrics()["subscriptions_stopped"] == 1
    # Subscribing again clears it.
    again = QueueSubscriber()
    handle = store.subscribe_to_all_streams("p", again, stall_after=STALL)
    again.subscribed()
    assert info(store).state in ("catching_up", "live")
    handle.ack(again.batch())
    state_becomes(store, "live")


def test_a_new_run_in_the_same_store_clears_what_its_last_run_wrote(store: EventStore) -> None:
    """The same store taking the name again keeps the row's health on its claim (a clear
    there could race its own monitor's write); the new run's first look writes its state."""
    sub = QueueSubscriber()
    store.subscribe_to_all_streams("p", sub, stall_after=STALL)
    sub.subscribed()
    store.append_to_stream("s", 0, events(1))
    sub.batch()
    state_becomes(store, "stalled", timeout=FOUND_WITHIN)
    store.unsubscribe_from_all_streams("p")
    state_becomes(store, "idle")
    again = QueueSubscriber()
    handle = store.subscribe_to_all_streams("p", again, stall_after=60.0)
    again.subscribed()
    batch = again.batch()  # the unacked event again: catching up, not stalled
    state_becomes(store, "catching_up", timeout=5.0)
    handle.ack(batch)
    state_becomes(store, "live", timeout=5.0)


def test_unsubscribe_is_idle_not_stopped(store: EventStore) -> None:
    sub = QueueSubscriber()
    store.subscribe_to_all_streams("p", sub, stall_after=STALL)
    sub.subscribed()
    store.unsubscribe_from_all_streams("p")
    state_becomes(store, "idle")
    sub.nothing()
    assert info(store).state == "idle"


def test_a_subscriber_stopped_before_the_store_leaves_it_idle_not_stopped(
    dsn: str, schema: str, store: EventStore
) -> None:
    """The documented shutdown (docs/subscriptions.md: stop your actors in a `finally`, then
    the store) ends each subscription because its subscriber stopped: nothing failed, and
    nobody could be told `SubscriptionStopped`, so it is "idle" like after `unsubscribe`.
    It was "stopped", an error state that made `status --check` exit 2 until the next
    subscribe (found by a probe cancelling the tasks of asyncio subscriptions)."""
    ref, sub = actor_subscriber(auto_ack=True)
    store.subscribe_to_all_streams("p", ref, stall_after=STALL)
    sub.subscribed()
    store.append_to_stream("s", 0, events(1))
    sub.batch()
    state_becomes(store, "live", timeout=5.0)
    ref.stop()
    wait_until(lambda: not info(store).active, what="the subscription to end")
    assert info(store).state == "idle"
    done = cli("status", "--dsn", dsn, "--schema", schema, "--check", timeout=60)
    assert done.returncode == 0, done.stdout


# Across processes -------------------------------------------------------------------------------
def test_another_store_sees_the_state(make_store: Callable[..., EventStore]) -> None:
    holder, other = make_store(), make_store()
    sub = QueueSubscriber()
    handle = holder.subscribe_to_all_streams("p", sub, stall_after=STALL)
    sub.subscribed()
    state_becomes(other, "live")
    holder.append_to_stream("s", 0, events(1))
    batch = sub.batch()
    found = state_becomes(other, "stalled", timeout=FOUND_WITHIN)
    assert found.holder is not None and found.lag_seconds is not None
    # The other store did not find the stall itself: it only reads it.
    assert stall_count(other) == 0 and stall_count(holder) == 1
    handle.ack(batch)
    state_becomes(other, "live", timeout=5.0)


def test_status_check_exit_codes(dsn: str, schema: str, store: EventStore) -> None:
    def status(*extra: str) -> Any:
        return cli("status", "--dsn", dsn, "--schema", schema, *extra, timeout=60)

    done = status("--check")
    assert done.returncode == 0, done.stderr
    sub = QueueSubscriber()
    handle = store.subscribe_to_all_streams("p", sub, stall_after=STALL)
    sub.subscribed()
    store.append_to_stream("s", 0, events(1))
    batch = sub.batch()
    state_becomes(store, "stalled", timeout=FOUND_WITHIN)
    done = status("--check")
    assert done.returncode == 2, done.stderr
    header, row = done.stdout.splitlines()[1:3]
    assert "lag_seconds" in header.split() and "state" in header.split()
    assert row.split()[-1] == "stalled"
    as_json = status("--check", "--json")
    assert as_json.returncode == 2
    (shown,) = json.loads(as_json.stdout)["subscriptions"]
    assert shown["state"] == "stalled" and shown["lag_seconds"] > 0
    assert status().returncode == 0  # without --check: a report, not a verdict
    handle.ack(batch)
    state_becomes(store, "live", timeout=5.0)
    done = status("--check", "--json")
    assert done.returncode == 0, done.stdout
    assert json.loads(done.stdout)["subscriptions"][0]["last_ack_at"] is not None
    # Stopped counts too.
    store.unsubscribe_from_all_streams("p")
    failed = QueueSubscriber()
    store.subscribe_to_all_streams("p", failed, mapper=failing)
    failed.subscribed()
    store.append_to_stream("s", 1, events(1))
    assert isinstance(failed.next(), SubscriptionStopped)
    state_becomes(store, "stopped")
    assert status("--check").returncode == 2


def test_prometheus_export_has_the_stall_figures(store: EventStore) -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    from eventstore_actors import prometheus

    registry = prometheus_client.CollectorRegistry()
    prometheus.register(store, registry)
    sub = QueueSubscriber()
    store.subscribe_to_all_streams("p", sub, stall_after=STALL)
    sub.subscribed()
    store.append_to_stream("s", 0, events(1))
    sub.batch()
    state_becomes(store, "stalled", timeout=FOUND_WITHIN)
    text = prometheus_client.generate_latest(registry).decode()
    assert "eventstore_subscription_stalls_total" in text
    assert 'eventstore_subscription_stalled{name="p"' in text
    assert "eventstore_subscription_lag_seconds{" in text


# The health of an ack costs one column; an append nothing ---------------------------------------
def test_health_adds_no_write_per_append_or_ack(dsn: str, schema: str, store: EventStore) -> None:
    """Row updates of the subscriptions table while 20 events are appended and acked one by
    one: the checkpoint writes that happened before health existed (at most one per ack),
    and no more; the state was written once, before."""
    sub = QueueSubscriber()
    handle = store.subscribe_to_all_streams("p", sub, stall_after=30)
    sub.subscribed()
    state_becomes(store, "live")
    table = sql.Identifier(schema, "subscriptions")

    def written() -> Any:
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(sql.SQL("SELECT health FROM {}").format(table)).fetchone()
        return row and row[0]

    wait_until(lambda: written() == "live")  # the holder's one write of its state
    counter = sql.Identifier(schema, "health_test_updates")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (n bigint)").format(counter))
        conn.execute(
            sql.SQL(
                "CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN INSERT INTO {} VALUES (1); RETURN NEW; END $$"
            ).format(sql.Identifier(schema, "health_test_count"), counter)
        )
        conn.execute(
            sql.SQL(
                "CREATE TRIGGER health_test AFTER UPDATE ON {} FOR EACH ROW EXECUTE FUNCTION {}()"
            ).format(table, sql.Identifier(schema, "health_test_count"))
        )
    for n in range(20):
        store.append_to_stream("s", n, events(1))
        handle.ack(sub.batch())
    wait_until(lambda: info(store).checkpoint == 20)
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(counter)).fetchone()
        acked_at = conn.execute(
            sql.SQL("SELECT last_ack_at IS NOT NULL, health FROM {}").format(table)
        ).fetchone()
    assert row is not None and 1 <= row[0] <= 20
    assert acked_at == (True, "live")


# Migration from schema version 3 ---------------------------------------------------------------
@pytest.fixture(scope="session")
def release_3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The previous release's package and SQL (schema version 3), from the git history."""
    return release_tree(tmp_path_factory.mktemp("release-3"), RELEASE_3)


def test_migrate_from_schema_3_keeps_checkpoints_and_adds_health(dsn: str, release_3: Path) -> None:
    name = f"r3_{uuid.uuid4().hex[:12]}"
    # A store made and used by the previous release's own code: a subscription that acked 2
    # of 3 events, then went away.
    shown = run_release(
        release_3,
        "import sys, queue\n"
        "from eventstore_actors import admin, EventStore, EventData, Events\n"
        "from eventstore_actors.storage.migrations import SCHEMA_VERSION\n"
        "admin.init(sys.argv[1], sys.argv[2])\n"
        "q = queue.Queue()\n"
        "class S:\n"
        "    def tell(self, m): q.put(m)\n"
        "with EventStore.start(sys.argv[1], schema=sys.argv[2]) as store:\n"
        "    store.append_to_stream('s', 0, [EventData({'n': n}) for n in range(3)])\n"
        "    sub = store.subscribe_to_all_streams('p', S(), max_batch=2)\n"
        "    while True:\n"
        "        m = q.get(timeout=10)\n"
        "        if isinstance(m, Events):\n"
        "            sub.ack(m.events); break\n"
        "    import time\n"
        "    end = time.monotonic() + 10\n"
        "    while store.subscription_info('p').checkpoint != 2 and time.monotonic() < end:\n"
        "        time.sleep(0.02)\n"
        "    print(SCHEMA_VERSION, store.subscription_info('p').checkpoint)\n",
        dsn,
        name,
    )
    try:
        assert shown.split()[-2:] == ["3", "2"]
        assert admin.migrate(dsn, name) == SCHEMA_VERSION
        assert admin.migrate(dsn, name) == SCHEMA_VERSION  # again: nothing left to do
        with EventStore.start(dsn, schema=name) as store:
            (found,) = store.subscriptions()
            assert (found.checkpoint, found.lag, found.state) == (2, 1, "idle")
            assert found.last_ack_at is None and found.lag_seconds is not None
            sub = QueueSubscriber()
            handle = store.subscribe_to_all_streams("p", sub, stall_after=STALL)
            sub.subscribed()
            batch = sub.batch()
            assert [e.event_id for e in batch] == [3]
            state_becomes(store, "stalled", timeout=FOUND_WITHIN)
            handle.ack(batch)
            # The monitor writes 'live' as the ack arrives and the actor writes the checkpoint
            # just after: a look in between sees 'live' at checkpoint 2, so wait for both.
            found = wait_until(
                lambda: (f := info(store)).state == "live" and f.checkpoint == 3 and f,
                timeout=5.0,
                what="p to be live at checkpoint 3",
            )
            assert found.last_ack_at is not None
    finally:
        admin.drop(dsn, name)
