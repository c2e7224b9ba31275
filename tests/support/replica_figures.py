"""Figures for the replica section of docs/scale-out.md: read and append latency without a
replica, with one, and a read right after this store's own append (waits for the standby's
replay).

    PYTHONPATH=. python tests/support/replica_figures.py [rounds]

Starts its own primary and streaming standby (tests/support/replication.py), removed after.
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eventstore_actors import EventData, EventStore, admin
from support.replication import ReplicaPair


def _timed(work: Callable[[], object], rounds: int) -> tuple[float, float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        times.append((time.perf_counter() - started) * 1e6)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


def main(rounds: int) -> None:
    with ReplicaPair() as pair:
        schema = f"fig_{uuid.uuid4().hex[:8]}"
        admin.init(pair.primary.dsn, schema)
        pair.wait_replayed()
        with (
            EventStore.start(pair.primary.dsn, schema=schema) as plain,
            EventStore.start(
                pair.primary.dsn, schema=schema, replica_dsn=pair.standby.dsn
            ) as replica,
        ):
            plain.append_to_stream("s", 0, [EventData({"n": n}) for n in range(10)])
            pair.wait_replayed()
            rows = [
                ("read 10 events, primary only", plain, lambda s: s.read_stream_forward("s")),
                ("read 10 events, replica_dsn", replica, lambda s: s.read_stream_forward("s")),
            ]
            for name, store, work in rows:
                for _ in range(50):
                    work(store)  # warm up
                median, p99 = _timed(lambda: work(store), rounds)  # noqa: B023
                print(f"{name:48s} median {median:7.0f} us  p99 {p99:7.0f} us")
            for name, store in (
                ("append 1, primary only", plain),
                ("append 1, replica_dsn", replica),
            ):
                median, p99 = _timed(
                    lambda: store.append_to_stream(f"a-{uuid.uuid4()}", 0, [EventData({})]),  # noqa: B023
                    rounds,
                )
                print(f"{name:48s} median {median:7.0f} us  p99 {p99:7.0f} us")
            for name, store in (
                ("append 1 then read it, primary only", plain),
                ("append 1 then read it, replica_dsn", replica),
            ):

                def both(store: EventStore = store) -> None:
                    stream = f"w-{uuid.uuid4()}"
                    store.append_to_stream(stream, 0, [EventData({})])
                    assert len(store.read_stream_forward(stream)) == 1

                median, p99 = _timed(both, rounds)
                print(f"{name:48s} median {median:7.0f} us  p99 {p99:7.0f} us")
            reads = replica._replica
            assert reads is not None
            print(
                f"replica path: {reads.replica_reads} reads on the standby, "
                f"{reads.primary_reads} on the primary"
            )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
