"""Delivery latency to an all-streams subscriber, p50 and p99, same process and other process.

Measured from the moment `append_to_stream` is called to the subscriber's receipt, so the
figure includes the commit itself (an upper bound on commit-to-receipt). The lower bound, from
the moment the append returned, is reported too; it is not the headline because under the GIL
the caller's wake-up after the commit can come after the delivery (then it counts as 0).

Same process: the bench thread appends one event, waits for its delivery, acks, and paces.
Other process: a child process appends paced events and reports when each append was called
and returned; this process receives them (CLOCK_MONOTONIC is shared by processes on one
machine). Raw: the child or the bench thread appends with raw psycopg; a listener thread
LISTENs, reads the notified range on a second connection and decodes it.
"""

from __future__ import annotations

import queue
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eventstore_actors import Events

from .. import raw
from ..children import finish_child, spawn
from ..context import Context
from ..harness import now, percentile
from ..payload import EVENT_TYPE, api_events, raw_events
from ..results import Result, Target
from ..subscriber import Inbox, RawListener

__all__ = ["latency_steps", "run_latency"]

#: Seconds between appends (load shaping, not synchronisation).
INTERVAL = 0.003
#: Appends made and discarded before measuring (connections, prepared statements).
WARMUP = 5
WAIT = 10.0
TARGETS = {
    "same process": Target("api<=", 2.0, "p99 <= 2 ms"),
    "other process": Target("api<=", 5.0, "p99 <= 5 ms"),
}


@dataclass
class Samples:
    """Per append: when it was called, when it returned, when the subscriber had it."""

    called: list[float] = field(default_factory=list)
    returned: list[float] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)

    def from_call_ms(self) -> list[float]:
        return [(a - c) * 1e3 for a, c in zip(self.arrived, self.called, strict=True)][WARMUP:]

    def from_return_ms(self) -> list[float]:
        return [(a - r) * 1e3 for a, r in zip(self.arrived, self.returned, strict=True)][WARMUP:]


def latency_steps(ctx: Context) -> int:
    return 4


def _pace(next_at: float) -> float:
    delay = next_at - now()
    if delay > 0:
        time.sleep(delay)
    return next_at + INTERVAL


def _api_same(ctx: Context, count: int) -> Samples:
    events = api_events(count)
    stream = f"local-{uuid.uuid4().hex}"
    inbox = Inbox()
    samples = Samples()
    with ctx.store() as store:
        sub = store.subscribe_to_all_streams("bench-latency", inbox, start_from="current")
        inbox.get(WAIT)  # Subscribed
        next_at = now()
        for i in range(count):
            samples.called.append(now())
            store.append_to_stream(stream, i, events[i : i + 1])
            samples.returned.append(now())
            arrived, message = inbox.get(WAIT)
            assert isinstance(message, Events), message
            store.ack(sub, message.events)
            samples.arrived.append(arrived)
            next_at = _pace(next_at)
        store.delete_all_streams_subscription("bench-latency")
    return samples


def _raw_same(ctx: Context, count: int) -> Samples:
    pairs = raw_events(count)
    stream = f"local-{uuid.uuid4().hex}"
    channel = raw.channel(ctx.schema.name)
    samples = Samples()
    with RawListener(ctx.schema) as listener, ctx.schema.connect() as conn:
        next_at = now()
        for i in range(count):
            samples.called.append(now())
            raw.append(conn, stream, i, pairs[i : i + 1], EVENT_TYPE, channel)
            samples.returned.append(now())
            arrived, rows = listener.get(WAIT)
            assert rows and rows[-1][4]["seq"] == i, rows
            samples.arrived.append(arrived)
            next_at = _pace(next_at)
    return samples


def _collect(receive: Callable[[], list[tuple[float, int]]], count: int, proc: Any) -> Samples:
    """Receive `count` events (arrival, seq), then match them with the child's clock readings."""
    arrived: dict[int, float] = {}
    deadline = time.monotonic() + count * INTERVAL + 60
    while len(arrived) < count:
        if time.monotonic() > deadline or proc.poll() not in (None, 0):
            break
        try:
            for at, seq in receive():
                arrived[seq] = at
        except queue.Empty:
            continue
    child = finish_child(proc, timeout=30)
    if len(arrived) < count:
        raise RuntimeError(f"only {len(arrived)} of {count} events delivered")
    return Samples(child["called"], child["returned"], [arrived[i] for i in range(count)])


def _spawn_appender(ctx: Context, mode: str, count: int) -> Any:
    return spawn("appender", mode, ctx.dsn, ctx.schema.name, str(count), str(INTERVAL))


def _api_other(ctx: Context, count: int) -> Samples:
    inbox = Inbox()
    with ctx.store() as store:
        sub = store.subscribe_to_all_streams("bench-latency-remote", inbox, start_from="current")
        inbox.get(WAIT)  # Subscribed
        proc = _spawn_appender(ctx, "api", count)

        def receive() -> list[tuple[float, int]]:
            at, message = inbox.get(1.0)
            assert isinstance(message, Events), message
            store.ack(sub, message.events)
            return [(at, e.data["seq"]) for e in message.events]

        samples = _collect(receive, count, proc)
        store.delete_all_streams_subscription("bench-latency-remote")
        return samples


def _raw_other(ctx: Context, count: int) -> Samples:
    with RawListener(ctx.schema) as listener:
        proc = _spawn_appender(ctx, "raw", count)

        def receive() -> list[tuple[float, int]]:
            at, rows = listener.get(1.0)
            return [(at, row[4]["seq"]) for row in rows]

        return _collect(receive, count, proc)


def _results(setting: str, api: Samples, raw_: Samples) -> list[Result]:
    extra = {"samples": len(api.from_call_ms()), "interval_ms": INTERVAL * 1e3}
    rows = [
        Result(
            "latency",
            f"delivery p{p}, {setting}, from append call",
            "ms",
            percentile(api.from_call_ms(), p),
            percentile(raw_.from_call_ms(), p),
            target=TARGETS[setting] if p == 99 else None,
            higher_is_better=False,
            extra=extra,
        )
        for p in (50, 99)
    ]
    rows.append(
        Result(
            "latency",
            f"delivery p99, {setting}, from append return (lower bound)",
            "ms",
            max(0.0, percentile(api.from_return_ms(), 99)),
            max(0.0, percentile(raw_.from_return_ms(), 99)),
            higher_is_better=False,
            extra={
                **extra,
                "api_from_return_p50_ms": percentile(api.from_return_ms(), 50),
                "raw_from_return_p50_ms": percentile(raw_.from_return_ms(), 50),
            },
        )
    )
    return rows


def run_latency(ctx: Context) -> list[Result]:
    count = ctx.sizes.latency_samples + WARMUP
    ctx.schema.reset()
    with ctx.step("latency same process, raw"):
        raw_same = _raw_same(ctx, count)
    with ctx.step("latency same process, API"):
        api_same = _api_same(ctx, count)
    with ctx.step("latency other process, raw"):
        raw_other = _raw_other(ctx, count)
    with ctx.step("latency other process, API"):
        api_other = _api_other(ctx, count)
    return _results("same process", api_same, raw_same) + _results(
        "other process", api_other, raw_other
    )
