"""asyncio: the same single-event appends and catch-up through `AsyncEventStore`.

Appends: 50 asyncio tasks, each appending single events to its own stream, against the raw
baseline with 50 writer threads and the sync API with 50 writer threads (the rows of
`single-append`). Catch-up: an all-streams subscription from the origin iterated with
``async for``, acking each batch, against the raw reader and the sync subscription of
`catchup`. Each row's API column is the asyncio figure; the sync API's is in its name.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

from ..context import Context
from ..payload import api_events
from ..results import Result, Target
from .appends import _time_api, _time_raw
from .catchup import TARGET as CATCHUP_TARGET
from .catchup import _api as _catchup_sync
from .catchup import _raw as _catchup_raw

__all__ = ["aio_steps", "run_aio"]

TASKS = 50
APPEND_TARGET = Target("ratio>=", 3.0, ">= 3x raw (group commit)")


def aio_steps(ctx: Context) -> int:
    return 3 * ctx.sizes.repeats + 4


def _time_async_appends(ctx: Context, tasks: int, per_task: int) -> float:
    """Seconds for `tasks` asyncio tasks x `per_task` single-event appends."""
    from eventstore_actors.aio import AsyncEventStore

    events = api_events(1)
    ctx.schema.reset()

    async def main() -> float:
        async with await AsyncEventStore.start(ctx.dsn, schema=ctx.schema.name) as store:
            streams = [f"a{t}-{uuid.uuid4().hex}" for t in range(tasks)]

            async def task(worker: int) -> None:
                for i in range(per_task):
                    await store.append_to_stream(streams[worker], i, events)

            began = time.perf_counter()
            await asyncio.gather(*(task(w) for w in range(tasks)))
            return time.perf_counter() - began

    return asyncio.run(main())


def _time_async_catchup(ctx: Context, total: int) -> tuple[float, int]:
    from eventstore_actors.aio import AsyncEventStore

    async def main() -> tuple[float, int]:
        seen = last = batches = 0
        async with await AsyncEventStore.start(ctx.dsn, schema=ctx.schema.name) as store:
            began = time.perf_counter()
            sub = await store.subscribe_to_all_streams("bench-catchup-aio", start_from="origin")
            async for events in sub:
                assert events[0].event_id == last + 1, (events[0].event_id, last)
                last = events[-1].event_id
                seen += len(events)
                batches += 1
                await sub.ack(events)
                if seen >= total:
                    break
            elapsed = time.perf_counter() - began
            await store.delete_all_streams_subscription("bench-catchup-aio")
        return elapsed, batches

    return asyncio.run(main())


def _appends(ctx: Context) -> Result:
    """raw, sync API, asyncio, in turn, `repeats` times; the best run of each counts."""
    per_task = ctx.sizes.single_appends.get(TASKS, min(ctx.sizes.single_appends.values()))
    sides: dict[str, Callable[[], float]] = {
        "raw": lambda: _time_raw(ctx, TASKS, per_task, 1, False),
        "sync API": lambda: _time_api(ctx, TASKS, per_task, 1, False),
        "asyncio": lambda: _time_async_appends(ctx, TASKS, per_task),
    }
    runs: dict[str, list[float]] = {side: [] for side in sides}
    for _ in range(ctx.sizes.repeats):
        for side, timer in sides.items():
            with ctx.step(f"single-event appends, {TASKS} writers, {side}"):
                runs[side].append(timer())
    events = TASKS * per_task
    raw, sync, aio = (events / min(runs[side]) for side in sides)
    return Result(
        workload="aio",
        name=f"single-event appends, {TASKS} asyncio tasks (sync API, {TASKS} threads: "
        f"{sync:,.0f}/s; asyncio/sync {aio / sync:.2f})",
        unit="events/s",
        api=aio,
        raw=raw,
        target=APPEND_TARGET,
        extra={
            "tasks": TASKS,
            "events": events,
            "sync_api": sync,
            "asyncio_vs_sync": aio / sync,
            "raw_runs_s": runs["raw"],
            "sync_runs_s": runs["sync API"],
            "async_runs_s": runs["asyncio"],
        },
    )


def _catchup(ctx: Context) -> Result:
    total = ctx.sizes.catchup_events
    with ctx.step("catch-up: loading events"):
        ctx.schema.reset()
        ctx.schema.preload(total)
    with ctx.step("catch-up, raw"):
        raw_s, raw_batches = _catchup_raw(ctx, total)
    with ctx.step("catch-up, sync API"):
        sync_s, _ = _catchup_sync(ctx, total)
    with ctx.step("catch-up, asyncio"):
        async_s, async_batches = _time_async_catchup(ctx, total)
    sync, aio = total / sync_s, total / async_s
    return Result(
        "aio",
        f"catch-up through async for, {total:,} events (sync API: {sync:,.0f}/s; "
        f"asyncio/sync {aio / sync:.2f})",
        "events/s",
        aio,
        total / raw_s,
        target=CATCHUP_TARGET,
        extra={
            "events": total,
            "sync_api": sync,
            "asyncio_vs_sync": aio / sync,
            "api_batches": async_batches,
            "raw_batches": raw_batches,
        },
    )


def run_aio(ctx: Context) -> list[Result]:
    return [_appends(ctx), _catchup(ctx)]
