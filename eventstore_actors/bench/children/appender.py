"""Append paced single events from another process, for the delivery-latency workload.

`python -m eventstore_actors.bench.children.appender MODE DSN SCHEMA COUNT INTERVAL`: MODE
`api` or `raw`. Prints {"called": [t, ...], "returned": [t, ...]}: CLOCK_MONOTONIC seconds
at which append i was called and returned (after its commit); event i carries "seq": i in
its data. INTERVAL paces the appends (load shaping, not synchronisation).
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable

from ..harness import now
from ..payload import EVENT_TYPE, api_events, raw_events
from . import emit


def _paced(
    count: int, interval: float, append: Callable[[int], object]
) -> tuple[list[float], list[float]]:
    called, returned = [], []
    next_at = now()
    for i in range(count):
        called.append(now())
        append(i)
        returned.append(now())
        next_at += interval
        delay = next_at - now()
        if delay > 0:
            time.sleep(delay)
    return called, returned


def main(mode: str, dsn: str, schema: str, count: int, interval: float) -> None:
    stream = f"remote-{uuid.uuid4().hex}"
    if mode == "api":
        from eventstore_actors import EventStore

        events = api_events(count)
        with EventStore.start(dsn, schema=schema) as store:
            called, returned = _paced(
                count, interval, lambda i: store.append_to_stream(stream, i, events[i : i + 1])
            )
    else:
        from .. import raw
        from ..schema import BenchSchema

        pairs = raw_events(count)
        channel = raw.channel(schema)
        with BenchSchema(dsn, schema).connect() as conn:
            called, returned = _paced(
                count,
                interval,
                lambda i: raw.append(conn, stream, i, pairs[i : i + 1], EVENT_TYPE, channel),
            )
    emit({"called": called, "returned": returned})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
