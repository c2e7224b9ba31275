"""Archived-range reads: the same reads before and after `store.archive()` moved the events to
Parquet files, in the same run.

The store holds `read_all_events` events in 100-event streams. Each read is timed on the plain
store first (every event in PostgreSQL: the "raw" column of the report, the plain twin), then
again once everything but the newest stream is archived (the "api" column): a page of 1,000
events of $all, a whole 100-event stream, and a replay of every event with
`stream_all_forward`. Reported as-is (no target): archived reads cost file I/O and decoding.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from ..context import Context
from ..results import Result
from .reads import _stream_names

__all__ = ["archive_steps", "run_archive"]

STREAM_EVENTS = 100
PAGE = 1000
ROUNDS = 20


def archive_steps(ctx: Context) -> int:
    return 3


def _median_ms(op: Callable[[int], Any], rounds: int = ROUNDS) -> float:
    times = []
    for i in range(rounds):
        began = time.perf_counter()
        op(i)
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1e3


def _figures(store: Any, total: int, names: list[str]) -> dict[str, float]:
    old = names[:-1] or names  # the newest stream is not archived
    pages = max(1, total // PAGE - 1)
    out = {
        "page": _median_ms(lambda i: store.read_all_streams_forward(1 + (i % pages) * PAGE, PAGE)),
        "stream": _median_ms(lambda i: store.read_stream_forward(old[(i * 7) % len(old)])),
    }
    began = time.perf_counter()
    replayed = sum(1 for _ in store.stream_all_forward(0, PAGE))
    out["replay"] = replayed / (time.perf_counter() - began)
    return out


def run_archive(ctx: Context) -> list[Result]:
    total = ctx.sizes.read_all_events
    target = tempfile.mkdtemp(prefix="eventstore-bench-archive-")
    try:
        with ctx.step("archive: loading events"):
            ctx.schema.reset()
            ctx.schema.preload(total, per_stream=STREAM_EVENTS)
            names = _stream_names(ctx)
        with ctx.step("archive: plain reads"), ctx.store(pool_size=2) as store:
            plain = _figures(store, total, names)
        with ctx.step("archive: archiving, then the same reads"), ctx.store(pool_size=2) as store:
            moved = store.archive(before_event_id=total - STREAM_EVENTS + 1, target=target)
            archived = _figures(store, total, names)
    finally:
        shutil.rmtree(target, ignore_errors=True)
    extra = {"events": total, "archived": moved.events}
    return [
        Result(
            "archive",
            f"$all page of {PAGE}",
            "ms",
            archived["page"],
            plain["page"],
            higher_is_better=False,
            extra=extra,
        ),
        Result(
            "archive",
            f"stream of {STREAM_EVENTS}",
            "ms",
            archived["stream"],
            plain["stream"],
            higher_is_better=False,
            extra=extra,
        ),
        Result(
            "archive",
            "replay (stream_all_forward)",
            "events/s",
            archived["replay"],
            plain["replay"],
            extra=extra,
        ),
    ]
