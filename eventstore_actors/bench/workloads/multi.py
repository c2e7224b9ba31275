"""Streams v2 appends: ANY_VERSION appends from many writers to one stream, and
append_to_streams of two streams, each against a raw baseline doing the same job."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from eventstore_actors import ANY_VERSION, StreamAppend

from .. import raw
from ..context import Context
from ..harness import RawConnections, alternate, run_workers
from ..payload import EVENT_TYPE, api_events, raw_events
from ..results import Result

__all__ = ["any_append_steps", "multi_append_steps", "run_any_appends", "run_multi_appends"]


def any_append_steps(ctx: Context) -> int:
    return 2 * len(ctx.sizes.any_appends) * ctx.sizes.repeats


def multi_append_steps(ctx: Context) -> int:
    return 2 * len(ctx.sizes.multi_appends) * ctx.sizes.repeats


def _best(
    ctx: Context, label: str, raw_side: Callable[[], float], api_side: Callable[[], float]
) -> tuple[float, float, dict[str, Any]]:
    def step(name: str, timer: Callable[[], float]) -> Callable[[], float]:
        def run() -> float:
            with ctx.step(f"{label}, {name}"):
                return timer()

        return run

    raw_runs, api_runs = alternate(ctx.sizes.repeats, step("raw", raw_side), step("API", api_side))
    return min(raw_runs), min(api_runs), {"raw_runs_s": raw_runs, "api_runs_s": api_runs}


def _any_api(ctx: Context, writers: int, per_writer: int) -> float:
    events = api_events(1)
    ctx.schema.reset()
    stream = f"any-{uuid.uuid4().hex}"
    with ctx.store() as store:

        def op(worker: int, i: int) -> None:
            store.append_to_stream(stream, ANY_VERSION, events)

        return run_workers(writers, per_writer, op, lockstep=False)


def _any_raw(ctx: Context, writers: int, per_writer: int) -> float:
    events = raw_events(1)
    ctx.schema.reset()
    stream = f"any-{uuid.uuid4().hex}"
    channel = raw.channel(ctx.schema.name)
    with RawConnections(ctx.schema, writers) as conns:

        def op(worker: int, i: int) -> None:
            with conns.get(worker) as conn:
                raw.append_any(conn, stream, events, EVENT_TYPE, channel)

        return run_workers(writers, per_writer, op, lockstep=False)


def run_any_appends(ctx: Context) -> list[Result]:
    """Every writer appends single events to the same stream with ANY_VERSION."""
    results = []
    for writers, per_writer in ctx.sizes.any_appends.items():
        raw_s, api_s, runs = _best(
            ctx,
            f"ANY_VERSION appends, {writers} writers",
            partial(_any_raw, ctx, writers, per_writer),
            partial(_any_api, ctx, writers, per_writer),
        )
        events = writers * per_writer
        results.append(
            Result(
                workload="any-append",
                name=f"ANY_VERSION appends to one stream, {writers} writers",
                unit="events/s",
                api=events / api_s,
                raw=events / raw_s,
                target=None,
                extra={"writers": writers, "events": events, **runs},
            )
        )
    return results


def _pairs(writers: int) -> list[tuple[str, str]]:
    return [(f"a-{w}-{uuid.uuid4().hex}", f"b-{w}-{uuid.uuid4().hex}") for w in range(writers)]


def _multi_api(ctx: Context, writers: int, per_writer: int) -> float:
    events = api_events(1)
    ctx.schema.reset()
    pairs = _pairs(writers)
    with ctx.store() as store:

        def op(worker: int, i: int) -> None:
            a, b = pairs[worker]
            store.append_to_streams([StreamAppend(a, i, events), StreamAppend(b, i, events)])

        return run_workers(writers, per_writer, op, lockstep=False)


def _multi_raw(ctx: Context, writers: int, per_writer: int) -> float:
    events = raw_events(1)
    ctx.schema.reset()
    pairs = _pairs(writers)
    channel = raw.channel(ctx.schema.name)
    with RawConnections(ctx.schema, writers) as conns:

        def op(worker: int, i: int) -> None:
            a, b = pairs[worker]
            with conns.get(worker) as conn:
                raw.append_two(conn, [(a, i, events), (b, i, events)], EVENT_TYPE, channel)

        return run_workers(writers, per_writer, op, lockstep=False)


def run_multi_appends(ctx: Context) -> list[Result]:
    """Every writer calls append_to_streams with one event for each of its two streams."""
    results = []
    for writers, per_writer in ctx.sizes.multi_appends.items():
        raw_s, api_s, runs = _best(
            ctx,
            f"append_to_streams, {writers} writers",
            partial(_multi_raw, ctx, writers, per_writer),
            partial(_multi_api, ctx, writers, per_writer),
        )
        calls = writers * per_writer
        plural = "s" if writers > 1 else ""
        results.append(
            Result(
                workload="multi-append",
                name=f"append_to_streams of 2 streams, {writers} writer{plural}",
                unit="calls/s",
                api=calls / api_s,
                raw=calls / raw_s,
                target=None,
                extra={"writers": writers, "calls": calls, "events": 2 * calls, **runs},
            )
        )
    return results
