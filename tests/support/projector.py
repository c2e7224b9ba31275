"""A projection process for the exactly-once test: counts events into a table.

Usage: ``python projector.py DSN SCHEMA NAME``. Subscribes to all streams under NAME (standby,
so a restart waits for a killed predecessor's lock to go) and, for each batch, in one
transaction on its own connection: adds the batch's size to `<schema>.projection_counter`,
records each event_id in `<schema>.projection_seen` (a primary key: a second application of
one event would fail the transaction) and acks the batch with `conn=`. Prints one line per
committed batch; runs until killed or stdin closes.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import psycopg
import structlog
from psycopg import sql

from eventstore_actors import Events, EventStore, SubscriptionStopped


class Projector:
    def __init__(self, dsn: str, schema: str) -> None:
        self.conn = psycopg.connect(dsn)
        self.counter = sql.SQL("UPDATE {}.projection_counter SET n = n + %s").format(
            sql.Identifier(schema)
        )
        self.seen = sql.SQL("INSERT INTO {}.projection_seen (event_id) VALUES (%s)").format(
            sql.Identifier(schema)
        )
        self.failed = threading.Event()

    def tell(self, message: Any) -> None:
        if isinstance(message, SubscriptionStopped):  # store.stop() at the end, or a failure
            print(f"stopped {message.reason}", flush=True)
            return
        if not isinstance(message, Events):
            return
        try:
            with self.conn.transaction():
                self.conn.execute(self.counter, (len(message.events),))
                with self.conn.cursor() as cur:
                    cur.executemany(self.seen, [(e.event_id,) for e in message.events])
                message.subscription.ack(message.events, conn=self.conn)
        except Exception as exc:
            print(f"failed {exc!r}", flush=True)
            self.failed.set()
            raise
        print(f"batch {message.events[-1].event_id}", flush=True)


def main() -> int:
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    dsn, schema, name = sys.argv[1], sys.argv[2], sys.argv[3]
    projector = Projector(dsn, schema)
    with EventStore.start(dsn, schema=schema) as store:
        store.subscribe_to_all_streams(name, projector, standby=True, max_batch=3)
        print("started", flush=True)
        for _ in sys.stdin:  # until the parent closes stdin (or kills this process)
            pass
    return 1 if projector.failed.is_set() else 0


if __name__ == "__main__":
    sys.exit(main())
