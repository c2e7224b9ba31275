"""The cost of metrics: single-event appends with `metrics=True` vs `metrics=False`.

Two stores run side by side on the bench schema, one started with `metrics=False` and one
with `metrics=True`, next to the raw baseline's connections. Each of `metrics_repeats`
short rounds runs the same appends raw, then through both stores (off then on, or on then
off: neither always goes last), so that drift in the machine's load hits every side alike.
Reported per writer count:

- throughput with metrics off and on (best round of each side), next to raw psycopg;
- the process's CPU time per append (all its threads: callers, writer, publisher; median
  of the rounds), metrics on next to raw, with the target: within 2 % of metrics off. The
  median of each round's on/off ratio is reported as well;
- the recording itself, timed directly: `Metrics.committed` for the group-commit batch size
  the "on" store saw, per append. On a shared 2-core machine the end-to-end figures move by
  several percent between identical rounds; this one does not.
"""

from __future__ import annotations

import statistics
import time
import timeit
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from ...metrics import Metrics
from .. import raw
from ..context import Context
from ..harness import RawConnections, run_workers
from ..payload import EVENT_TYPE, api_events, raw_events
from ..results import Result, Target

if TYPE_CHECKING:
    from ...store import EventStore

__all__ = ["metrics_steps", "run_metrics"]

#: Most that metrics may cost, as a fraction of an append.
MAX_COST = 0.02

_Op = Callable[[int, int], None]


def metrics_steps(ctx: Context) -> int:
    return len(ctx.sizes.metrics_appends)


def _timed(writers: int, per_writer: int, op: _Op) -> tuple[float, float]:
    """Wall seconds and process CPU seconds of the appends."""
    cpu = time.process_time()
    wall = run_workers(writers, per_writer, op, lockstep=False)
    return wall, time.process_time() - cpu


def _recording_us(batch: int) -> float:
    """CPU µs per append that the writer spends recording a group commit of `batch`."""
    metrics = Metrics()
    started = [time.perf_counter()] * batch
    rounds = 2000
    best = min(
        timeit.repeat(
            lambda: metrics.committed(batch, batch, [at for at in started], []),
            number=rounds,
            repeat=5,
        )
    )
    return best / rounds / batch * 1e6


def _rounds(
    ctx: Context, writers: int, per_writer: int
) -> tuple[dict[str, list[tuple[float, float]]], float]:
    """(wall s, CPU s) of every round of each side, and the "on" store's mean batch size."""
    api, raw_rows = api_events(1), raw_events(1)
    channel = raw.channel(ctx.schema.name)
    runs: dict[str, list[tuple[float, float]]] = {"raw": [], "off": [], "on": []}
    ctx.schema.reset()
    with (
        RawConnections(ctx.schema, writers) as conns,
        ctx.store(metrics=False) as off,
        ctx.store(metrics=True) as on,
    ):

        def through(store: EventStore) -> Callable[[list[str]], _Op]:
            append = store.append_to_stream

            def make(streams: list[str]) -> _Op:
                def op(worker: int, i: int) -> None:
                    append(streams[worker], i, api)

                return op

            return make

        def raw_op(streams: list[str]) -> _Op:
            def op(worker: int, i: int) -> None:
                with conns.get(worker) as conn:
                    raw.append(conn, streams[worker], i, raw_rows, EVENT_TYPE, channel)

            return op

        sides = {"raw": raw_op, "off": through(off), "on": through(on)}
        for n in range(ctx.sizes.metrics_repeats):
            # Off then on, then on then off: neither side always runs last.
            for side in ("raw", "off", "on") if n % 2 == 0 else ("raw", "on", "off"):
                streams = [f"{side}-{w}-{uuid.uuid4().hex}" for w in range(writers)]
                runs[side].append(_timed(writers, per_writer, sides[side](streams)))
        seen = on.metrics()
    return runs, seen["commit_batch_requests_sum"] / max(1.0, seen["commit_batch_requests_count"])


def run_metrics(ctx: Context) -> list[Result]:
    results = []
    for writers, per_writer in ctx.sizes.metrics_appends.items():
        label = f"single-event appends, {writers} writer{'s' if writers > 1 else ''}"
        with ctx.step(f"metrics: {label}, raw / off / on x {ctx.sizes.metrics_repeats}"):
            runs, mean_batch = _rounds(ctx, writers, per_writer)
        events = writers * per_writer
        rate = {side: events / min(w for w, _ in r) for side, r in runs.items()}
        cpu_us = {
            side: statistics.median(c for _, c in r) / events * 1e6 for side, r in runs.items()
        }
        pairs = zip(runs["on"], runs["off"], strict=True)
        paired = statistics.median(on[1] / off[1] for on, off in pairs)
        batch = max(1, round(mean_batch))
        recording = _recording_us(batch)
        extra = {
            "writers": writers,
            "events_per_round": events,
            "rounds": ctx.sizes.metrics_repeats,
            "metrics_off_events_s": rate["off"],
            "metrics_on_events_s": rate["on"],
            "metrics_wall_cost_pct": (1 - rate["on"] / rate["off"]) * 100,
            "metrics_off_cpu_us_per_append": cpu_us["off"],
            "metrics_on_cpu_us_per_append": cpu_us["on"],
            "metrics_cpu_cost_pct": (cpu_us["on"] / cpu_us["off"] - 1) * 100,
            "metrics_cpu_cost_paired_pct": (paired - 1) * 100,
            "mean_batch_requests": mean_batch,
            "recording_us_per_append": recording,
            "recording_cost_pct": recording / cpu_us["off"] * 100,
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
                name=f"{label}, process CPU µs per append with metrics "
                f"({extra['metrics_cpu_cost_pct']:+.1f}% vs off; recording "
                f"{recording:.2f} µs = {extra['recording_cost_pct']:.2f}%)",
                unit="µs",
                api=cpu_us["on"],
                raw=cpu_us["raw"],
                higher_is_better=False,
                target=Target("api<=", cpu_us["off"] * (1 + MAX_COST), "<= 1.02x metrics off"),
                extra=extra,
            )
        )
    return results
