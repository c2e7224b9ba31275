"""The scavenger's cost to appends: single-event appends while it deletes a large hidden
range, next to the same appends with nothing to delete, in the same run.

One store on the bench schema. A long stream is appended first (not timed). Each of
`scavenger_repeats` rounds runs the appends twice: alone, and right after truncating the
next slice of that stream (the truncation wakes the scavenger, which deletes the slice in
bounded batches while the appends run); the order alternates, so that drift in the machine's
load hits both sides alike. A round counts only if rows of its slice were still there when
its appends ended (the scavenger worked throughout); before the next side starts, the slice
is waited for until it is gone. Reported per writer count: throughput while scavenging
("api") next to appends alone ("raw"), best round of each, with the target: at most 5 %
slower. The rows deleted per second by the scavenger are in `extra`.
"""

from __future__ import annotations

import statistics
import time
import uuid
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql as pgsql

from ..context import Context
from ..harness import run_workers
from ..payload import api_events
from ..results import Result, Target

if TYPE_CHECKING:
    from ...store import EventStore

__all__ = ["run_scavenger", "scavenger_steps"]

#: Most that the scavenger may slow appends down, as a fraction.
MAX_COST = 0.05
#: Events per append while the long stream is built.
_SEED_BATCH = 10_000
#: Seconds a slice may take to be deleted before the workload gives up.
_SLICE_TIMEOUT = 600.0


def scavenger_steps(ctx: Context) -> int:
    return 1 + len(ctx.sizes.scavenger_appends)


def _stored(ctx: Context, stream_id: int, below: int) -> int:
    """Rows of the long stream still stored below position `below`."""
    with psycopg.connect(ctx.dsn, autocommit=True) as conn:
        query = pgsql.SQL(
            "SELECT count(*) FROM {}.events WHERE stream_id = %s AND stream_version < %s"
        ).format(pgsql.Identifier(ctx.schema.name))
        row = conn.execute(query, (stream_id, below)).fetchone()
    return int(row[0]) if row else 0


def _stream_id(ctx: Context, stream: str) -> int:
    with psycopg.connect(ctx.dsn, autocommit=True) as conn:
        query = pgsql.SQL("SELECT stream_id FROM {}.streams WHERE stream_uuid = %s").format(
            pgsql.Identifier(ctx.schema.name)
        )
        row = conn.execute(query, (stream,)).fetchone()
    assert row is not None
    return int(row[0])  # type: ignore[call-overload]


def _wait_gone(ctx: Context, stream_id: int, below: int) -> float:
    """Wait until the scavenger deleted everything below `below`; the seconds waited."""
    started = time.monotonic()
    pause = 0.05
    while _stored(ctx, stream_id, below):
        if time.monotonic() - started > _SLICE_TIMEOUT:
            raise RuntimeError(f"the scavenger did not finish a slice in {_SLICE_TIMEOUT:.0f} s")
        time.sleep(pause)
        pause = min(0.5, pause * 2)
    return time.monotonic() - started


def _appends(store: EventStore, writers: int, per_writer: int) -> float:
    """Wall seconds of `writers` x `per_writer` single-event appends, each to its own stream."""
    events = api_events(1)
    streams = [f"s-{w}-{uuid.uuid4().hex}" for w in range(writers)]
    append = store.append_to_stream

    def op(worker: int, i: int) -> None:
        append(streams[worker], i, events)

    return run_workers(writers, per_writer, op, lockstep=False)


def _scavenging(
    ctx: Context, store: EventStore, long_stream: tuple[str, int], cut: int, load: tuple[int, int]
) -> tuple[float, int, float]:
    """Truncate the long stream below `cut` and time the appends while the scavenger deletes
    the slice: (append seconds, rows of the slice left when they ended, seconds until the
    slice was gone)."""
    stream, stream_id = long_stream
    started = time.monotonic()
    store.truncate_stream(stream, cut)
    seconds = _appends(store, *load)
    left = _stored(ctx, stream_id, cut)
    _wait_gone(ctx, stream_id, cut)
    return seconds, left, time.monotonic() - started


def run_scavenger(ctx: Context) -> list[Result]:
    sizes = ctx.sizes
    rounds = sizes.scavenger_repeats
    hidden = sizes.scavenger_hidden
    slice_size = hidden // (rounds * len(sizes.scavenger_appends))
    results = []
    ctx.schema.reset()
    with ctx.store() as store:
        stream = f"long-{uuid.uuid4().hex}"
        with ctx.step(f"scavenger: append {hidden:,} events to one stream"):
            batch = api_events(_SEED_BATCH)
            version = 0
            while version < hidden:
                size = min(_SEED_BATCH, hidden - version)
                store.append_to_stream(stream, version, batch[:size])
                version += size
        long_stream = (stream, _stream_id(ctx, stream))
        cut = 1
        for writers, per_writer in sizes.scavenger_appends.items():
            label = f"single-event appends, {writers} writer{'s' if writers > 1 else ''}"
            load = (writers, per_writer)
            alone: list[float] = []
            busy: list[tuple[float, int, float]] = []
            with ctx.step(f"scavenger: {label}, alone / while deleting x {rounds}"):
                for n in range(rounds):
                    # Alone then scavenging, then the other way round.
                    if n % 2:
                        cut += slice_size
                        busy.append(_scavenging(ctx, store, long_stream, cut, load))
                    alone.append(_appends(store, writers, per_writer))
                    if not n % 2:
                        cut += slice_size
                        busy.append(_scavenging(ctx, store, long_stream, cut, load))
            events = writers * per_writer
            valid = [seconds for seconds, left, _ in busy if left > 0]
            extra: dict[str, Any] = {
                "writers": writers,
                "events_per_round": events,
                "rounds": rounds,
                "slice_rows": slice_size,
                "rows_left_after_appends": [left for _, left, _ in busy],
                "valid_rounds": len(valid),
                "scavenged_rows_per_s": [slice_size / gone for _, _, gone in busy],
                "median_ratio": statistics.median(alone) / statistics.median(valid)
                if valid
                else None,
                "alone_runs_s": alone,
                "scavenging_runs_s": [seconds for seconds, _, _ in busy],
            }
            results.append(
                Result(
                    workload="scavenger",
                    name=f"{label} while the scavenger deletes {slice_size:,} hidden events "
                    "(vs alone)",
                    unit="events/s",
                    api=events / min(valid) if valid else None,
                    raw=events / min(alone),
                    target=Target("ratio>=", 1 - MAX_COST, ">= 0.95x appends alone"),
                    extra=extra,
                )
            )
    return results
