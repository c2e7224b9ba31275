"""One consumer process of the consumer-group catch-up benchmark.

`python -m eventstore_actors.bench.children.group MODE DSN SCHEMA PARTITIONS WORK_US RANK
MEMBERS`: prints `{"ready": true}`, waits for a line on stdin, then consumes, sleeping
WORK_US microseconds per event (once per batch: I/O-bound work, such as writes to another
system), and prints `{"ids": [...]}` for every batch done. MODE `api` joins the consumer group
(`partitions=PARTITIONS`) and runs until stdin closes; MODE `raw` reads with keyset pages,
through psycopg alone, the partitions p with p % MEMBERS == RANK (a fixed assignment: no
locks, no hand-over), storing its checkpoint once per page, and exits when it has read all.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from typing import Any

from ...storage.reader import PARTITION_SQL
from . import emit

_PAGE = 1000


def _wait_for_go() -> None:
    emit({"ready": True})
    sys.stdin.readline()


def _api(dsn: str, schema: str, partitions: int, work: float) -> None:
    from eventstore_actors import Events, EventStore

    lock = threading.Lock()

    class Consumer:
        def tell(self, message: Any) -> None:  # on the partition's actor thread
            if isinstance(message, Events):
                events = message.events
                with lock:  # one worker per process, as the raw side (partitions take turns)
                    time.sleep(work * len(events))
                    emit({"ids": [e.event_id for e in events]})
                message.subscription.ack(events)

    with EventStore.start(dsn, schema=schema) as store:
        _wait_for_go()
        store.subscribe_to_all_streams("bench-group", Consumer(), partitions=partitions)
        sys.stdin.readline()  # until the parent says stop (or closes stdin)


def _raw(dsn: str, schema: str, partitions: int, work: float, rank: int, members: int) -> None:
    from ..raw import _SELECT, decode_rows
    from ..schema import BenchSchema

    mine = [p for p in range(partitions) if p % members == rank]
    name = f"bench-group-raw-{rank}"
    query = (
        _SELECT + f" WHERE e.event_id > %(after)s AND {PARTITION_SQL} = ANY(%(mine)s)"
        " ORDER BY e.event_id LIMIT %(page)s"
    )
    with BenchSchema(dsn, schema).connect() as conn:
        _wait_for_go()
        row = conn.execute(
            "INSERT INTO subscriptions (stream_uuid, subscription_name) VALUES ('$all', %s)"
            " ON CONFLICT (stream_uuid, subscription_name) DO UPDATE SET last_seen ="
            " subscriptions.last_seen RETURNING last_seen",
            (name,),
        ).fetchone()
        checkpoint = int(row[0]) if row else 0  # type: ignore[call-overload]
        params = {"partitions": partitions, "mine": mine, "page": _PAGE}
        while True:
            cur = conn.cursor(binary=True)
            cur.execute(query, {**params, "after": checkpoint}, prepare=True)
            page = decode_rows(cur.fetchall())
            if not page:
                break
            for _, run in itertools.groupby(page, key=lambda r: r[1]):
                batch = list(run)
                time.sleep(work * len(batch))
                emit({"ids": [r[0] for r in batch]})
            checkpoint = page[-1][0]
            conn.execute(
                "UPDATE subscriptions SET last_seen = %s"
                " WHERE stream_uuid = '$all' AND subscription_name = %s",
                (checkpoint, name),
                prepare=True,
            )
        conn.execute(
            "DELETE FROM subscriptions WHERE stream_uuid = '$all' AND subscription_name = %s",
            (name,),
        )
    emit({"done": True})


def main(argv: list[str]) -> None:
    mode, dsn, schema = argv[0], argv[1], argv[2]
    partitions, work = int(argv[3]), float(argv[4]) / 1e6
    rank, members = int(argv[5]), int(argv[6])
    # The store's logs go to stderr, warnings only (the library's default): stdout carries
    # the results.
    if mode == "api":
        _api(dsn, schema, partitions, work)
    else:
        _raw(dsn, schema, partitions, work, rank, members)


if __name__ == "__main__":
    main(sys.argv[1:])
