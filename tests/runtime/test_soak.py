"""Randomized, bounded soaks of subscriptions (the second: nacks and standby take-overs).

Writers in this process and in a child process append to 50 streams (each process owns half
of them) while subscribers here (two all-streams, three single-stream, some with a small
max_size) ack at random moments, partially or not at all for a while, and are killed,
unsubscribed and re-subscribed at random; now and then a subscription's lock connection is
killed from SQL. A subscriber in the child acks everything. At the end every subscription has
received every event, in order within each delivery run, with no gap; and no checkpoint,
sampled from the subscriptions table all along, ever passed a position that had been acked.

Seed: SOAK_SEED (printed; rerun with it to replay the same choices, timing aside).
Length of the writing phase: SOAK_SECONDS (default 12).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka
import pytest
from support import (
    ChildProcess,
    Delivery,
    checkpoints,
    events,
    kill_backends,
    lock_backends,
    subscribe_retrying,
    subscription_lock_key,
    wait_until,
)

from eventstore_actors import (
    ANY_VERSION,
    EventData,
    Events,
    EventStore,
    StoreUnavailableError,
    StreamNotFoundError,
    Subscription,
)

ALL = "$all"
STREAMS = [f"stream-{i:02d}" for i in range(50)]
MINE, CHILDS = STREAMS[0::2], STREAMS[1::2]


@dataclass(frozen=True)
class AckNow:
    """Ack everything received so far (a subscriber that was holding back)."""


@dataclass(frozen=True)
class AutoAck:
    """From now on ack every batch at once (the final drain)."""


class SoakSubscriber(pykka.ThreadingActor):
    """Records each batch in the subscription's Delivery and acks at random."""

    def __init__(self, spec: SubSpec, seed: int, auto: bool = False) -> None:
        super().__init__()
        self.spec = spec
        self.rng = random.Random(seed)
        self.auto = auto
        self.first = True
        self.last: int | None = None
        self.acked_upto = 0
        self.sub: Subscription | None = None

    def on_receive(self, message: Any) -> None:
        delivery = self.spec.delivery
        if isinstance(message, Events):
            batch = message.events
            self.sub = message.subscription
            streams = {e.stream_uuid for e in batch}
            if len(streams) != 1:
                delivery.errors.append(f"a batch mixing streams {streams}")
            if self.spec.stream != ALL and streams != {self.spec.stream}:
                delivery.errors.append(f"{self.spec.stream} got events of {streams}")
            first = delivery.position(batch[0])
            rewind = self.last is not None and first <= self.last
            if not self.first and not rewind and self.acked_upto < (self.last or 0):
                delivery.errors.append(
                    f"{self.spec.name}: batch from {first} sent before {self.last} was acked"
                )
            delivery.received(batch, new_run=self.first)
            self.first = False
            self.last = delivery.position(batch[-1])
            roll = self.rng.random()
            if self.auto or roll < 0.6:
                self._ack(self.last)
            elif roll < 0.7:
                self._ack(delivery.position(batch[0]))  # partial: still gated
            # else: hold everything until an AckNow
        elif isinstance(message, AckNow):
            if self.last is not None:
                self._ack(self.last)
        elif isinstance(message, AutoAck):
            self.auto = True
            if self.last is not None:
                self._ack(self.last)

    def _ack(self, position: int) -> None:
        assert self.sub is not None
        self.spec.delivery.ack(position)  # recorded before it can reach the checkpoint
        self.acked_upto = max(self.acked_upto, position)
        self.sub.ack(position)


@dataclass
class SubSpec:
    name: str
    stream: str
    max_size: int | None
    delivery: Delivery
    ref: pykka.ActorRef[Any] | None = None
    lock_kills: int = 0
    last_lock_kill: float = 0.0
    resubscribes: int = 0


@pytest.fixture
def seed() -> int:
    value = int(os.environ.get("SOAK_SEED") or random.randrange(1 << 31))
    print(f"\nSOAK_SEED={value}")
    return value


class Sampler(threading.Thread):
    """Samples the subscriptions table; a checkpoint must never exceed the highest position
    acked so far (acks are recorded before they are sent) nor move backwards."""

    def __init__(self, dsn: str, schema: str, specs: dict[tuple[str, str], SubSpec]) -> None:
        super().__init__(daemon=True)
        self.dsn, self.schema, self.specs = dsn, schema, specs
        self.stop_flag = threading.Event()
        self.violations: list[str] = []
        self.samples = 0
        self.seen: dict[tuple[str, str], int] = {}

    def run(self) -> None:
        while not self.stop_flag.wait(0.05):
            self.sample()

    def sample(self) -> None:
        rows = checkpoints(self.dsn, self.schema)
        self.samples += 1
        for key, value in rows.items():
            spec = self.specs.get(key)
            if spec is None:
                continue
            with spec.delivery.lock:
                top = max(spec.delivery.acked, default=0)
            if value > top:
                self.violations.append(f"{key}: checkpoint {value} > highest ack {top}")
            if value < self.seen.get(key, 0):
                self.violations.append(f"{key}: checkpoint moved back to {value}")
            self.seen[key] = value


def test_soak(store: EventStore, child: ChildProcess, dsn: str, schema: str, seed: int) -> None:
    rng = random.Random(seed)
    seconds = float(os.environ.get("SOAK_SECONDS", "12"))
    specs = {
        (ALL, "all-a"): SubSpec("all-a", ALL, None, Delivery(lambda e: e.event_id)),
        (ALL, "all-b"): SubSpec("all-b", ALL, 7, Delivery(lambda e: e.event_id)),
        ("stream-00", "st-a"): SubSpec(
            "st-a", "stream-00", None, Delivery(lambda e: e.stream_version)
        ),
        ("stream-01", "st-b"): SubSpec(
            "st-b", "stream-01", 4, Delivery(lambda e: e.stream_version)
        ),
        ("stream-03", "st-c"): SubSpec(
            "st-c", "stream-03", 2, Delivery(lambda e: e.stream_version)
        ),
    }

    def subscribe(spec: SubSpec, auto: bool = False) -> None:
        stored = checkpoints(dsn, schema).get((spec.stream, spec.name), 0)
        with spec.delivery.lock:
            spec.delivery.floor = stored  # it can only have moved forward when it resumes
        ref = SoakSubscriber.start(spec, rng.randrange(1 << 30), auto)
        spec.ref = ref
        if spec.stream == ALL:
            call: Callable[[], Subscription] = lambda: store.subscribe_to_all_streams(  # noqa: E731
                spec.name, ref, max_size=spec.max_size
            )
        else:
            call = lambda: store.subscribe_to_stream(  # noqa: E731
                spec.stream, spec.name, ref, max_size=spec.max_size
            )
        subscribe_retrying(call, timeout=5.0)

    for spec in specs.values():
        subscribe(spec)
    child.ok({"cmd": "subscribe", "stream": ALL, "name": "child-all", "auto_ack": True})

    sampler = Sampler(dsn, schema, specs)
    sampler.start()

    # Writers: the child owns the odd streams, a thread here the even ones.
    child.ok(
        {
            "cmd": "write",
            "streams": CHILDS,
            "events": 100_000,
            "seconds": seconds,
            "pause": 0.06,
            "seed": seed,
        }
    )
    versions = dict.fromkeys(MINE, 0)
    writer_errors: list[BaseException] = []
    deadline = time.monotonic() + seconds

    def write() -> None:
        wrng = random.Random(seed + 1)
        try:
            while time.monotonic() < deadline:
                time.sleep(wrng.uniform(0, 0.06))  # pacing, not synchronisation
                stream = wrng.choice(MINE)
                size = wrng.randint(1, 5)
                version = versions[stream]
                batch: list[EventData] = events(size, start=version + 1, w="parent")
                try:
                    store.append_to_stream(stream, version, batch)
                    versions[stream] = version + size
                except StoreUnavailableError:
                    try:
                        versions[stream] = len(store.read_stream_forward(stream, 0, 100_000))
                    except StreamNotFoundError:
                        versions[stream] = 0
        except BaseException as exc:
            writer_errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()

    # Chaos until the writers are done.
    actions = {"ack": 0, "kill": 0, "unsubscribe": 0, "lock": 0}
    try:
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.02, 0.15))  # pacing of the chaos, not synchronisation
            spec = rng.choice(list(specs.values()))
            roll = rng.random()
            assert spec.ref is not None
            if roll < 0.6:
                spec.ref.tell(AckNow())
                actions["ack"] += 1
            elif roll < 0.8:
                spec.ref.stop()  # subscriber death: the subscription must notice and stop
                subscribe(spec)
                spec.resubscribes += 1
                actions["kill"] += 1
            elif roll < 0.93:
                if spec.stream == ALL:
                    store.unsubscribe_from_all_streams(spec.name)
                else:
                    store.unsubscribe_from_stream(spec.stream, spec.name)
                spec.ref.stop()
                subscribe(spec)
                spec.resubscribes += 1
                actions["unsubscribe"] += 1
            elif time.monotonic() - spec.last_lock_kill > 3.0:
                key = subscription_lock_key(schema, spec.stream, spec.name)
                pids = lock_backends(dsn, key)
                if pids and kill_backends(dsn, pids):
                    # On the store's one shared lock connection (the default), every
                    # subscription's lock went with it: each may restart once for it.
                    hit = specs.values() if store.settings.shared_lock_session else [spec]
                    for each in hit:
                        each.lock_kills += 1
                    spec.last_lock_kill = time.monotonic()
                    actions["lock"] += 1
    finally:
        writer.join(timeout=60)
    assert not writer_errors, writer_errors
    result = child.ok({"cmd": "write_join", "timeout": 60}, timeout=70)
    assert not [e for e in result["errors"] if "Traceback" in e], result["errors"]
    versions.update(result["versions"])
    total = sum(versions.values())
    assert total == len(list(store.stream_all_forward())), "the writers' counts disagree"

    # Drain: every subscriber acks at once from now on.
    for spec in specs.values():
        assert spec.ref is not None
        if not spec.ref.is_alive():
            subscribe(spec, auto=True)
        spec.ref.tell(AutoAck())

    def expected_last(spec: SubSpec) -> int:
        return total if spec.stream == ALL else versions[spec.stream]

    for spec in specs.values():
        wait_until(
            lambda spec=spec: (
                spec.delivery.last() >= expected_last(spec)  # type: ignore[misc]
                and expected_last(spec) in spec.delivery.covered()
            ),
            timeout=45,
            what=f"{spec.name} to receive {expected_last(spec)} events",
        )
        wait_until(
            lambda spec=spec: (
                checkpoints(dsn, schema).get((spec.stream, spec.name))  # type: ignore[misc]
                == expected_last(spec)
            ),
            timeout=10,
            what=f"{spec.name}'s checkpoint to reach the end",
        )
    sampler.stop_flag.set()
    sampler.join(timeout=10)
    sampler.sample()

    # The child's subscriber acked everything at once: one run, 1..total.
    child_ids: list[int] = []
    while len(child_ids) < total:
        notice = child.notice(timeout=30)
        if notice["event"] == "events":
            child_ids.extend(e[0] for e in notice["events"])
    assert child_ids == list(range(1, total + 1))

    summary = {
        spec.name: {
            "runs": len(spec.delivery.runs),
            "resubscribes": spec.resubscribes,
            "lock_kills": spec.lock_kills,
            "rewinds": spec.delivery.rewinds,
            "acks": len(spec.delivery.acked),
        }
        for spec in specs.values()
    }
    print(f"SOAK_SEED={seed} events={total} actions={actions} samples={sampler.samples}")
    print(f"per subscription: {summary}")

    for spec in specs.values():
        spec.delivery.check(expected_last(spec))
        assert spec.delivery.rewinds <= spec.lock_kills, (
            f"{spec.name} was redelivered within a run without a restart"
        )
    assert not sampler.violations, sampler.violations[:10]
    assert sampler.samples > 10

    for spec in specs.values():
        assert spec.ref is not None
        spec.ref.stop()


# Nacks and standby take-overs ----------------------------------------------------------------
class NackingSubscriber(pykka.ThreadingActor):
    """Processes events one by one and now and then nacks one (retry, skip or park); records
    every event it finished (processed, skipped or parked) in order."""

    def __init__(self, seed: int, max_retries: int) -> None:
        super().__init__()
        self.rng = random.Random(seed)
        self.max_retries = max_retries
        self.done: list[int] = []  # positions finished, in the order they were finished
        self.parked: set[int] = set()
        self.attempts: dict[int, int] = {}
        self.retrying: int | None = None  # a retry of this position is the next delivery
        self.errors: list[str] = []

    def on_receive(self, message: Any) -> None:
        if not isinstance(message, Events):
            return
        batch, sub = message.events, message.subscription
        ids = [e.event_id for e in batch]
        if self.retrying is not None:
            if ids == [self.retrying + 1] or ids[0] == self.retrying + 1:
                # Retries exhausted: parked by the store, delivery went on.
                self.done.append(self.retrying)
                self.parked.add(self.retrying)
            elif ids != [self.retrying]:
                self.errors.append(f"expected the retry of {self.retrying} alone, got {ids[:3]}")
            self.retrying = None
        if self.done and ids[0] != self.done[-1] + 1:
            self.errors.append(f"batch starts at {ids[0]} after {self.done[-1]} was finished")
        for event in batch:
            position = event.event_id
            self.attempts[position] = self.attempts.get(position, 0) + 1
            roll = self.rng.random()
            if roll < 0.04:
                self.retrying = position
                sub.nack(event, "retry", f"attempt {self.attempts[position]}")
                return
            if roll < 0.06:
                self.done.append(position)
                sub.nack(event, "skip")
                return
            if roll < 0.08:
                self.done.append(position)
                self.parked.add(position)
                sub.nack(event, "park", "soak")
                return
            self.done.append(position)
        sub.ack(batch)


class StandbySubscriber(pykka.ThreadingActor):
    """Acks everything; records its batches in the shared Delivery (a take-over is a new run)."""

    def __init__(self, delivery: Delivery) -> None:
        super().__init__()
        self.delivery = delivery
        self.new_run = True
        self.holding = threading.Event()

    def on_receive(self, message: Any) -> None:
        if isinstance(message, Events):
            self.holding.set()
            self.delivery.received(message.events, new_run=self.new_run)
            self.new_run = False
            self.delivery.ack(message.events[-1].event_id)
            message.subscription.ack(message.events)


def test_soak_nacks_and_standby_take_overs(
    make_store: Callable[..., EventStore], dsn: str, schema: str, seed: int
) -> None:
    """A nacking subscriber finishes every event once, in order, and the store's parked list
    is exactly what it parked or retried too often; a standby pair whose holder is
    unsubscribed or whose whole store is stopped again and again delivers every event, each
    take-over resuming right after an acked position."""
    rng = random.Random(seed)
    seconds = float(os.environ.get("SOAK_SECONDS", "12")) / 2
    writer_store = make_store()
    max_retries = 2
    nacker = NackingSubscriber.start(rng.randrange(1 << 30), max_retries)
    writer_store.subscribe_to_all_streams(
        "nacks", nacker, max_retries=max_retries, retry_delay=0.01
    )

    delivery = Delivery(lambda e: e.event_id)
    standbys: list[tuple[EventStore, pykka.ActorRef[Any]]] = []

    def add_standby() -> None:
        # A member unsubscribed by the chaos keeps running to the end (its store is not
        # stopped), so members read little: 2 pooled connections each keep the whole soak
        # within PostgreSQL's default max_connections of 100 (10 each went past it).
        member = make_store(pool_size=2)
        stored = checkpoints(dsn, schema).get((ALL, "ha"), 0)
        with delivery.lock:
            delivery.floor = stored
        ref = StandbySubscriber.start(delivery)
        member.subscribe_to_all_streams("ha", ref, standby=True)
        standbys.append((member, ref))

    add_standby()
    add_standby()

    total = 0
    take_overs = {"unsubscribe": 0, "store stopped": 0}
    deadline = time.monotonic() + seconds
    next_chaos = time.monotonic() + rng.uniform(0.3, 1.0)
    while time.monotonic() < deadline:
        stream = f"s-{rng.randrange(20)}"
        size = rng.randint(1, 4)
        writer_store.append_to_stream(stream, ANY_VERSION, events(size, w="soak"))
        total += size
        time.sleep(rng.uniform(0, 0.02))  # pacing of the workload, not synchronisation
        if time.monotonic() < next_chaos:
            continue
        next_chaos = time.monotonic() + rng.uniform(0.3, 1.0)
        holders = [(m, r) for m, r in standbys if r.proxy().holding.get().is_set()]
        if not holders:
            continue
        member, ref = holders[-1]
        standbys.remove((member, ref))
        if rng.random() < 0.5:
            member.unsubscribe_from_all_streams("ha")
            take_overs["unsubscribe"] += 1
        else:
            member.stop()  # the process goes: its lock goes with its session
            take_overs["store stopped"] += 1
        ref.stop()
        add_standby()

    # Drain: both subscribers reach the end; the checkpoints follow.
    wait_until(
        lambda: total in delivery.covered() and delivery.last() >= total,
        timeout=45,
        what=f"the standby pair to receive {total} events",
    )
    wait_until(
        lambda: (lambda d: d and d[-1] >= total)(nacker.proxy().done.get()),
        timeout=45,
        what=f"the nacking subscriber to finish {total} events",
    )
    wait_until(
        lambda: checkpoints(dsn, schema).get((ALL, "nacks")) == total,
        timeout=10,
        what="the nacking subscription's checkpoint to reach the end",
    )
    done, parked, errors = (
        nacker.proxy().done.get(),
        nacker.proxy().parked.get(),
        nacker.proxy().errors.get(),
    )
    retried = sum(1 for n in nacker.proxy().attempts.get().values() if n > 1)
    print(
        f"SOAK_SEED={seed} events={total} take_overs={take_overs} runs={len(delivery.runs)} "
        f"parked={len(parked)} retried={retried}"
    )
    assert not errors, errors[:5]
    assert done == list(range(1, total + 1)), "each event finished once, in order"
    stored = {p.event.event_id: p for p in writer_store.parked_events("nacks")}
    assert set(stored) == parked
    assert all(p.retries == max_retries for p in stored.values() if p.reason != "soak")
    delivery.check(total)
    assert sum(take_overs.values()) >= 2, take_overs
    for _, ref in standbys:
        ref.stop()
    nacker.stop()


# Competing consumers ------------------------------------------------------------------------------
class Group:
    """What a group of competing consumers saw: deliveries, acks (recorded before they are
    sent), and which member holds which stream now."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.delivered: dict[int, int] = {}  # event_id -> deliveries
        self.acked: set[int] = set()
        self.prefix = 0  # every event_id up to it was acked
        self.holders: dict[str, dict[int, set[int]]] = {}  # stream -> member -> event_ids
        self.seen_version: dict[str, int] = {}  # stream -> highest version delivered
        self.errors: list[str] = []
        self.exclusive = True  # until a lock kill: after one, redeliveries may overlap
        self.leaving: set[int] = set()  # members being killed or unsubscribed

    def ack(self, member: int, batch: list[Any]) -> None:
        with self.lock:
            for e in batch:
                self.acked.add(e.event_id)
                self.holders.get(e.stream_uuid, {}).get(member, set()).discard(e.event_id)
            while self.prefix + 1 in self.acked:
                self.prefix += 1

    def forget(self, member: int) -> None:
        """The member is about to die or leave: what it holds goes to the others."""
        with self.lock:
            self.leaving.add(member)
            for by_member in self.holders.values():
                by_member.pop(member, None)


class CompetingMember(pykka.ThreadingActor):
    def __init__(self, group: Group, member: int, seed: int) -> None:
        super().__init__()
        self.group, self.member, self.rng = group, member, random.Random(seed)
        self.held: list[Any] = []
        self.sub: Subscription | None = None

    def on_receive(self, message: Any) -> None:
        group = self.group
        if isinstance(message, Events):
            self.sub = message.subscription
            with group.lock:
                for e in message.events:
                    group.delivered[e.event_id] = group.delivered.get(e.event_id, 0) + 1
                    stream = e.stream_uuid
                    # In order: never a version whose predecessor was never delivered.
                    if e.stream_version > group.seen_version.get(stream, 0) + 1:
                        group.errors.append(f"{stream} v{e.stream_version} skipped ahead")
                    seen = group.seen_version.get(stream, 0)
                    group.seen_version[stream] = max(seen, e.stream_version)
                    if self.member in group.leaving:
                        continue
                    by_member = group.holders.setdefault(stream, {})
                    others = [m for m, held in by_member.items() if held and m != self.member]
                    if others and group.exclusive:
                        group.errors.append(f"{stream} in flight at {others} and {self.member}")
                    by_member.setdefault(self.member, set()).add(e.event_id)
            self.held.extend(message.events)
            roll = self.rng.random()
            if roll < 0.6:
                self._ack(self.held)
            elif roll < 0.8 and self.held:
                self._ack(self.rng.sample(self.held, self.rng.randint(1, len(self.held))))
        elif isinstance(message, AckNow):
            self._ack(self.held)

    def _ack(self, batch: list[Any]) -> None:
        if not batch or self.sub is None:
            return
        self.group.ack(self.member, batch)
        self.sub.ack(list(batch))
        self.held = [e for e in self.held if e not in batch]


def test_soak_competing_consumers(store: EventStore, dsn: str, schema: str, seed: int) -> None:
    """Three competing consumers partitioned by stream, acking per event at random, killed,
    unsubscribed and re-attached, the lock connection killed now and then: every event is
    delivered, each stream never skips ahead and is in flight at one member at a time (until
    a lock kill), the checkpoint never passes an event not acked, and ends at the last one."""
    rng = random.Random(seed)
    seconds = float(os.environ.get("SOAK_CC_SECONDS", "4"))
    streams = [f"cc-{i}" for i in range(12)]
    group = Group()
    refs: dict[int, pykka.ActorRef[Any]] = {}
    handles: dict[int, Subscription] = {}
    next_member = iter(range(1_000_000))
    options: dict[str, Any] = {
        "concurrency_limit": 3,
        "partition_by": lambda e: e.stream_uuid,
        "max_size": 20,
    }

    def attach() -> None:
        member = next(next_member)
        ref = CompetingMember.start(group, member, rng.randrange(1 << 30))
        handles[member] = subscribe_retrying(
            lambda: store.subscribe_to_all_streams(
                "cc", ref, buffer_size=rng.randint(1, 4), **options
            ),
            timeout=5.0,
        )
        refs[member] = ref

    for _ in range(3):
        attach()
    stop = threading.Event()
    violations: list[str] = []
    samples = 0

    def sample() -> None:
        nonlocal samples
        last = 0
        while not stop.wait(0.05):
            value = checkpoints(dsn, schema).get((ALL, "cc"), 0)
            samples += 1
            with group.lock:
                if value > group.prefix:
                    violations.append(f"checkpoint {value} > acked prefix {group.prefix}")
            if value < last:
                violations.append(f"checkpoint moved back to {value}")
            last = value

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    versions = dict.fromkeys(streams, 0)
    deadline = time.monotonic() + seconds
    actions = {"ack": 0, "kill": 0, "unsubscribe": 0, "lock": 0}
    last_lock_kill = 0.0
    while time.monotonic() < deadline:
        for _ in range(rng.randint(1, 3)):
            stream = rng.choice(streams)
            size = rng.randint(1, 4)
            store.append_to_stream(stream, versions[stream], events(size, versions[stream] + 1))
            versions[stream] += size
        time.sleep(rng.uniform(0.01, 0.05))  # pacing, not synchronisation
        member = rng.choice(list(refs))
        roll = rng.random()
        if roll < 0.7:
            refs[member].tell(AckNow())
            actions["ack"] += 1
        elif roll < 0.85:
            group.forget(member)
            refs.pop(member).stop()
            attach()
            actions["kill"] += 1
        elif roll < 0.95:
            group.forget(member)
            handles.pop(member).unsubscribe()
            refs.pop(member).stop()
            attach()
            actions["unsubscribe"] += 1
        elif time.monotonic() - last_lock_kill > 1.0:
            pids = lock_backends(dsn, subscription_lock_key(schema, ALL, "cc"))
            with group.lock:
                group.exclusive = False
            if pids and kill_backends(dsn, pids):
                last_lock_kill = time.monotonic()
                actions["lock"] += 1
    total = sum(versions.values())

    def drained() -> bool:
        for ref in refs.values():  # redeliveries (after a lock kill) are held at random too
            ref.tell(AckNow())
        return checkpoints(dsn, schema).get((ALL, "cc")) == total

    try:
        wait_until(drained, timeout=45, interval=0.1, what="the checkpoint to reach the end")
    finally:
        stop.set()
        sampler.join(timeout=10)
    print(f"SOAK_SEED={seed} competing: events={total} actions={actions} samples={samples}")
    assert sorted(group.delivered) == list(range(1, total + 1))
    assert not group.errors, group.errors[:10]
    assert not violations, violations[:10]
    assert samples > 10
    for ref in refs.values():
        ref.stop()
