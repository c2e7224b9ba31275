"""The cost of metrics: single-event appends with `metrics=True` vs `metrics=False`.

Runs raw, metrics off, metrics on, raw, off, on... (`metrics_repeats` rounds, alternating so
that drift in the machine's load hits every side alike); the best run of each side counts.
Wall-clock throughput on a shared 2-core machine moves by far more than 2 % from run to run,
so the target is checked on what metrics can actually cost: the process's CPU time per
append (all its threads: callers, writer, publisher), metrics on within 2 % of metrics off.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from .. import raw
from ..context import Context
from ..harness import RawConnections, run_workers
from ..payload import EVENT_TYPE, api_events, raw_events
from ..results import Result, Target

__all__ = ["metrics_steps", "run_metrics"]

#: Most that metrics may cost, as a fraction of append throughput.
MAX_COST = 0.02


def metrics_steps(ctx: Context) -> int:
    return 3 * len(ctx.sizes.metrics_appends) * ctx.sizes.metrics_repeats


def _timed(writers: int, per_writer: int, op: Callable[[int, int], None]) -> tuple[float, float]:
    """Wall seconds and process CPU seconds of the appends."""
    cpu = time.process_time()
    wall = run_workers(writers, per_writer, op, lockstep=False)
    return wall, time.process_time() - cpu


def _time_api(ctx: Context, writers: int, per_writer: int, metrics: bool) -> tuple[float, float]:
    events = api_events(1)
    ctx.schema.reset()
    with ctx.store(metrics=metrics) as store:
        streams = [f"w{w}-{uuid.uuid4().hex}" for w in range(writers)]

        def op(worker: int, i: int) -> None:
            store.append_to_stream(streams[worker], i, events)

        return _timed(writers, per_writer, op)


def _time_raw(ctx: Context, writers: int, per_writer: int) -> tuple[float, float]:
    """The same appends through the raw baseline (as the single-append workload's)."""
    events = raw_events(1)
    channel = raw.channel(ctx.schema.name)
    ctx.schema.reset()
    with RawConnections(ctx.schema, writers) as conns:
        streams = [f"w{w}-{uuid.uuid4().hex}" for w in range(writers)]

        def op(worker: int, i: int) -> None:
            with conns.get(worker) as conn:
                raw.append(conn, streams[worker], i, events, EVENT_TYPE, channel)

        return _timed(writers, per_writer, op)


def run_metrics(ctx: Context) -> list[Result]:
    results = []
    for writers, per_writer in ctx.sizes.metrics_appends.items():
        label = f"single-event appends, {writers} writer{'s' if writers > 1 else ''}"
        runs: dict[str, list[tuple[float, float]]] = {"raw": [], "off": [], "on": []}
        for _ in range(ctx.sizes.metrics_repeats):
            with ctx.step(f"metrics: {label}, raw"):
                runs["raw"].append(_time_raw(ctx, writers, per_writer))
            with ctx.step(f"metrics: {label}, metrics off"):
                runs["off"].append(_time_api(ctx, writers, per_writer, False))
            with ctx.step(f"metrics: {label}, metrics on"):
                runs["on"].append(_time_api(ctx, writers, per_writer, True))
        events = writers * per_writer
        rate = {side: events / min(w for w, _ in r) for side, r in runs.items()}
        cpu_us = {side: min(c for _, c in r) / events * 1e6 for side, r in runs.items()}
        wall_cost = 1 - rate["on"] / rate["off"]
        cpu_cost = cpu_us["on"] / cpu_us["off"] - 1
        extra = {
            "writers": writers,
            "events": events,
            "metrics_off_events_s": rate["off"],
            "metrics_on_events_s": rate["on"],
            "metrics_wall_cost_pct": wall_cost * 100,
            "metrics_off_cpu_us_per_append": cpu_us["off"],
            "metrics_on_cpu_us_per_append": cpu_us["on"],
            "metrics_cpu_cost_pct": cpu_cost * 100,
            **{f"{side}_runs_s": [w for w, _ in r] for side, r in runs.items()},
            **{f"{side}_cpu_runs_s": [c for _, c in r] for side, r in runs.items()},
        }
        for side in ("off", "on"):
            results.append(
                Result(
                    workload="metrics",
                    name=f"{label}, metrics {side}",
                    unit="events/s",
                    api=rate[side],
                    raw=rate["raw"],
                    extra=extra,
                )
            )
        results.append(
            Result(
                workload="metrics",
                name=f"{label}, process CPU µs per append, metrics on "
                f"({cpu_cost * 100:+.1f}% vs off)",
                unit="µs",
                api=cpu_us["on"],
                raw=cpu_us["raw"],
                higher_is_better=False,
                target=Target("api<=", cpu_us["off"] * (1 + MAX_COST), "<= 1.02x metrics off"),
                extra=extra,
            )
        )
    return results
