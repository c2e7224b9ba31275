"""The scavenger's cost to appends: single-event appends while it deletes a large hidden
range, next to the same appends with nothing to delete, in the same run.

One store on the bench schema. A long stream is appended first (not timed). Each of
`scavenger_repeats` pairs runs the appends twice: alone, and right after truncating the next
slice of that stream (the truncation wakes the scavenger, which deletes the slice in bounded
batches while the appends run); the order within a pair alternates. Before a pair, the long
stream is extended if it is shorter than the slice (not timed); before the next window
starts, the slice is waited for until it is gone. A pair counts only if rows of its slice
were still there when its appends ended (the scavenger worked throughout its window): each
slice is twice the most the scavenger deleted during the last three windows, so that almost
every pair counts (the pairs left out are those whose appends while scavenging were slow, so
each one left out biases the ratio upwards: `valid_pairs` says how many counted).

What the row proves. Each pair's ratio (throughput while scavenging / alone, both windows
within seconds of each other, so a drift of the machine's load hits both alike) is one draw;
the row's ratio is the median of the pairs' ratios, and its target label carries a 95 %
confidence interval of that median (order statistics: nothing assumed about the shape of
the ratios, only that the pairs are independent draws). When the interval lies above 0.95
the run shows that the scavenger costs appends less than 5 %; when it holds 0.95 the run
cannot tell, however the median falls (on a shared 2-core machine, where one window's
throughput moves by 10 to 30 % from load alone, that is the usual outcome of a quick run:
the full preset's 25 pairs of longer windows narrow it). Reported per writer count: "raw"
is the median throughput of the appends alone, "api" that times the median pair ratio; the
target: at most 5 % slower. In `extra` as well: the interval, the pairs' spread, the same
comparison from the appends' own times (median append alone / while scavenging, pooled over
the pairs), and the scavenger's delete rate (rows of a slice / seconds from its truncation
until it was gone: with the appends running part of that time).
"""

from __future__ import annotations

import math
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

__all__ = ["median_ci", "run_scavenger", "scavenger_steps"]

#: Most that the scavenger may slow appends down, as a fraction.
MAX_COST = 0.05
#: Events per append while the long stream is built.
_SEED_BATCH = 10_000
#: Seconds a slice may take to be deleted before the workload gives up.
_SLICE_TIMEOUT = 600.0
#: Seconds between looks at whether a slice is gone.
_POLL = 0.02


def scavenger_steps(ctx: Context) -> int:
    return 1 + len(ctx.sizes.scavenger_appends)


class _LongStream:
    """The long stream whose slices are truncated, and a connection of the workload's own to
    count what the scavenger has left of a slice (opened once: a connection per look would
    load the machine the appends run on)."""

    def __init__(self, ctx: Context, store: EventStore, stream: str) -> None:
        self.store, self.stream = store, stream
        self.conn = psycopg.connect(ctx.dsn, autocommit=True)
        name = pgsql.Identifier(ctx.schema.name)
        row = self.conn.execute(
            pgsql.SQL("SELECT stream_id FROM {}.streams WHERE stream_uuid = %s").format(name),
            (stream,),
        ).fetchone()
        assert row is not None
        self.stream_id = int(row[0])
        self.version = store.stream_info(stream).stream_version
        # Bounded below as well: the entries the scavenger deleted earlier are not walked.
        self._count = pgsql.SQL(
            "SELECT count(*) FROM {}.events "
            "WHERE stream_id = %s AND stream_version >= %s AND stream_version < %s"
        ).format(name)

    def extend(self, version: int) -> None:
        """Append events until the stream reaches at least `version` (a slice whose rows the
        scavenger deleted sooner than the appends ran calls for larger slices)."""
        events = api_events(_SEED_BATCH)
        while self.version < version:
            size = min(_SEED_BATCH, version - self.version)
            self.store.append_to_stream(self.stream, self.version, events[:size])
            self.version += size

    def close(self) -> None:
        self.conn.close()

    def stored(self, low: int, below: int) -> int:
        """Rows of the long stream still stored at positions low <= position < below."""
        row = self.conn.execute(self._count, (self.stream_id, low, below)).fetchone()
        return int(row[0]) if row else 0

    def wait_gone(self, low: int, below: int) -> None:
        """Wait until the scavenger deleted the slice (polled often: the delete rate is
        computed from it)."""
        started = time.monotonic()
        while self.stored(low, below):
            if time.monotonic() - started > _SLICE_TIMEOUT:
                raise RuntimeError(
                    f"the scavenger did not finish a slice in {_SLICE_TIMEOUT:.0f} s"
                )
            time.sleep(_POLL)


def _appends(store: EventStore, writers: int, per_writer: int) -> tuple[float, list[float]]:
    """`writers` x `per_writer` single-event appends, each writer to its own stream: (wall
    seconds, each append's seconds)."""
    events = api_events(1)
    streams = [f"s-{w}-{uuid.uuid4().hex}" for w in range(writers)]
    append = store.append_to_stream
    took: list[list[float]] = [[] for _ in range(writers)]

    def op(worker: int, i: int) -> None:
        started = time.perf_counter()
        append(streams[worker], i, events)
        took[worker].append(time.perf_counter() - started)

    seconds = run_workers(writers, per_writer, op, lockstep=False)
    return seconds, [t for own in took for t in own]


#: One window of appends while scavenging: (wall seconds, each append's seconds, rows of the
#: slice left when the appends ended, seconds from the truncation until the slice was gone,
#: rows of the slice).
Busy = tuple[float, list[float], int, float, int]


def _scavenging(long: _LongStream, low: int, cut: int, load: tuple[int, int]) -> Busy:
    """Truncate the long stream below `cut` (everything below `low` is gone already) and time
    the appends while the scavenger deletes the slice."""
    started = time.monotonic()
    long.store.truncate_stream(long.stream, cut)
    seconds, took = _appends(long.store, *load)
    left = long.stored(low, cut)
    long.wait_gone(low, cut)
    return seconds, took, left, time.monotonic() - started, cut - low


def median_ci(values: list[float], level: float = 0.95) -> tuple[float, float] | None:
    """A distribution-free confidence interval for the median of `values` (None when there
    are too few for `level`: 6 at least for 95 %): the order statistics of ranks j and n - j + 1
    with the largest j for which the chance that the median lies between them is still at
    least `level`. Its coverage rests only on the pairs being independent draws of the same
    distribution: nothing about their shape (a stall of the machine makes an outlier, which
    moves neither end much)."""
    n = len(values)
    ordered = sorted(values)
    best = None
    for j in range(1, n // 2 + 1):
        # P(X < j) where X ~ Binomial(n, 1/2) counts the values below the true median.
        below = sum(math.comb(n, i) for i in range(j)) / 2**n
        if 1 - 2 * below < level:
            break
        best = j
    if best is None:
        return None
    return ordered[best - 1], ordered[n - best]


def _spread(values: list[float]) -> dict[str, float] | None:
    """min, quartiles and max of `values` (None when there are none)."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) < 2:
        q1 = q3 = ordered[0]
    else:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    return {
        "min": ordered[0],
        "q1": q1,
        "median": statistics.median(ordered),
        "q3": q3,
        "max": ordered[-1],
    }


def run_scavenger(ctx: Context) -> list[Result]:
    sizes = ctx.sizes
    pairs = sizes.scavenger_repeats
    hidden = sizes.scavenger_hidden
    # The first slice: a quarter of the seeded stream; then sized from what the scavenger
    # deleted during the windows before (below), from one writer count to the next as well.
    slice_size = max(1, hidden // 4)
    deleted: list[int] = []  # rows the scavenger deleted during each window
    results = []
    ctx.schema.reset()
    with ctx.store() as store:
        stream = f"long-{uuid.uuid4().hex}"
        with ctx.step(f"scavenger: append {hidden:,} events to one stream"):
            store.append_to_stream(stream, 0, api_events(1))
            long = _LongStream(ctx, store, stream)
            long.extend(hidden)
        cut = 1
        try:
            for writers, per_writer in sizes.scavenger_appends.items():
                load = (writers, per_writer)
                alone: list[tuple[float, list[float]]] = []
                busy: list[Busy] = []
                with ctx.step(f"scavenger: {_label(writers)}, alone / while deleting x {pairs}"):
                    for n in range(pairs):
                        long.extend(cut + slice_size)  # not timed, before either window
                        # Alone then scavenging, then the other way round.
                        if n % 2:
                            busy.append(_scavenging(long, cut, cut + slice_size, load))
                        alone.append(_appends(store, writers, per_writer))
                        if not n % 2:
                            busy.append(_scavenging(long, cut, cut + slice_size, load))
                        cut += slice_size
                        # The next slice: twice the most the scavenger deleted during the
                        # last three windows, so that it works throughout the next one as
                        # well (at most the seeded length: a pair whose slice was gone too
                        # soon is left out), and no more (what is left is waited for).
                        deleted.append(slice_size - busy[-1][2])
                        slice_size = min(hidden, max(100, 2 * max(deleted[-3:])))
                results.append(_result(writers, per_writer, alone, busy))
        finally:
            long.close()
    return results


def _label(writers: int) -> str:
    return f"single-event appends, {writers} writer{'s' if writers > 1 else ''}"


def _result(
    writers: int,
    per_writer: int,
    alone: list[tuple[float, list[float]]],
    busy: list[Busy],
) -> Result:
    events = writers * per_writer
    valid = [(a, b) for a, b in zip(alone, busy, strict=True) if b[2] > 0]
    # Each valid pair: throughput while scavenging / alone.
    ratios = [a[0] / b[0] for a, b in valid]
    # The same from the appends' own times, pooled over the valid pairs: the median append
    # alone / while scavenging (a stall of the machine moves a window's sum, not its median).
    latency_alone = statistics.median([t for a, _ in valid for t in a[1]]) if valid else None
    latency_busy = statistics.median([t for _, b in valid for t in b[1]]) if valid else None
    rates = [b[4] / b[3] for b in busy]
    raw = events / statistics.median([a[0] for a in alone])
    ci = median_ci(ratios)
    if ci is None:
        pairs = f"{len(ratios)} pair" + ("" if len(ratios) == 1 else "s")
        label = f">= {1 - MAX_COST:.2f}x appends alone ({pairs}: no 95 % CI)"
    else:
        label = f">= {1 - MAX_COST:.2f}x appends alone (95 % CI {ci[0]:.2f}-{ci[1]:.2f})"
    extra: dict[str, Any] = {
        "writers": writers,
        "events_per_window": events,
        "pairs": len(alone),
        "valid_pairs": len(valid),
        "slice_rows": [b[4] for b in busy],
        "pair_ratios": ratios,
        "pair_ratio_spread": _spread(ratios),
        "pair_ratio_median": statistics.median(ratios) if ratios else None,
        # Distribution-free 95 % interval of the median pair ratio; when it holds 0.95 the
        # run cannot tell a pass from a miss of the target.
        "pair_ratio_ci95": list(ci) if ci else None,
        "ci95_above_target": None if ci is None else ci[0] >= 1 - MAX_COST,
        "ci95_below_target": None if ci is None else ci[1] < 1 - MAX_COST,
        "median_append_ms_alone": None if latency_alone is None else latency_alone * 1e3,
        "median_append_ms_scavenging": None if latency_busy is None else latency_busy * 1e3,
        "latency_ratio": latency_alone / latency_busy if latency_alone and latency_busy else None,
        "rows_left_after_appends": [b[2] for b in busy],
        "scavenged_rows_per_s": rates,
        "scavenged_rows_per_s_median": statistics.median(rates),
        "alone_runs_s": [a[0] for a in alone],
        "scavenging_runs_s": [b[0] for b in busy],
    }
    return Result(
        workload="scavenger",
        name=f"{_label(writers)} while the scavenger deletes hidden events (vs alone, median "
        "of pairs)",
        unit="events/s",
        api=raw * statistics.median(ratios) if ratios else None,
        raw=raw,
        target=Target("ratio>=", 1 - MAX_COST, label),
        extra=extra,
    )
