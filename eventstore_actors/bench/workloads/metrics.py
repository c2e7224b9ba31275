"""The cost of metrics: single-event appends with `metrics=True` vs `metrics=False`.

Runs raw, metrics off, metrics on, raw, off, on... (`repeats` rounds, alternating so that
drift in the machine's load hits every side alike); the best run of each side counts. The
"metrics on" row's target is to stay within 2 % of the "metrics off" throughput.
"""

from __future__ import annotations

import uuid

from ..context import Context
from ..harness import run_workers
from ..payload import api_events
from ..results import Result, Target
from .appends import _time_raw

__all__ = ["metrics_steps", "run_metrics"]

#: Most that metrics may cost, as a fraction of append throughput.
MAX_COST = 0.02


def metrics_steps(ctx: Context) -> int:
    return 3 * len(ctx.sizes.metrics_appends) * ctx.sizes.metrics_repeats


def _time_api(ctx: Context, writers: int, per_writer: int, metrics: bool) -> float:
    events = api_events(1)
    ctx.schema.reset()
    with ctx.store(metrics=metrics) as store:
        streams = [f"w{w}-{uuid.uuid4().hex}" for w in range(writers)]

        def op(worker: int, i: int) -> None:
            store.append_to_stream(streams[worker], i, events)

        return run_workers(writers, per_writer, op, lockstep=False)


def run_metrics(ctx: Context) -> list[Result]:
    results = []
    for writers, per_writer in ctx.sizes.metrics_appends.items():
        label = f"single-event appends, {writers} writer{'s' if writers > 1 else ''}"
        runs: dict[str, list[float]] = {"raw": [], "off": [], "on": []}
        for _ in range(ctx.sizes.metrics_repeats):
            with ctx.step(f"metrics: {label}, raw"):
                runs["raw"].append(_time_raw(ctx, writers, per_writer, 1, False))
            with ctx.step(f"metrics: {label}, metrics off"):
                runs["off"].append(_time_api(ctx, writers, per_writer, False))
            with ctx.step(f"metrics: {label}, metrics on"):
                runs["on"].append(_time_api(ctx, writers, per_writer, True))
        events = writers * per_writer
        raw, off, on = (events / min(runs[side]) for side in ("raw", "off", "on"))
        cost = 1 - on / off
        extra = {
            "writers": writers,
            "events": events,
            "metrics_off_events_s": off,
            "metrics_on_events_s": on,
            "metrics_cost_pct": cost * 100,
            **{f"{side}_runs_s": value for side, value in runs.items()},
        }
        results.append(
            Result(
                workload="metrics",
                name=f"{label}, metrics off",
                unit="events/s",
                api=off,
                raw=raw,
                extra=extra,
            )
        )
        results.append(
            Result(
                workload="metrics",
                name=f"{label}, metrics on ({cost * 100:+.1f}% cost)",
                unit="events/s",
                api=on,
                raw=raw,
                target=Target("api>=", off * (1 - MAX_COST), "< 2% below metrics off"),
                extra=extra,
            )
        )
    return results
