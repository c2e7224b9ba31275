"""Consumer groups: catch-up of the stored events by 1, 2 and 4 consumer processes.

Each process's subscriber works 0.2 ms per event (slept once per batch: I/O-bound work, so
more processes can help even on a small machine). API: every process joins one consumer group
of 8 partitions (`subscribe_to_all_streams(..., partitions=8)`) and the group shares the
partitions out; the time runs from the moment all processes are told to start until every
event was processed by some process (joining, the rebalance and any event processed twice
during it included). Raw: each process reads, through psycopg alone, a fixed share of the same
8 partitions (hash computed in the database the same way) with keyset pages and one
checkpoint per page: no locks, no hand-over, no fail-over.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from typing import Any

from ..children import spawn
from ..context import Context
from ..results import Result

__all__ = ["group_steps", "run_groups"]

PROCESSES = (1, 2, 4)
PARTITIONS = 8
WORK_US = 200


def group_steps(ctx: Context) -> int:
    return 1 + 2 * len(PROCESSES)


def _reader(proc: subprocess.Popen[str], index: int, out: queue.Queue[Any]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        try:
            out.put((index, json.loads(line)))
        except ValueError:
            continue  # not ours
    out.put((index, None))


def _drain(proc: subprocess.Popen[str]) -> None:
    assert proc.stderr is not None
    for _ in proc.stderr:
        pass


def _run(ctx: Context, mode: str, processes: int, total: int) -> tuple[float, int]:
    """Seconds until every event was processed once, and how many were processed twice."""
    messages: queue.Queue[Any] = queue.Queue()
    procs = []
    for rank in range(processes):
        proc = spawn(
            "group",
            mode,
            ctx.dsn,
            ctx.schema.name,
            str(PARTITIONS),
            str(WORK_US),
            str(rank),
            str(processes),
            stdin=True,
        )
        procs.append(proc)
        threading.Thread(target=_reader, args=(proc, rank, messages), daemon=True).start()
        threading.Thread(target=_drain, args=(proc,), daemon=True).start()
    try:
        ready = 0
        while ready < processes:
            index, message = messages.get(timeout=60)
            if message is None:
                raise RuntimeError(f"consumer {index} exited before it was ready")
            ready += bool(message.get("ready"))
        began = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        seen = bytearray(total + 1)
        distinct = twice = ended = 0
        while distinct < total:
            index, message = messages.get(timeout=120)
            if message is None:  # a raw consumer is done with its share
                ended += 1
                if procs[index].wait(timeout=30) != 0 or ended == processes:
                    raise RuntimeError(f"consumers exited with {distinct} of {total} events")
                continue
            for event_id in message.get("ids", ()):
                if seen[event_id]:
                    twice += 1
                else:
                    seen[event_id] = 1
                    distinct += 1
        elapsed = time.perf_counter() - began
    finally:
        for proc in procs:
            try:
                assert proc.stdin is not None
                proc.stdin.close()
            except OSError:
                pass
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return elapsed, twice


def run_groups(ctx: Context) -> list[Result]:
    total = ctx.sizes.catchup_events
    with ctx.step("consumer groups: loading events"):
        ctx.schema.reset()
        ctx.schema.preload(total)
    results = []
    for processes in PROCESSES:
        with ctx.step(f"consumer group catch-up, {processes} processes, raw"):
            raw_s, _ = _run(ctx, "raw", processes, total)
        with ctx.step(f"consumer group catch-up, {processes} processes, API"):
            api_s, twice = _run(ctx, "api", processes, total)
        with ctx.schema.connect() as conn:  # the next run starts from the origin again
            conn.execute(
                "DELETE FROM subscriptions WHERE stream_uuid = '$all'"
                " AND subscription_name LIKE 'bench-group%%'"
            )
        plural = "es" if processes > 1 else ""
        results.append(
            Result(
                "groups",
                f"consumer-group catch-up, {total:,} events, 0.2 ms/event, "
                f"{processes} process{plural}",
                "events/s",
                total / api_s,
                total / raw_s,
                target=None,
                extra={
                    "events": total,
                    "processes": processes,
                    "partitions": PARTITIONS,
                    "work_us_per_event": WORK_US,
                    "api_s": api_s,
                    "raw_s": raw_s,
                    "api_processed_twice": twice,
                },
            )
        )
    return results
