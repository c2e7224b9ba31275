"""Growth: append and read cost with few versus many events stored; peak RSS of a replay.

At each size (10k and 1M by default) one writer makes 100-event appends to new streams and one
reader reads whole 100-event streams, and the last 10 events of the store backward, through
the API and raw; the figure is the median cost per op at the large size over that at the small
one (and, for the backward read, its cost at the large size). Then a separate process replays every
stored event through `stream_all_forward` (raw: keyset pages) and reports its peak RSS, which
must not grow with the store.
"""

from __future__ import annotations

import random
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

from .. import raw
from ..children import finish_child, spawn
from ..context import Context
from ..payload import EVENT_TYPE, api_events, raw_events
from ..results import Result, Target

__all__ = ["growth_steps", "run_growth"]

BATCH = 100
#: Events of the backward read: the last 10 of the whole store.
LAST = 10
APPEND_TARGET = Target("api<=", 1.3, "<= 1.3x")
#: Not in the issue's table: the bench's own reading of "bounded, not growing with the store".
RSS_TARGET = Target("api<=", 1.25, "<= 1.25x (bounded)")
#: An index range scan: the last events cost the same however many are stored.
LAST_TARGET = Target("api<=", 1.5, "<= 1.5x (no scan)")
#: Filtered reads of $all from the first event: a page of a stream_uuid prefix (the bench's
#: streams are "pre-<n>-...": about a tenth to a fifth of them) and of one partition of a
#: consumer group of 8 (the read of its catch-up). Both read events in order until the page
#: is full, so their cost does not grow with the store either.
PREFIX = "pre-1"
PAGE = 100
PARTITION = (1, 8)


def growth_steps(ctx: Context) -> int:
    return 2 * 4


def _timed(ops: int, op: Callable[[int], Any]) -> float:
    """Median microseconds per op (robust to the odd checkpoint or noisy neighbour)."""
    times = []
    for i in range(ops):
        began = time.perf_counter()
        op(i)
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1e6


def _costs(ctx: Context, streams: list[str]) -> dict[str, Any]:
    ops = ctx.sizes.growth_ops
    reads = 4 * ops  # reads add nothing to the store, so they can afford more samples
    rng = random.Random(42)
    picks = [rng.choice(streams) for _ in range(reads)]
    out: dict[str, Any] = {}
    with ctx.schema.connect() as conn:
        pairs = raw_events(BATCH)
        channel = raw.channel(ctx.schema.name)
        out["raw_append_us"] = _timed(
            ops,
            lambda i: raw.append(conn, f"g-{uuid.uuid4().hex}", 0, pairs, EVENT_TYPE, channel),
        )
        out["raw_read_us"] = _timed(reads, lambda i: raw.read_stream(conn, picks[i], 0, BATCH))
        out["raw_last_us"] = _timed(reads, lambda i: raw.read_last(conn, LAST))
        out["raw_prefix_us"] = _timed(reads, lambda i: raw.read_prefix(conn, PREFIX, PAGE))
        out["raw_partition_us"] = _timed(
            reads, lambda i: raw.read_partition(conn, *PARTITION, PAGE)
        )
    with ctx.store() as store:
        events = api_events(BATCH)
        out["api_append_us"] = _timed(
            ops, lambda i: store.append_to_stream(f"g-{uuid.uuid4().hex}", 0, events)
        )
        out["api_read_us"] = _timed(reads, lambda i: store.read_stream_forward(picks[i], 0, BATCH))
        out["api_last_us"] = _timed(reads, lambda i: store.read_all_streams_backward(-1, LAST))
        out["api_prefix_us"] = _timed(
            reads, lambda i: store.read_all_streams_forward(0, PAGE, stream_prefix=PREFIX)
        )
        out["api_partition_us"] = _timed(reads, lambda i: _partition_page(store))
    return out


def _partition_page(store: Any) -> list[Any]:
    """The first page of one partition, read as a consumer group member's catch-up reads it
    (no public call reads a partition outside a subscription)."""
    from ...storage import reader

    rows, _ = store._runtime.reads.run(
        lambda c: reader.read_all_covered(c, 1, PAGE, partition=PARTITION)
    )
    return reader.decode(rows, store.settings.serializer)


def _replay(ctx: Context, mode: str) -> dict[str, Any]:
    proc = spawn("replay", mode, ctx.dsn, ctx.schema.name)
    return finish_child(proc, timeout=600)


def _measure(ctx: Context, size: int, label: str) -> dict[str, Any]:
    with ctx.step(f"growth: loading {label} events"):
        ctx.schema.preload(size - ctx.schema.event_count())
        with ctx.schema.connect() as conn:
            streams = [
                str(r[0])
                for r in conn.execute(
                    "SELECT stream_uuid FROM streams WHERE stream_version = %s", (BATCH,)
                )
            ]
    with ctx.step(f"growth: append and read cost at {label}"):
        costs = _costs(ctx, streams)
    with ctx.step(f"growth: replay at {label}, raw"):
        costs["raw_replay"] = _replay(ctx, "raw")
    with ctx.step(f"growth: replay at {label}, API"):
        costs["api_replay"] = _replay(ctx, "api")
    costs["stored"] = size
    return costs


def _mib(replay: dict[str, Any]) -> float:
    return float(replay["rss_peak_kib"]) / 1024


def run_growth(ctx: Context) -> list[Result]:
    small, large = ctx.sizes.growth_small, ctx.sizes.growth_large
    s_label, l_label = f"{small:,}", f"{large:,}"
    ctx.schema.reset()
    at_small = _measure(ctx, small, s_label)
    at_large = _measure(ctx, large, l_label)
    extra = {"small": at_small, "large": at_large}

    def growth(key: str) -> float:
        return float(at_large[key]) / float(at_small[key])

    vs = f"{l_label} vs {s_label} stored"

    def first_page(of: str, key: str) -> Result:
        """The growth of a filtered read's first page (`PREFIX`, `PARTITION`)."""
        api, raw_side = f"api_{key}_us", f"raw_{key}_us"
        return Result(
            "growth",
            f"first {PAGE} events of {of}, {vs}",
            "x",
            growth(api),
            growth(raw_side),
            target=LAST_TARGET,
            higher_is_better=False,
            extra={k: (at_small[k], at_large[k]) for k in (api, raw_side)},
        )

    replayed = at_large["api_replay"]["events"]
    return [
        Result(
            "growth",
            f"append cost, {vs}",
            "x",
            growth("api_append_us"),
            growth("raw_append_us"),
            target=APPEND_TARGET,
            higher_is_better=False,
            extra=extra,
        ),
        Result(
            "growth",
            f"read cost, {vs}",
            "x",
            growth("api_read_us"),
            growth("raw_read_us"),
            higher_is_better=False,
        ),
        Result(
            "growth",
            f"backward read of the last {LAST} events, {l_label} stored (us)",
            "us",
            float(at_large["api_last_us"]),
            float(at_large["raw_last_us"]),
            higher_is_better=False,
            extra={
                "small_api_us": at_small["api_last_us"],
                "small_raw_us": at_small["raw_last_us"],
            },
        ),
        Result(
            "growth",
            f"backward read of the last {LAST} events, {vs}",
            "x",
            growth("api_last_us"),
            growth("raw_last_us"),
            target=LAST_TARGET,
            higher_is_better=False,
        ),
        first_page("a stream_uuid prefix", "prefix"),
        first_page("a consumer group's partition", "partition"),
        Result(
            "growth",
            f"peak RSS replaying {replayed:,} events (MiB)",
            "MiB",
            _mib(at_large["api_replay"]),
            _mib(at_large["raw_replay"]),
            higher_is_better=False,
        ),
        Result(
            "growth",
            f"peak RSS replaying, {vs}",
            "x",
            _mib(at_large["api_replay"]) / _mib(at_small["api_replay"]),
            _mib(at_large["raw_replay"]) / _mib(at_small["raw_replay"]),
            target=RSS_TARGET,
            higher_is_better=False,
        ),
        Result(
            "growth",
            f"replay through stream_all_forward, {replayed:,} events",
            "events/s",
            replayed / at_large["api_replay"]["seconds"],
            replayed / at_large["raw_replay"]["seconds"],
        ),
    ]
