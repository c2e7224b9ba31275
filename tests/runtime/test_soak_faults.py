"""The fault soak of issue 7: appends and subscriptions under connection cuts, cancels,
statement timeouts and PostgreSQL restarts, through a TCP proxy, on a throwaway server.

A store reaches a throwaway PostgreSQL (started from the machine's `initdb`/`pg_ctl`) through
`support.proxy.Proxy`. For SOAK_FAULT_SECONDS (default 30) appender threads write single
events and large (COPY path) batches to various streams while two subscriptions (all streams,
one stream) deliver to subscribers that ack, some after a delay. Meanwhile: every 1-3 s the
proxy resets every connection; store backends are cancelled at random; a role-level
statement_timeout trips when a contender holds the event counter lock; the server is
restarted once with `-m fast` and once with `-m immediate`. The application never restarts
the store. Afterwards (bounded wait for delivery) every invariant is checked and all failures
are reported together.

Seed: SOAK_SEED (printed; the same seed replays the same choices, timing aside).
"""

from __future__ import annotations

import json
import os
import queue
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from support import Delivery
from support.pgserver import PgServer, missing_binaries
from support.proxy import Proxy

from eventstore_actors import (
    EventData,
    Events,
    EventStore,
    StoreUnavailableError,
    StreamNotFoundError,
    Subscribed,
    SubscriptionStopped,
    WrongExpectedVersionError,
    admin,
)

SCHEMA = "soak"
ROLE = "soak_app"
#: Low enough to trip while the contender holds the counter lock, high enough for normal work.
STATEMENT_TIMEOUT_MS = 300
ONE_STREAM = "single-0"  # the single-stream subscription's stream


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    why = missing_binaries()
    if why is not None:
        pytest.skip(f"no throwaway PostgreSQL for the fault soak: {why}")
    with PgServer() as server:
        yield server


@pytest.fixture
def seed() -> int:
    value = int(os.environ.get("SOAK_SEED") or random.randrange(1 << 31))
    print(f"\nSOAK_SEED={value}")
    return value


# Appenders ------------------------------------------------------------------------------------
@dataclass
class Outcome:
    op: str
    stream: str
    count: int
    result: str  # ok | wrong_version | unavailable | unknown | error:<type>
    detail: str = ""


@dataclass
class Appender:
    """One thread appending to its own streams (plus shared ones), recording every outcome."""

    name: str
    store: EventStore
    streams: list[str]
    sizes: tuple[int, int]
    rng: random.Random
    deadline: float
    pause: tuple[float, float] = (0.0, 0.03)
    outcomes: list[Outcome] = field(default_factory=list)
    versions: dict[str, int | None] = field(default_factory=dict)

    def run(self) -> None:
        n = 0
        while time.monotonic() < self.deadline:
            time.sleep(self.rng.uniform(*self.pause))  # pacing of the workload
            stream = self.rng.choice(self.streams)
            version = self.versions.get(stream, 0)
            if version is None:
                version = self._refresh(stream)
                if version is None:
                    continue
            n += 1
            op = f"{self.name}-{n}"
            count = self.rng.randint(*self.sizes)
            batch = [
                EventData(data={"op": op, "i": i}, event_type="soak.Event") for i in range(count)
            ]
            self.outcomes.append(self._append(op, stream, version, batch))

    def _append(self, op: str, stream: str, version: int, batch: list[EventData]) -> Outcome:
        try:
            self.store.append_to_stream(stream, version, batch)
        except WrongExpectedVersionError as exc:
            self.versions[stream] = None
            return Outcome(op, stream, len(batch), "wrong_version", str(exc))
        except StoreUnavailableError as exc:
            if exc.outcome_unknown:
                self.versions[stream] = None
                return Outcome(op, stream, len(batch), "unknown", str(exc))
            return Outcome(op, stream, len(batch), "unavailable", str(exc))
        except Exception as exc:  # anything else breaks the contract: recorded and reported
            self.versions[stream] = None
            return Outcome(op, stream, len(batch), f"error:{type(exc).__name__}", str(exc))
        self.versions[stream] = version + len(batch)
        return Outcome(op, stream, len(batch), "ok")

    def _refresh(self, stream: str) -> int | None:
        """The stream's version read back after an unknown outcome or a lost race."""
        try:
            return len(self.store.read_stream_forward(stream, 0, 1_000_000))
        except StreamNotFoundError:
            return 0
        except StoreUnavailableError:
            return None
        except Exception as exc:
            self.outcomes.append(
                Outcome("read", stream, 0, f"error:{type(exc).__name__}", str(exc))
            )
            return None


# Subscribers ----------------------------------------------------------------------------------
class SoakSubscriber:
    """Records deliveries in a `Delivery` and acks from a thread of its own, some acks late."""

    def __init__(self, name: str, position: Any, rng: random.Random) -> None:
        self.name = name
        self.delivery = Delivery(position)
        self.rng = rng
        self.inbox: queue.Queue[Any] = queue.Queue()
        self.stopped: list[SubscriptionStopped] = []
        self.others: list[str] = []
        self.subscribed = 0
        self.first = True
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"soak-subscriber-{name}")
        self._thread.start()

    def tell(self, message: Any) -> None:
        self.inbox.put(message)

    def close(self) -> None:
        self._done.set()
        self._thread.join(timeout=10.0)

    def _run(self) -> None:
        while not self._done.is_set():
            try:
                message = self.inbox.get(timeout=0.1)
            except queue.Empty:
                continue
            if isinstance(message, Events):
                batch = list(message.events)
                self.delivery.received(batch, new_run=self.first)
                self.first = False
                # A slow subscriber now and then: a late ack. Rare and short, because an
                # all-streams subscription of interleaved streams gets batches of ~1 event
                # (one stream per batch), so every late ack holds back the whole backlog.
                if self.rng.random() < 0.005:
                    time.sleep(self.rng.uniform(0.01, 0.1))
                last = self.delivery.position(batch[-1])
                self.delivery.ack(last)
                message.subscription.ack(last)
            elif isinstance(message, Subscribed):
                self.subscribed += 1
            elif isinstance(message, SubscriptionStopped):
                self.stopped.append(message)
            else:
                self.others.append(repr(message)[:200])


# Faults ---------------------------------------------------------------------------------------
class Faults(threading.Thread):
    """Cuts, cancels, a counter-lock contender and two restarts, on a seeded schedule."""

    def __init__(self, server: PgServer, proxy: Proxy, rng: random.Random, seconds: float):
        super().__init__(name="soak-faults")
        self.server, self.proxy, self.rng = server, proxy, rng
        self.seconds = seconds
        self.stop_flag = threading.Event()
        self.log: list[str] = []
        self.counts = {"cut": 0, "cut_connections": 0, "cancel": 0, "lock_hold": 0, "restart": 0}
        self.errors: list[str] = []

    def run(self) -> None:
        began = time.monotonic()
        restarts = [("fast", self.seconds * 0.33), ("immediate", self.seconds * 0.66)]
        next_cut = began + self.rng.uniform(1, 3)
        next_cancel = began + self.rng.uniform(0.5, 2)
        next_lock = began + self.rng.uniform(1, 3)
        while not self.stop_flag.wait(0.05):  # the fault schedule's tick
            now = time.monotonic()
            try:
                if restarts and now - began >= restarts[0][1]:
                    mode, _ = restarts.pop(0)
                    t0 = time.monotonic()
                    self.server.restart(mode)
                    self.counts["restart"] += 1
                    self.log.append(
                        f"{now - began:.1f}s restart -m {mode} ({time.monotonic() - t0:.2f} s)"
                    )
                if now >= next_cut:
                    self.counts["cut"] += 1
                    self.counts["cut_connections"] += self.proxy.cut()
                    next_cut = now + self.rng.uniform(1, 3)
                if now >= next_cancel:
                    self.counts["cancel"] += self._cancel_one()
                    next_cancel = now + self.rng.uniform(0.3, 1.5)
                if now >= next_lock:
                    self._hold_counter_lock(self.rng.uniform(0.2, 0.6))
                    next_lock = now + self.rng.uniform(1, 3)
            except psycopg.Error as exc:
                # The fault tools' own connections (direct, not proxied) during a restart.
                self.errors.append(f"{time.monotonic() - began:.1f}s {type(exc).__name__}: {exc}")

    def _admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.server.dsn, autocommit=True, connect_timeout=2)

    def _cancel_one(self) -> int:
        with self._admin() as conn:
            pids = [
                int(r[0])
                for r in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE usename = %s AND state = 'active'"
                    " AND pid <> pg_backend_pid()",
                    (ROLE,),
                ).fetchall()
            ]
            if not pids:
                pids = [
                    int(r[0])
                    for r in conn.execute(
                        "SELECT pid FROM pg_stat_activity WHERE usename = %s", (ROLE,)
                    ).fetchall()
                ]
            if not pids:
                return 0
            row = conn.execute("SELECT pg_cancel_backend(%s)", (self.rng.choice(pids),)).fetchone()
            return int(bool(row and row[0]))

    def _hold_counter_lock(self, seconds: float) -> None:
        """Another process's long append: appends waiting behind it hit statement_timeout."""
        with self._admin() as conn, conn.transaction():
            conn.execute(f"SELECT 1 FROM {SCHEMA}.event_counter WHERE id = 1 FOR UPDATE")
            self.counts["lock_hold"] += 1
            time.sleep(seconds)  # holding the lock is the fault itself
            raise psycopg.Rollback()


# The soak -------------------------------------------------------------------------------------
SECONDS = float(os.environ.get("SOAK_FAULT_SECONDS", "30"))


@pytest.mark.timeout(int(SECONDS) + 150)  # the run, the delivery wait, start and checks
def test_soak_under_network_and_server_faults(pg_server: PgServer, seed: int) -> None:
    seconds = SECONDS
    rng = random.Random(seed)
    _prepare(pg_server)
    problems: list[str] = []

    with Proxy.for_dsn(pg_server.dsn) as proxy:
        app_dsn = psycopg.conninfo.make_conninfo(proxy.dsn(pg_server.dsn), user=ROLE)
        store = EventStore.start(
            app_dsn,
            schema=SCHEMA,
            pool_size=4,
            call_timeout=5.0,
            connect_timeout=2.0,
            health_interval=1.0,
            health_timeout=1.0,
        )
        subs = {
            "all": SoakSubscriber("all", lambda e: e.event_id, random.Random(rng.random())),
            "one": SoakSubscriber("one", lambda e: e.stream_version, random.Random(rng.random())),
        }
        try:
            store.subscribe_to_all_streams("soak-all", subs["all"], max_size=200)
            store.subscribe_to_stream(ONE_STREAM, "soak-one", subs["one"], max_size=50)
            deadline = time.monotonic() + seconds
            shared = ["shared-0", "shared-1"]  # contested: wrong expected versions happen
            appenders = [
                Appender("single-a", store, [ONE_STREAM, "single-1", *shared], (1, 1),
                         random.Random(rng.random()), deadline),
                Appender("single-b", store, ["single-2", "single-3", *shared], (1, 3),
                         random.Random(rng.random()), deadline),
                Appender("batch-a", store, ["batch-0", "batch-1", ONE_STREAM], (65, 120),
                         random.Random(rng.random()), deadline, pause=(0.05, 0.25)),
                Appender("batch-b", store, ["batch-2", "batch-3"], (65, 200),
                         random.Random(rng.random()), deadline, pause=(0.05, 0.25)),
            ]  # fmt: skip
            threads = [threading.Thread(target=a.run, name=a.name) for a in appenders]
            faults = Faults(pg_server, proxy, random.Random(rng.random()), seconds)
            for thread in threads:
                thread.start()
            faults.start()
            for thread in threads:
                thread.join(timeout=seconds + 60)
            faults.stop_flag.set()
            faults.join(timeout=60)
            assert not any(t.is_alive() for t in [*threads, faults]), "a soak thread hung"

            outcomes = [o for a in appenders for o in a.outcomes]
            summary = _summary(outcomes)
            print(f"SOAK_SEED={seed} seconds={seconds} appends={summary} faults={faults.counts}")
            print("fault log: " + "; ".join(faults.log))
            print(f"failure messages: {_messages(outcomes)}")
            if faults.errors:
                print(f"fault tool errors (not counted): {faults.errors[:5]}")

            stored = _stored_events(pg_server.dsn)
            problems += _check_storage(stored, outcomes)
            total = len(stored)
            one_last = sum(1 for e in stored if e[1] == ONE_STREAM)
            problems += _wait_for_delivery(store, subs, total, one_last)
            for name, sub in subs.items():
                expected = total if name == "all" else one_last
                problems += _check_delivery(name, sub, expected)
            reason = store._registry.closed_reason
            if reason is not None:
                problems.append(f"the store was stopped by its supervisor: {reason}")
            errors = [o for o in outcomes if o.result.startswith("error:")]
            if errors:
                problems.append(
                    f"{len(errors)} calls raised a non-contract exception, e.g. "
                    f"{errors[0].result}: {errors[0].detail[:200]}"
                )
            if summary.get("ok", 0) == 0:
                problems.append("no append succeeded: the workload did not run")
        finally:
            proxy.blackhole(False)
            store.stop()
            for sub in subs.values():
                sub.close()
    assert not problems, "fault soak invariants violated:\n- " + "\n- ".join(problems)


def _prepare(server: PgServer) -> None:
    """A fresh schema, and the application role with a statement_timeout of its own."""
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        conn.execute(f"DROP ROLE IF EXISTS {ROLE}")
        conn.execute(f"CREATE ROLE {ROLE} LOGIN SUPERUSER")
        conn.execute(f"ALTER ROLE {ROLE} SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
    admin.init(server.dsn, SCHEMA)


def _summary(outcomes: list[Outcome]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.result] = counts.get(o.result, 0) + 1
    return counts


def _messages(outcomes: list[Outcome]) -> dict[str, int]:
    """How often each failure message was seen (first line, ids cut), for the report."""
    counts: dict[str, int] = {}
    for o in outcomes:
        if o.result != "ok":
            key = f"{o.result}: {o.detail.splitlines()[0][:90] if o.detail else ''}"
            key = key.split(" for stream ")[0]
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:12])


def _stored_events(dsn: str) -> list[tuple[int, str, int, str, int]]:
    """(event_id, stream, version, op, i) of every stored event, read directly."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT e.event_id, s.stream_uuid, e.stream_version, e.data FROM {SCHEMA}.events e"
            f" JOIN {SCHEMA}.streams s ON s.stream_id = e.stream_id ORDER BY e.event_id"
        ).fetchall()
    stored = []
    for event_id, stream, version, data in rows:
        payload = json.loads(bytes(data))
        stored.append((int(event_id), str(stream), int(version), payload["op"], payload["i"]))
    return stored


def _check_storage(
    stored: list[tuple[int, str, int, str, int]], outcomes: list[Outcome]
) -> list[str]:
    problems: list[str] = []
    ids = [e[0] for e in stored]
    if ids != list(range(1, len(ids) + 1)):
        gaps = sorted(set(range(1, (ids[-1] if ids else 0) + 1)) - set(ids))
        problems.append(f"event_ids not 1..N gap-free: missing {gaps[:10]} ({len(gaps)})")
    by_op: dict[str, list[tuple[int, str, int, str, int]]] = {}
    for event in stored:
        by_op.setdefault(event[3], []).append(event)
    streams: dict[str, list[int]] = {}
    for event in stored:
        streams.setdefault(event[1], []).append(event[2])
    for stream, versions in streams.items():
        if versions != list(range(1, len(versions) + 1)):
            problems.append(f"stream {stream} versions not 1..n: {versions[:10]}...")
    recorded = {o.op: o for o in outcomes}
    missing_ok, partial, phantom, dupes, known_failed = [], [], [], [], []
    for op, rows in by_op.items():
        outcome = recorded.get(op)
        if outcome is None:
            phantom.append(op)
            continue
        indexes = sorted(r[4] for r in rows)
        if len(indexes) != len(set(indexes)):
            dupes.append(op)
        if sorted(set(indexes)) != list(range(outcome.count)):
            partial.append(f"{op} ({len(set(indexes))}/{outcome.count}, {outcome.result})")
        elif [r[0] for r in rows] != list(range(rows[0][0], rows[0][0] + len(rows))):
            partial.append(f"{op} not contiguous in event_id")
        if outcome.result in ("wrong_version", "unavailable"):
            known_failed.append(f"{op} ({outcome.result}: {outcome.detail[:120]})")
    for o in outcomes:
        if o.result == "ok" and o.op not in by_op:
            missing_ok.append(f"{o.op} on {o.stream}")
    for label, items in (
        ("acknowledged appends missing", missing_ok),
        ("appends stored partially or out of one transaction", partial),
        ("appends stored more than once", dupes),
        ("events from no recorded append", phantom),
        ("appends reported as not done (known outcome) but stored", known_failed),
    ):
        if items:
            problems.append(f"{label}: {len(items)}, e.g. {items[:3]}")
    return problems


def _wait_for_delivery(
    store: EventStore, subs: dict[str, SoakSubscriber], total: int, one_last: int
) -> list[str]:
    """Bounded wait until each subscriber has seen its last event (every append came from
    this store, so its writer hands each commit to the publisher: no notification needed)."""
    deadline = time.monotonic() + 25.0
    targets = {"all": total, "one": one_last}
    while time.monotonic() < deadline:
        if store._registry.closed_reason is not None:
            return ["delivery not awaited: the store is stopped"]
        if all(
            not targets[name] or targets[name] in sub.delivery.covered()
            for name, sub in subs.items()
        ):
            return []
        time.sleep(0.2)  # polling the subscribers' progress, bounded by the deadline
    return [
        "delivery did not finish within 25 s after the faults: "
        + ", ".join(
            f"{name} at {sub.delivery.last()} of {targets[name]}" for name, sub in subs.items()
        ),
        "state when it stalled: " + _diagnose(store),
        "subscribers: "
        + ", ".join(
            f"{name} thread alive={sub._thread.is_alive()} inbox={sub.inbox.qsize()} "
            f"acked={max(sub.delivery.acked, default=0)}"
            for name, sub in subs.items()
        ),
        "subscriber stacks: " + _stacks([sub._thread for sub in subs.values()]),
    ]


def _stacks(threads: list[threading.Thread]) -> str:
    import sys
    import traceback

    frames = sys._current_frames()
    return " | ".join(
        f"{t.name}: " + "".join(traceback.format_stack(frames[t.ident])[-3:]).replace("\n", " ")
        for t in threads
        if t.ident in frames
    )


def _diagnose(store: EventStore) -> str:
    """What the publisher and each live subscription actor hold (white-box, found through the
    garbage collector since an ActorRef does not expose its actor; for a stalled run)."""
    import gc

    from eventstore_actors.notifications.publisher import PublisherActor
    from eventstore_actors.subscriptions.actor import SubscriptionActor

    parts: list[str] = []
    for actor in gc.get_objects():
        if isinstance(actor, PublisherActor) and actor.actor_ref.is_alive():
            parts.append(f"publisher last_published={actor._last_published}")
        elif isinstance(actor, SubscriptionActor) and actor.actor_ref.is_alive():
            state = actor._state
            facts = {
                "inbox": actor.actor_inbox.qsize(),
                "control": dict(vars(actor._control)),
                "state": None
                if state is None
                else {
                    k: getattr(state, k)
                    for k in ("checkpoint", "cursor", "last_sent", "behind", "max_notified")
                }
                | {"buffered": state.buffered},
            }
            parts.append(f"{actor.child_id}: {facts}")
    return "; ".join(parts)


def _check_delivery(name: str, sub: SoakSubscriber, expected: int) -> list[str]:
    problems: list[str] = []
    with sub.delivery.lock:
        errors = list(sub.delivery.errors)
    if errors:
        problems.append(f"subscription {name}: delivery out of order ({len(errors)}): {errors[:3]}")
    missing = set(range(1, expected + 1)) - sub.delivery.covered()
    if missing:
        problems.append(
            f"subscription {name}: never delivered {len(missing)} of {expected} events, "
            f"first {sorted(missing)[:5]}"
        )
    if sub.stopped:
        problems.append(f"subscription {name} got SubscriptionStopped: {sub.stopped[0].reason}")
    if sub.others:
        problems.append(f"subscription {name} got unexpected messages: {sub.others[:3]}")
    print(
        f"subscription {name}: runs={len(sub.delivery.runs)} rewinds={sub.delivery.rewinds} "
        f"subscribed={sub.subscribed} acks={len(sub.delivery.acked)}"
    )
    return problems
