"""Fail-over to a promoted standby under load, on real servers.

A primary with a synchronous streaming standby (``synchronous_standby_names = '*'``); the
store connects with a multi-host DSN (``target_session_attrs=read-write``). While appends and
an all-streams subscription run, the primary is stopped with ``pg_ctl stop -m immediate`` and
the standby promoted: the store carries on without a restart, calls during the switch raise
StoreUnavailableError only, every append that returned is on the new primary, and the
subscription retakes its lock there and delivers every event.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import psycopg.conninfo
import pytest
from support import listener_backends, lock_backends, subscription_lock_key, wait_until
from support.pgserver import PgServer
from support.replication import ReplicaPair, missing_binaries

from eventstore_actors import ANY_VERSION, EventData, EventStore, admin
from eventstore_actors.errors import StoreUnavailableError
from eventstore_actors.subscriptions.messages import Events, Subscribed


@pytest.fixture
def pair() -> Iterator[ReplicaPair]:
    why = missing_binaries()
    if why is not None:
        pytest.skip(f"no streaming standby: {why}")
    with ReplicaPair(synchronous=True) as started:
        yield started


def _append_retrying(store: EventStore, stream: str) -> int:
    """Append one event, retrying while the store reconnects; its event_id."""
    deadline = time.monotonic() + 20
    while True:
        try:
            result = store.append_to_stream(stream, ANY_VERSION, [EventData({"n": 1})])
            return int(result.first_event_id)
        except StoreUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Appender(threading.Thread):
    """Appends one event at a time to a few streams; records what returned and what raised."""

    def __init__(self, store: EventStore) -> None:
        super().__init__(daemon=True)
        self.store = store
        self.stop = threading.Event()
        self.returned: list[str] = []  # event_uuids of appends that returned
        self.times: list[float] = []  # when each returned
        self.errors: list[BaseException] = []
        self.streams = [f"f-{n}" for n in range(4)]
        self.lock = threading.Lock()

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            stream = self.streams[n % len(self.streams)]
            event_uuid = uuid.uuid4()
            batch = [EventData({"n": n}, event_type="tests.Numbered", event_uuid=event_uuid)]
            try:
                self.store.append_to_stream(stream, ANY_VERSION, batch)
            except Exception as exc:
                with self.lock:
                    self.errors.append(exc)
                time.sleep(0.02)
                continue
            with self.lock:
                self.returned.append(str(event_uuid))
                self.times.append(time.monotonic())

    def first_success_after(self, moment: float) -> float:
        with self.lock:
            return next(t for t in self.times if t > moment)

    def successes(self) -> int:
        with self.lock:
            return len(self.returned)


class Collector:
    """A subscriber that acks every batch and records the event_ids it was sent."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.times: list[float] = []
        self.subscribed = 0
        self.other: queue.Queue[Any] = queue.Queue()
        self.lock = threading.Lock()

    def tell(self, message: Any) -> None:
        if isinstance(message, Events):
            with self.lock:
                self.ids.extend(e.event_id for e in message.events)
                self.times.extend(time.monotonic() for _ in message.events)
            message.subscription.ack(message.events)
        elif isinstance(message, Subscribed):
            self.subscribed += 1
        else:
            self.other.put(message)

    def seen(self) -> set[int]:
        with self.lock:
            return set(self.ids)


def test_promoted_standby_takes_over_without_a_restart(pair: ReplicaPair) -> None:
    schema = f"f_{uuid.uuid4().hex[:12]}"
    admin.init(pair.primary.dsn, schema)
    pair.wait_replayed()
    dsn = pair.multi_host_dsn()
    store = EventStore.start(
        dsn, schema=schema, connect_timeout=2, call_timeout=5, health_interval=1
    )
    appender = Appender(store)
    try:
        collector = Collector()
        store.subscribe_to_all_streams("failover", collector, "origin")
        appender.start()
        wait_until(lambda: appender.successes() >= 100, what="appends before the fail-over")
        wait_until(lambda: len(collector.seen()) >= 50, what="deliveries before the fail-over")
        before = appender.successes()

        pair.primary._run("pg_ctl", "-D", str(pair.primary.data), "-m", "immediate", "-w", "stop")
        stopped = time.monotonic()
        pair.standby.promote()
        promoted = time.monotonic()
        wait_until(
            lambda: appender.successes() > before + 5, timeout=30, what="appends after promote"
        )
        after = appender.successes()
        wait_until(lambda: appender.successes() >= after + 100, timeout=30)
        appender.stop.set()
        appender.join(timeout=10)
        assert not appender.is_alive()

        # Calls during the switch failed with the contract's error, nothing else.
        assert all(isinstance(e, StoreUnavailableError) for e in appender.errors), {
            type(e).__name__ for e in appender.errors
        }
        # Synchronous replication: every append that returned is on the new primary.
        with psycopg.connect(pair.standby.dsn, autocommit=True) as conn:
            stored = {
                str(r[0])
                for r in conn.execute(f"SELECT event_uuid FROM {schema}.events").fetchall()
            }
            last = conn.execute(f"SELECT max(event_id) FROM {schema}.events").fetchone()
        missing = set(appender.returned) - stored
        assert not missing, f"{len(missing)} returned appends lost"
        assert last is not None and last[0] is not None
        # The store reads and writes on the new primary; the subscription retook its lock
        # there and delivers everything (after its checkpoint: repeats allowed, no gaps).
        assert len(store.read_all_streams_forward(0, 100_000)) == len(stored)
        wait_until(
            lambda: collector.seen() >= set(range(1, int(last[0]) + 1)),
            timeout=30,
            what="every event delivered after the fail-over",
        )
        assert collector.other.empty(), collector.other.get()
        # The listener is back, on the new primary, and the subscription holds its lock there.
        wait_until(lambda: listener_backends(pair.standby.dsn, schema), what="the listener")
        key = subscription_lock_key(schema, "$all", "failover")
        assert lock_backends(pair.standby.dsn, key)
        resumed = appender.first_success_after(promoted)
        first_append = appender.first_success_after(stopped)
        with collector.lock:
            delivered = next(t for t in collector.times if t > promoted)

        # A read-only server back on the old primary's address (listed first in the DSN):
        # reconnects skip it (target_session_attrs=read-write) and land on the new primary.
        decoy = PgServer(("-c default_transaction_read_only=on",))
        decoy.port = pair.primary.port
        decoy.dsn = pair.primary.dsn
        decoy.start()
        try:
            with psycopg.connect(pair.standby.dsn, autocommit=True) as conn:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'eventstore-actors'"
                )
            result = _append_retrying(store, "after-decoy")
            assert store.read_stream_forward("after-decoy")[0].event_id == result
            with psycopg.connect(pair.standby.dsn, autocommit=True) as conn:
                row = conn.execute(
                    f"SELECT count(*) FROM {schema}.events e JOIN {schema}.streams s "
                    "USING (stream_id) WHERE s.stream_uuid = 'after-decoy'"
                ).fetchone()
            assert row == (1,)
        finally:
            decoy.stop()
        print(
            f"\nfail-over: promote took {promoted - stopped:.2f} s; first append returned "
            f"{first_append - stopped:.2f} s after the stop ({resumed - promoted:.2f} s after "
            f"promote returned); first delivery {delivered - promoted:.2f} s after promote; "
            f"{len(appender.errors)} calls failed during the switch; "
            f"{len(appender.returned)} appends returned"
        )
    finally:
        appender.stop.set()
        appender.join(timeout=10)
        store.stop()


def test_multi_host_dsn_starts_past_a_silent_first_host(dsn: str, schema: str) -> None:
    """connect_timeout applies to each host in turn: a first host that accepts and never
    answers costs every connection that long, and start still succeeds on the second."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(100)
        params = psycopg.conninfo.conninfo_to_dict(dsn)
        multi = psycopg.conninfo.make_conninfo(
            dsn,
            host=f"127.0.0.1,{params.get('host') or '127.0.0.1'}",
            port=f"{silent.getsockname()[1]},{params.get('port') or 5432}",
            target_session_attrs="read-write",
        )
        with EventStore.start(multi, schema=schema, connect_timeout=2, pool_size=4) as store:
            store.append_to_stream("multi", 0, [EventData({"n": 1})])
            assert len(store.read_stream_forward("multi")) == 1
