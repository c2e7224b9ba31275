"""Catch-up: an all-streams subscription from the origin replays every stored event, acking.

API: `subscribe_to_all_streams(start_from="origin")`; the bench thread acks each batch as it
arrives (the subscription sends the next one only then). Raw: one thread reads pages of 1,000,
hands each stream's run of events to the consumer, and stores the checkpoint once per page.
"""

from __future__ import annotations

import itertools
import time

from eventstore_actors import Events

from .. import raw
from ..context import Context
from ..results import Result, Target
from ..subscriber import Inbox

__all__ = ["catchup_steps", "run_catchup"]

PAGE = 1000
TARGET = Target("api>=", 50_000, ">= 50,000 events/s")


def catchup_steps(ctx: Context) -> int:
    return 3


def _api(ctx: Context, total: int) -> tuple[float, int]:
    inbox = Inbox()
    seen = last = batches = 0
    with ctx.store() as store:
        began = time.perf_counter()
        sub = store.subscribe_to_all_streams("bench-catchup", inbox, start_from="origin")
        while seen < total:
            _, message = inbox.get(30)
            if not isinstance(message, Events):
                continue
            events = message.events
            assert events[0].event_id == last + 1, (events[0].event_id, last)
            last = events[-1].event_id
            seen += len(events)
            batches += 1
            store.ack(sub, events)
        elapsed = time.perf_counter() - began
        store.delete_all_streams_subscription("bench-catchup")
    return elapsed, batches


def _raw(ctx: Context, total: int) -> tuple[float, int]:
    seen = last = batches = 0

    def consume(batch: list[raw.Row]) -> None:
        nonlocal seen, last, batches
        assert batch[0][0] == last + 1, (batch[0][0], last)
        last = batch[-1][0]
        seen += len(batch)
        batches += 1

    with ctx.schema.connect() as conn:
        began = time.perf_counter()
        row = conn.execute(
            "INSERT INTO subscriptions (stream_uuid, subscription_name) VALUES ('$all', %s)"
            " ON CONFLICT (stream_uuid, subscription_name) DO UPDATE SET last_seen ="
            " subscriptions.last_seen RETURNING last_seen",
            ("bench-catchup-raw",),
        ).fetchone()
        checkpoint = int(row[0]) if row else 0  # type: ignore[call-overload]
        while page := raw.read_all(conn, checkpoint + 1, PAGE):
            for _, run in itertools.groupby(page, key=lambda r: r[1]):
                consume(list(run))
            checkpoint = page[-1][0]
            conn.execute(
                "UPDATE subscriptions SET last_seen = %s"
                " WHERE stream_uuid = '$all' AND subscription_name = %s",
                (checkpoint, "bench-catchup-raw"),
                prepare=True,
            )
        elapsed = time.perf_counter() - began
        conn.execute(
            "DELETE FROM subscriptions WHERE stream_uuid = '$all' AND subscription_name = %s",
            ("bench-catchup-raw",),
        )
    assert seen == total, (seen, total)
    return elapsed, batches


def run_catchup(ctx: Context) -> list[Result]:
    total = ctx.sizes.catchup_events
    with ctx.step("catch-up: loading events"):
        ctx.schema.reset()
        ctx.schema.preload(total)
    with ctx.step("catch-up, raw"):
        raw_s, raw_batches = _raw(ctx, total)
    with ctx.step("catch-up, API"):
        api_s, api_batches = _api(ctx, total)
    return [
        Result(
            "catchup",
            f"catch-up, all-streams subscription, {total:,} events",
            "events/s",
            total / api_s,
            total / raw_s,
            target=TARGET,
            extra={"events": total, "api_batches": api_batches, "raw_batches": raw_batches},
        )
    ]
