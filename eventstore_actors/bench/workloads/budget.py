"""200 live all-streams subscriptions on one store: connections used, delivery p99 from commit.

`Sizes.budget_subscriptions` of them (200; 10 in the smoke run).

The default (`shared_lock_session=True`: one lock connection for every subscription) and
`shared_lock_session=False` (a dedicated connection each; that side runs only where the server
accepts that many more connections: PostgreSQL's default max_connections, 100, does not). Each
paced append is timed from the moment `append_to_stream` is called to each subscriber's receipt
(200 samples per append; every subscriber acks at once). The first WARMUP appends are not
measured, and measuring starts once every subscriber has them. Connections are counted in
pg_stat_activity by the store's application_name once every subscription is live. Raw: one
LISTEN connection and one read connection; a listener thread reads each notified range once and
fans the rows out to 200 consumer threads (the same work without locks, checkpoints or
supervision).
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from typing import Any

import psycopg

from eventstore_actors import Events, Subscribed

from .. import raw
from ..context import Context
from ..harness import now, percentile
from ..payload import EVENT_TYPE, api_events, raw_events
from ..results import Result
from ..subscriber import RawListener

__all__ = ["budget_steps", "run_budget"]

#: The store's default pool size: the row measures what a store holds by default.
POOL_SIZE = 10
#: Seconds between appends (every subscriber must have the event well before the next).
INTERVAL = 0.02
WARMUP = 3
WAIT = 60.0


class _Stamps:
    """Arrival time of each event seq, for one subscriber (acks at once)."""

    def __init__(self, count: int, done: threading.Semaphore) -> None:
        self.arrived: dict[int, float] = {}
        self.subscribed = threading.Event()
        self._count = count
        self._done = done

    def tell(self, message: Any) -> None:
        if isinstance(message, Subscribed):
            self.subscribed.set()
        elif isinstance(message, Events):
            at = now()
            for event in message.events:
                self.arrived[event.data["seq"]] = at
            message.subscription.ack(message.events[-1])
            if len(self.arrived) == self._count:
                self._done.release()

    def add(self, at: float, rows: list[raw.Row]) -> None:
        for row in rows:
            self.arrived[row[4]["seq"]] = at
        if len(self.arrived) == self._count:
            self._done.release()


#: Connections left free for everything else while the dedicated side runs.
_MARGIN = 10


def _free_connections(ctx: Context) -> int:
    """How many more connections the server accepts now (max_connections less those in use
    and those reserved for superusers)."""
    with psycopg.connect(ctx.dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT current_setting('max_connections')::int"
            " - current_setting('superuser_reserved_connections')::int"
            " - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
        ).fetchone()
    return int(row[0]) if row else 0


def _connections(ctx: Context, application_name: str) -> int:
    with psycopg.connect(ctx.dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            (application_name,),
        ).fetchone()
    return int(row[0]) if row else 0


def _wait_all(done: threading.Semaphore, subscriptions: int) -> None:
    deadline = time.monotonic() + WAIT
    for _ in range(subscriptions):
        if not done.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise RuntimeError("not every subscriber received every event")


def _latencies(called: list[float], subscribers: list[_Stamps]) -> list[float]:
    return [
        (s.arrived[i] - called[i]) * 1e3 for s in subscribers for i in range(WARMUP, len(called))
    ]


def _api(
    ctx: Context, count: int, shared: bool | None, subscriptions: int
) -> tuple[list[float], int]:
    """`shared`: the `shared_lock_session` option (None: the store's default)."""
    app = f"bench-budget-{uuid.uuid4().hex[:8]}"
    done = threading.Semaphore(0)
    subscribers = [_Stamps(count, done) for _ in range(subscriptions)]
    events = api_events(count)
    stream = f"budget-{uuid.uuid4().hex}"
    called: list[float] = []
    options: dict[str, Any] = {} if shared is None else {"shared_lock_session": shared}
    with ctx.store(pool_size=POOL_SIZE, application_name=app, **options) as store:
        for i, subscriber in enumerate(subscribers):
            store.subscribe_to_all_streams(
                f"bench-budget-{i}-{uuid.uuid4().hex[:6]}", subscriber, start_from="current"
            )
        for subscriber in subscribers:
            subscriber.subscribed.wait(WAIT)
        connections = _connections(ctx, app)
        next_at = now()
        for i in range(count):
            called.append(now())
            store.append_to_stream(stream, i, events[i : i + 1])
            next_at = _pace(next_at)
            if i == WARMUP - 1:
                next_at = _warm(subscribers)
        _wait_all(done, subscriptions)
    return _latencies(called, subscribers), connections


def _raw(ctx: Context, count: int, subscriptions: int) -> tuple[list[float], int]:
    done = threading.Semaphore(0)
    subscribers = [_Stamps(count, done) for _ in range(subscriptions)]
    inboxes: list[queue.Queue[tuple[float, list[raw.Row]] | None]] = [
        queue.Queue() for _ in subscribers
    ]

    def consume(index: int) -> None:
        while (item := inboxes[index].get()) is not None:
            subscribers[index].add(now(), item[1])

    threads = [
        threading.Thread(target=consume, args=(i,), daemon=True) for i in range(subscriptions)
    ]
    for thread in threads:
        thread.start()
    pairs = raw_events(count)
    stream = f"budget-raw-{uuid.uuid4().hex}"
    channel = raw.channel(ctx.schema.name)
    called: list[float] = []
    try:
        with RawListener(ctx.schema) as listener, ctx.schema.connect() as conn:
            stop = threading.Event()

            def fan_out() -> None:
                while not stop.is_set():
                    try:
                        item = listener.get(0.2)
                    except queue.Empty:
                        continue
                    for inbox in inboxes:
                        inbox.put(item)

            fan = threading.Thread(target=fan_out, daemon=True)
            fan.start()
            next_at = now()
            for i in range(count):
                called.append(now())
                raw.append(conn, stream, i, pairs[i : i + 1], EVENT_TYPE, channel)
                next_at = _pace(next_at)
                if i == WARMUP - 1:
                    next_at = _warm(subscribers)
            _wait_all(done, subscriptions)
            stop.set()
            fan.join(5)
    finally:
        for inbox in inboxes:
            inbox.put(None)
    return _latencies(called, subscribers), 3  # LISTEN, the range reads, the appends


def _warm(subscribers: list[_Stamps]) -> float:
    """Measure only once every subscriber received the warm-up events (the subscriptions'
    first catch-up reads are behind them): returns when the next append is due."""
    deadline = time.monotonic() + WAIT
    while any(len(s.arrived) < WARMUP for s in subscribers):
        if time.monotonic() > deadline:
            raise RuntimeError("the warm-up events were not delivered")
        time.sleep(0.01)
    time.sleep(0.2)  # let the acks' checkpoint writes settle too
    return now()


def _pace(next_at: float) -> float:
    delay = next_at - now()
    if delay > 0:
        time.sleep(delay)
    return next_at + INTERVAL


def budget_steps(ctx: Context) -> int:
    return 3


def run_budget(ctx: Context) -> list[Result]:
    count = max(10, ctx.sizes.latency_samples // 10) + WARMUP
    n = ctx.sizes.budget_subscriptions
    ctx.schema.reset()
    with ctx.step(f"{n} subscriptions, raw fan-out"):
        raw_ms, raw_conns = _raw(ctx, count, n)
    free = _free_connections(ctx)
    sides: list[tuple[str, list[float], int]] = []
    with ctx.step(f"{n} subscriptions, dedicated lock connections"):
        # One connection per subscription: only where the server has room for them (its
        # default max_connections, 100, does not); the shared side needs a handful.
        if free >= n + POOL_SIZE + _MARGIN:
            dedicated_ms, dedicated_conns = _api(ctx, count, shared=False, subscriptions=n)
            sides.append(("shared_lock_session=False", dedicated_ms, dedicated_conns))
    with ctx.step(f"{n} subscriptions, default (one shared lock connection)"):
        shared_ms, shared_conns = _api(ctx, count, shared=None, subscriptions=n)
        sides.insert(0, ("default", shared_ms, shared_conns))
    extra = {
        "subscriptions": n,
        "pool_size": POOL_SIZE,
        "samples": len(raw_ms),
        "interval_ms": INTERVAL * 1e3,
        "free_connections": free,
    }
    rows: list[Result] = []
    for label, ms, conns in sides:
        rows.append(
            Result(
                "budget",
                f"{n} live subscriptions, connections used, {label}",
                "connections",
                float(conns),
                float(raw_conns),
                higher_is_better=False,
                extra=extra,
            )
        )
        rows.append(
            Result(
                "budget",
                f"{n} live subscriptions, delivery p99 from append call, {label}",
                "ms",
                percentile(ms, 99),
                percentile(raw_ms, 99),
                higher_is_better=False,
                extra={
                    **extra,
                    "api_p50_ms": percentile(ms, 50),
                    "raw_p50_ms": percentile(raw_ms, 50),
                },
            )
        )
    return rows
