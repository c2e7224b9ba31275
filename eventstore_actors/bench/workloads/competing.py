"""Competing consumers: a catch-up whose subscriber works ~0.2 ms per event, 1 vs 4 consumers.

The work is a sleep (I/O-bound work, such as a call to another service or a write elsewhere,
which releases the GIL), so consumers in threads can overlap it. API: `subscribe_to_all_streams`
from the origin, one subscriber (`concurrency_limit=1`, batches of up to 1,000 events) or four
competing ones (`concurrency_limit=4`, `buffer_size=20`), each in its own thread working
through its batches and acking them. Raw: one thread reads pages of 1,000 events, splits each
page among the same number of worker threads, waits for them and stores the checkpoint.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from eventstore_actors import Events

from .. import raw
from ..context import Context
from ..results import Result
from ..subscriber import Inbox

__all__ = ["competing_steps", "run_competing"]

PAGE = 1000
WORK = 0.0002  # seconds of work per event
BUFFER = 20
CONSUMERS = (1, 4)
NAME = "bench-competing"


def competing_steps(ctx: Context) -> int:
    return 1 + 2 * len(CONSUMERS)


def _work(events: list[Any]) -> None:
    for _ in events:
        time.sleep(WORK)


def _api(ctx: Context, total: int, consumers: int) -> float:
    done = threading.Event()
    lock = threading.Lock()
    seen: set[int] = set()
    options: dict[str, Any] = (
        {"concurrency_limit": consumers, "buffer_size": BUFFER} if consumers > 1 else {}
    )

    def consume(inbox: Inbox) -> None:
        while not done.is_set():
            try:
                _, message = inbox.get(0.2)
            except queue.Empty:
                continue
            if not isinstance(message, Events):
                continue
            _work(message.events)
            message.subscription.ack(message.events)
            with lock:
                seen.update(e.event_id for e in message.events)
                if len(seen) >= total:
                    done.set()

    with ctx.store() as store:
        inboxes = [Inbox() for _ in range(consumers)]
        threads = [threading.Thread(target=consume, args=(i,), daemon=True) for i in inboxes]
        for thread in threads:
            thread.start()
        began = time.perf_counter()
        for inbox in inboxes:
            store.subscribe_to_all_streams(NAME, inbox, start_from="origin", **options)
        finished = done.wait(600)
        elapsed = time.perf_counter() - began
        done.set()
        for thread in threads:
            thread.join(5)
        store.delete_all_streams_subscription(NAME)
    if not finished:
        raise RuntimeError(f"competing consumers saw {len(seen)} of {total} events")
    return elapsed


def _raw(ctx: Context, total: int, consumers: int) -> float:
    seen = 0
    with ctx.schema.connect() as conn, ThreadPoolExecutor(consumers) as pool:
        began = time.perf_counter()
        conn.execute(
            "INSERT INTO subscriptions (stream_uuid, subscription_name) VALUES ('$all', %s)"
            " ON CONFLICT (stream_uuid, subscription_name) DO NOTHING",
            (NAME + "-raw",),
        )
        checkpoint = 0
        while page := raw.read_all(conn, checkpoint + 1, PAGE):
            size = -(-len(page) // consumers)
            list(pool.map(_work, [page[i : i + size] for i in range(0, len(page), size)]))
            seen += len(page)
            checkpoint = page[-1][0]
            conn.execute(
                "UPDATE subscriptions SET last_seen = %s"
                " WHERE stream_uuid = '$all' AND subscription_name = %s",
                (checkpoint, NAME + "-raw"),
                prepare=True,
            )
        elapsed = time.perf_counter() - began
        conn.execute(
            "DELETE FROM subscriptions WHERE stream_uuid = '$all' AND subscription_name = %s",
            (NAME + "-raw",),
        )
    assert seen == total, (seen, total)
    return elapsed


def run_competing(ctx: Context) -> list[Result]:
    total = max(100, ctx.sizes.catchup_events // 5)
    with ctx.step("competing consumers: loading events"):
        ctx.schema.reset()
        ctx.schema.preload(total)
    results: list[Result] = []
    first: float | None = None
    for consumers in CONSUMERS:
        with ctx.step(f"competing consumers, {consumers}, raw"):
            raw_s = _raw(ctx, total, consumers)
        with ctx.step(f"competing consumers, {consumers}, API"):
            api_s = _api(ctx, total, consumers)
        rate = total / api_s
        first = first or rate
        label = "1 subscriber" if consumers == 1 else f"{consumers} competing subscribers"
        results.append(
            Result(
                "competing",
                f"catch-up with 0.2 ms of work per event, {label}, {total:,} events",
                "events/s",
                rate,
                total / raw_s,
                extra={"events": total, "consumers": consumers, "speedup": rate / first},
            )
        )
    return results
