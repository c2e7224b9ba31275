"""Reads: the seed's 100-event stream reads (1, 10, 100 readers) and reading all streams."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

from .. import raw
from ..context import Context
from ..harness import RawConnections, alternate, run_workers
from ..results import Result, Target

__all__ = ["read_all_steps", "run_read_all", "run_seed_reads", "seed_read_steps"]

STREAM_EVENTS = 100
READ_STREAMS = 100
PAGE = 1000
SEED_READ_US = {1: 1578.10, 10: 16799.80, 100: 167397.30}
PAGES_TARGET = Target("ratio>=", 0.85, ">= 0.85x raw")


def seed_read_steps(ctx: Context) -> int:
    return 1 + 2 * len(ctx.sizes.read_rounds) * ctx.sizes.repeats


def read_all_steps(ctx: Context) -> int:
    return 1 + 4 * ctx.sizes.repeats


def _stream_names(ctx: Context) -> list[str]:
    with ctx.schema.connect() as conn:
        rows = conn.execute("SELECT stream_uuid FROM streams ORDER BY stream_id").fetchall()
    return [str(row[0]) for row in rows]


def _stepped(ctx: Context, label: str, timer: Callable[[], float]) -> Callable[[], float]:
    def run() -> float:
        with ctx.step(label):
            return timer()

    return run


def run_seed_reads(ctx: Context) -> list[Result]:
    """Each op: every reader reads a whole 100-event stream; all finish before the next."""
    with ctx.step("seed reads: loading streams"):
        ctx.schema.reset()
        ctx.schema.preload(READ_STREAMS * STREAM_EVENTS, per_stream=STREAM_EVENTS)
        streams = _stream_names(ctx)
    results = []
    with ctx.store() as store:
        for readers, rounds in ctx.sizes.read_rounds.items():

            def pick(worker: int, i: int) -> str:
                return streams[(worker + i) % len(streams)]

            def time_raw(readers: int = readers, rounds: int = rounds) -> float:
                with RawConnections(ctx.schema, readers) as conns:

                    def op(worker: int, i: int) -> None:
                        with conns.get(worker) as conn:
                            got = raw.read_stream(conn, pick(worker, i), 0, STREAM_EVENTS)
                        assert len(got) == STREAM_EVENTS

                    return run_workers(readers, rounds, op, lockstep=True)

            def time_api(readers: int = readers, rounds: int = rounds) -> float:
                def op(worker: int, i: int) -> None:
                    got = store.read_stream_forward(pick(worker, i), 0, STREAM_EVENTS)
                    assert len(got) == STREAM_EVENTS

                return run_workers(readers, rounds, op, lockstep=True)

            label = f"seed reads, {readers} readers"
            raw_runs, api_runs = alternate(
                ctx.sizes.repeats,
                _stepped(ctx, f"{label}, raw", time_raw),
                _stepped(ctx, f"{label}, API", time_api),
            )
            raw_s, api_s = min(raw_runs), min(api_runs)
            events = readers * rounds * STREAM_EVENTS
            results.append(
                Result(
                    workload="seed-read",
                    name=f"read 100-event stream, {readers} reader{'s' if readers > 1 else ''}",
                    unit="events/s",
                    api=events / api_s,
                    raw=events / raw_s,
                    extra={
                        "readers": readers,
                        "ops": rounds,
                        "api_us_per_op": api_s / rounds * 1e6,
                        "raw_us_per_op": raw_s / rounds * 1e6,
                        "seed_us_per_op": SEED_READ_US.get(readers),
                        "raw_runs_s": raw_runs,
                        "api_runs_s": api_runs,
                    },
                )
            )
    return results


def _timed_count(total: int, read: Callable[[], int]) -> float:
    began = time.perf_counter()
    seen = read()
    elapsed = time.perf_counter() - began
    assert seen == total, (seen, total)
    return elapsed


def run_read_all(ctx: Context) -> list[Result]:
    """All streams from the first event: in pages of 1,000, and through stream_all_forward."""
    total = ctx.sizes.read_all_events
    with ctx.step("read all: loading events"):
        ctx.schema.reset()
        ctx.schema.preload(total)
    with ctx.store() as store, ctx.schema.connect() as conn:

        def raw_pages() -> int:
            start, seen = 0, 0
            while page := raw.read_all(conn, start, PAGE):
                seen += len(page)
                start = page[-1][0] + 1
            return seen

        def api_pages() -> int:
            start, seen = 0, 0
            while events := store.read_all_streams_forward(start, PAGE):
                seen += len(events)
                start = events[-1].event_id + 1
            return seen

        def raw_stream() -> int:
            return sum(1 for _ in raw.stream_all(conn, 0, PAGE))

        def api_stream() -> int:
            return sum(1 for _ in store.stream_all_forward(0, read_batch_size=PAGE))

        runs: dict[str, Any] = {}
        for name, raw_read, api_read in (
            ("pages", raw_pages, api_pages),
            ("streamed", raw_stream, api_stream),
        ):
            runs[name] = alternate(
                ctx.sizes.repeats,
                _stepped(ctx, f"read all {name}, raw", partial(_timed_count, total, raw_read)),
                _stepped(ctx, f"read all {name}, API", partial(_timed_count, total, api_read)),
            )

    def result(name: str, label: str, target: Target | None) -> Result:
        raw_runs, api_runs = runs[name]
        return Result(
            workload="read-all",
            name=f"read all streams, {total:,} events, {label}",
            unit="events/s",
            api=total / min(api_runs),
            raw=total / min(raw_runs),
            target=target,
            extra={"events": total, "raw_runs_s": raw_runs, "api_runs_s": api_runs},
        )

    return [
        result("pages", f"pages of {PAGE:,}", PAGES_TARGET),
        result("streamed", "stream_all_forward", None),
    ]
