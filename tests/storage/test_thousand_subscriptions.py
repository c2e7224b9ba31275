"""1,000 subscriptions in one process, by default: they start and deliver on a server with
PostgreSQL's default `max_connections = 100`, the store holding a handful of connections (a
subscription costs memory, not a connection), and their acks' checkpoints written in batches.

A throwaway server (support/pgserver.py) with max_connections=100; where none can be started
here, the suite's server, counting the store's connections in pg_stat_activity all the same.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from support import checkpoints, events, wait_until
from support.pgserver import PgServer, missing_binaries

from eventstore_actors import Events, EventStore, Subscribed, SubscriptionStopped, admin

COUNT = 1000
SCHEMA = "thousand"


class Counter:
    """Every subscriber's receipts, counted in one place (acks each batch at once)."""

    def __init__(self) -> None:
        self.subscribed = 0
        self.seen: dict[int, set[int]] = {}  # subscriber -> event ids
        self.stopped: list[str | None] = []
        self._mutex = threading.Lock()

    def subscriber(self, index: int) -> Any:
        counter = self

        class Subscriber:
            def tell(self, message: Any) -> None:
                counter.told(index, message)

        return Subscriber()

    def told(self, index: int, message: Any) -> None:
        if isinstance(message, Subscribed):
            with self._mutex:
                self.subscribed += 1
        elif isinstance(message, Events):
            with self._mutex:
                self.seen.setdefault(index, set()).update(e.event_id for e in message.events)
            message.subscription.ack(message.events[-1])
        elif isinstance(message, SubscriptionStopped):
            with self._mutex:
                self.stopped.append(message.reason)

    def all_have(self, ids: set[int]) -> bool:
        with self._mutex:
            return len(self.seen) == COUNT and all(s >= ids for s in self.seen.values())


@pytest.fixture(scope="module")
def server_dsn(dsn: str) -> Iterator[str]:
    """A server with max_connections = 100 (else the suite's server)."""
    if missing_binaries() is not None:
        yield dsn
        return
    with PgServer(options=("-c max_connections=100",)) as server:
        yield server.dsn


def _connections(dsn: str, application_name: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            (application_name,),
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.timeout(300)  # about 35 s; a thousand subscribe calls on a loaded machine: more
def test_a_thousand_subscriptions_start_and_deliver_on_a_handful_of_connections(
    server_dsn: str,
) -> None:
    schema = f"{SCHEMA}_{uuid.uuid4().hex[:8]}"
    admin.init(server_dsn, schema)
    app = f"thousand-{uuid.uuid4().hex[:8]}"
    counter = Counter()
    store = EventStore.start(server_dsn, schema=schema, application_name=app)  # defaults
    try:
        for i in range(COUNT):
            store.subscribe_to_all_streams(f"projection-{i}", counter.subscriber(i))
        wait_until(lambda: counter.subscribed == COUNT, timeout=60.0, what="every Subscribed")
        store.append_to_stream("s", 0, events(3))
        ids = {e.event_id for e in store.read_all_streams_forward(0, 10)}
        wait_until(lambda: counter.all_have(ids), timeout=60.0, what="every subscriber to get them")
        # The read pool, the writer, the listener, the publisher's reads, the one lock
        # connection and the retention scavenger's while it looks: the subscriptions add none.
        held = _connections(server_dsn, app)
        assert held <= store.settings.pool_size + 5, held
        assert not counter.stopped
        # The acks' checkpoints, written in batches on the lock connection (not a statement
        # each on a connection each).
        wait_until(
            lambda: list(checkpoints(server_dsn, schema).values()) == [max(ids)] * COUNT,
            what="every checkpoint stored",
        )
    finally:
        store.stop()
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(
                psycopg.sql.SQL("DROP SCHEMA {} CASCADE").format(psycopg.sql.Identifier(schema))
            )
