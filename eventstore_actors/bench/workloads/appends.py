"""Appends: the seed's 100-event appends (1, 10, 100 writers) and single-event appends."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from .. import raw
from ..context import Context
from ..harness import RawConnections, alternate, run_workers
from ..payload import EVENT_TYPE, api_events, raw_events
from ..results import Result, Target

__all__ = ["run_seed_appends", "run_single_appends", "seed_append_steps", "single_append_steps"]

BATCH = 100
#: The Elixir seed README's figures (µs per op), for the table next to ours.
SEED_APPEND_US = {1: 10170.26, 10: 85438.80, 100: 1102006.00}
SEED_TARGETS = {
    1: Target("ratio>=", 0.75, ">= 0.75x raw"),
    10: Target("ratio>=", 0.75, ">= 0.75x raw"),
}
SINGLE_TARGETS = {
    1: Target("ratio>=", 0.85, ">= 0.85x raw"),
    50: Target("ratio>=", 3.0, ">= 3x raw (group commit)"),
}


def seed_append_steps(ctx: Context) -> int:
    return 2 * len(ctx.sizes.append_rounds) * ctx.sizes.repeats


def single_append_steps(ctx: Context) -> int:
    return 2 * len(ctx.sizes.single_appends) * ctx.sizes.repeats


def _measure(
    ctx: Context, label: str, writers: int, iterations: int, batch: int, lockstep: bool
) -> tuple[float, float, dict[str, Any]]:
    """Best raw and API seconds over the repeats, and every run's seconds."""

    def side(name: str, timer: Callable[..., float]) -> Callable[[], float]:
        def run() -> float:
            with ctx.step(f"{label}, {writers} writers, {name}"):
                return timer(ctx, writers, iterations, batch, lockstep)

        return run

    raw_runs, api_runs = alternate(
        ctx.sizes.repeats, side("raw", _time_raw), side("API", _time_api)
    )
    return min(raw_runs), min(api_runs), {"raw_runs_s": raw_runs, "api_runs_s": api_runs}


def _new_stream(worker: int, i: int) -> str:
    return f"w{worker}-{i}-{uuid.uuid4().hex}"


def _time_api(ctx: Context, writers: int, iterations: int, batch: int, lockstep: bool) -> float:
    """Seconds for `writers` x `iterations` appends of `batch` events through the API."""
    events = api_events(batch)
    ctx.schema.reset()
    with ctx.store() as store:
        if batch == 1:
            streams = [_new_stream(w, 0) for w in range(writers)]

            def op(worker: int, i: int) -> None:
                store.append_to_stream(streams[worker], i, events)
        else:

            def op(worker: int, i: int) -> None:
                store.append_to_stream(_new_stream(worker, i), 0, events)

        return run_workers(writers, iterations, op, lockstep=lockstep)


def _time_raw(ctx: Context, writers: int, iterations: int, batch: int, lockstep: bool) -> float:
    """The same appends as `_time_api` through the raw baseline."""
    events = raw_events(batch)
    channel = raw.channel(ctx.schema.name)
    ctx.schema.reset()
    with RawConnections(ctx.schema, writers) as conns:
        op: Callable[[int, int], Any]
        if batch == 1:
            streams = [_new_stream(w, 0) for w in range(writers)]

            def op(worker: int, i: int) -> None:
                with conns.get(worker) as conn:
                    raw.append(conn, streams[worker], i, events, EVENT_TYPE, channel)
        else:

            def op(worker: int, i: int) -> None:
                with conns.get(worker) as conn:
                    raw.append(conn, _new_stream(worker, i), 0, events, EVENT_TYPE, channel)

        return run_workers(writers, iterations, op, lockstep=lockstep)


def run_seed_appends(ctx: Context) -> list[Result]:
    """Each op: every writer appends 100 events to a new stream; all finish before the next."""
    results = []
    for writers, rounds in ctx.sizes.append_rounds.items():
        raw_s, api_s, runs = _measure(ctx, "seed appends", writers, rounds, BATCH, True)
        events = writers * rounds * BATCH
        results.append(
            Result(
                workload="seed-append",
                name=f"100-event appends, {writers} writer{'s' if writers > 1 else ''}",
                unit="events/s",
                api=events / api_s,
                raw=events / raw_s,
                target=SEED_TARGETS.get(writers),
                extra={
                    "writers": writers,
                    "ops": rounds,
                    "api_us_per_op": api_s / rounds * 1e6,
                    "raw_us_per_op": raw_s / rounds * 1e6,
                    "seed_us_per_op": SEED_APPEND_US.get(writers),
                    **runs,
                },
            )
        )
    return results


def run_single_appends(ctx: Context) -> list[Result]:
    """Every writer appends single events to its own stream as fast as it can."""
    results = []
    for writers, per_writer in ctx.sizes.single_appends.items():
        raw_s, api_s, runs = _measure(ctx, "single-event appends", writers, per_writer, 1, False)
        events = writers * per_writer
        results.append(
            Result(
                workload="single-append",
                name=f"single-event appends, {writers} writer{'s' if writers > 1 else ''}",
                unit="events/s",
                api=events / api_s,
                raw=events / raw_s,
                target=SINGLE_TARGETS.get(writers),
                extra={"writers": writers, "events": events, **runs},
            )
        )
    return results
