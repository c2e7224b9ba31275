"""Replay every stored event and report peak RSS.

`python -m eventstore_actors.bench.children.replay MODE DSN SCHEMA`:

MODE is `api` (EventStore.stream_all_forward) or `raw` (keyset pages). Run in its own process
so that the peak resident set size belongs to the replay alone.
"""

from __future__ import annotations

import resource
import sys
import time

from . import emit


def _peak_kib() -> int:
    """This process's peak resident set size in KiB.

    VmHWM belongs to this program's own address space; ru_maxrss would also count the parent's
    size at fork, which exec does not reset.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def main(mode: str, dsn: str, schema: str, batch: int = 1000) -> None:
    if mode == "api":
        from eventstore_actors import EventStore

        with EventStore.start(dsn, schema=schema) as store:
            before = _peak_kib()
            began = time.perf_counter()
            count = sum(1 for _ in store.stream_all_forward(0, read_batch_size=batch))
            seconds = time.perf_counter() - began
            peak = _peak_kib()
    else:
        from ..raw import stream_all
        from ..schema import BenchSchema

        with BenchSchema(dsn, schema).connect() as conn:
            before = _peak_kib()
            began = time.perf_counter()
            count = sum(1 for _ in stream_all(conn, 0, batch))
            seconds = time.perf_counter() - began
            peak = _peak_kib()
    emit({"events": count, "seconds": seconds, "rss_before_kib": before, "rss_peak_kib": peak})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
