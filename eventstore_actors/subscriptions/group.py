"""Consumer groups: one all-streams subscription split into partitions across processes.

Streams are split into N partitions by `reader.partition_of` (computed in the database for
catch-up reads, in Python for published batches). Each partition is an ordinary
`SubscriptionActor` whose reads and deliveries are filtered to its streams, with its own
checkpoint row and advisory lock (the row is named after the group with a suffix no user
name can carry: user names may not contain `MARK`). So everything a subscription guarantees
(per-stream order, standby, lock loss, checkpoints) holds per partition.

PostgreSQL is the coordinator, with advisory locks only (no schema change, no consensus of
our own): every member (store instance subscribed under the name) holds one member-slot lock
on its own session connection (a `Session`: on `session_dsn` when given, so never on a server
connection a transaction pooler shares), and every `_POLL` seconds reads from pg_locks which
slots are held. A member connection lost while in use (a frozen network path) may leave its
backend alive, holding the slot of a member that is gone: the `Session` ends that backend as
soon as it reconnects, so the others stop counting it within a poll.
Every member computes the same assignment from the same set of slots (`assign`: rendezvous
hashing with capacities), which gives each between floor(N/P) and ceil(N/P) and moves few
partitions when a member joins or leaves. It stops (checkpoint flushed, lock released) the
partitions it no longer wants, and starts the ones it wants as standby subscriptions, which
take the partition's lock as soon as its previous holder lets go. A member that dies loses
its slot and partition locks with its sessions; the others see it on their next poll. Views
may differ for a poll or two during a change; the partition locks keep each partition to one
holder meanwhile.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from .. import logs
from ..actors.supervised import in_actor_thread
from ..config import Settings
from ..events import RecordedEvent
from ..storage import checkpoints, locks, reader
from ..storage import subscriptions as subscription_rows
from ..storage.deadline import guard
from ..storage.errors import is_connection_loss, translate
from ..storage.sessions import Session
from .control import Control
from .messages import Subscribed, Subscription, SubscriptionStopped
from .naming import MARK, parse_row_name, partition_row_name

__all__ = [
    "MARK",
    "MAX_PARTITIONS",
    "Group",
    "GroupSubscription",
    "assign",
    "check_partitions",
    "create_plain",
    "parse_row_name",
    "partition_row_name",
]

log = logs.get_logger("eventstore_actors.group")

#: Seconds between membership polls (a change is acted on within two polls).
_POLL = 0.5
#: Seconds between polls while the group is unsettled (this member joined, or the members
#: changed, less than `_SETTLE` seconds ago): members that join together (processes started
#: at once) see each other, and hand partitions over, in tens of milliseconds instead of
#: rounds of `_POLL`; a settled group polls at `_POLL`.
_FAST_POLL = 0.05
_SETTLE = 2.0
#: Member slots per partition (plus a few): members beyond 2N + 8 would hold nothing anyway
#: (with P > N members, each holds at most one partition), so they wait for a free slot
#: instead of making every poll read more keys.
_SLOTS_PER_PARTITION = 2
_SPARE_SLOTS = 8
#: The most partitions a group may have: each is an actor with a thread of its own wherever
#: it is held (2,000 took 12 s to subscribe, 5,000 ran the pool dry).
MAX_PARTITIONS = 256


def check_partitions(partitions: Any) -> int | None:
    """None, or an int from 1 to MAX_PARTITIONS (TypeError/ValueError otherwise)."""
    if partitions is None:
        return None
    if isinstance(partitions, bool) or not isinstance(partitions, int):
        raise TypeError(f"partitions must be an int or None, got {type(partitions).__qualname__}")
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    if partitions > MAX_PARTITIONS:
        raise ValueError(
            f"partitions must be at most {MAX_PARTITIONS}, got {partitions} (a partition is an "
            "actor with a thread of its own in the process that holds it)"
        )
    return partitions


def assign(slots: Sequence[int], count: int) -> dict[int, set[int]]:
    """The partitions of each member (by slot): the same on every member for the same slots.

    Rendezvous hashing with capacities: the members in slot order take ceil(N/P) partitions
    for the first N mod P of them and floor(N/P) for the others; (member, partition) pairs
    are taken by descending score while both are free. Every partition gets a member (the
    capacities add up to N), and a member keeps most of its partitions when another joins or
    leaves (scores do not depend on who else is there).
    """
    members = sorted(set(slots))
    if not members:
        return {}
    low, extra = divmod(count, len(members))
    capacity = {m: low + (1 if i < extra else 0) for i, m in enumerate(members)}
    pairs = sorted(((_score(m, p), m, p) for m in members for p in range(count)), reverse=True)
    owned: dict[int, set[int]] = {m: set() for m in members}
    taken: set[int] = set()
    for _, member, partition in pairs:
        if partition not in taken and len(owned[member]) < capacity[member]:
            owned[member].add(partition)
            taken.add(partition)
    return owned


def _score(slot: int, partition: int) -> int:
    digest = hashlib.md5(f"{slot}/{partition}".encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "big")


def _member_key(schema: str, name: str, slot: int) -> str:
    return locks.lock_key(schema, checkpoints.ALL_STREAMS, f"{name}{MARK}member {slot}")


def _prefix(name: str) -> str:
    """What the names of the group `name`'s partition rows start with."""
    return f"{name}{MARK}partition "


def _group_key(schema: str, name: str) -> str:
    return locks.lock_key(schema, checkpoints.ALL_STREAMS, f"{name}{MARK}group")


def prepare(
    conn: psycopg.Connection[Any],
    schema: str,
    name: str,
    count: int,
    start: Callable[[psycopg.Connection[Any]], int],
) -> None:
    """Create the group's N checkpoint rows (all at one start position), or check that the
    existing group has N partitions (ValueError otherwise, and for a name that has a plain
    all-streams subscription's row: see `create_plain`). Serialized per name."""
    with conn.transaction():
        locks.lock_for_transaction(conn, _group_key(schema, name))
        if checkpoints.read(conn, checkpoints.ALL_STREAMS, name) is not None:
            raise ValueError(
                f"subscription {name!r} is an all-streams subscription without partitions; "
                f"it cannot be joined with partitions={count} (delete it first to make it "
                "a consumer group)"
            )
        counts = _counts(conn, name)
        if counts and counts != {count}:
            raise ValueError(
                f"subscription {name!r} is a consumer group of {sorted(counts)[0]} partitions; "
                f"it cannot be joined with partitions={count} (delete it first to change N)"
            )
        position = start(conn)
        for index in range(count):
            row = partition_row_name(name, index, count)
            checkpoints.create(conn, checkpoints.ALL_STREAMS, row, position)


def create_plain(conn: psycopg.Connection[Any], schema: str, name: str, start_from: int) -> int:
    """The checkpoint of the plain (no partitions) all-streams subscription `name`, its row
    created at `start_from` if it has none; ValueError if `name` is a consumer group's.
    Serialized with `prepare` (same lock): of a group and a plain subscription of one name
    created at the same moment, in any processes, the second is refused."""
    with conn.transaction():
        locks.lock_for_transaction(conn, _group_key(schema, name))
        counts = _counts(conn, name)
        if counts:
            count = sorted(counts)[0]
            raise ValueError(
                f"subscription {name!r} is a consumer group of {count} partitions; subscribe "
                f"with partitions={count}, or delete it first to subscribe without partitions"
            )
        return checkpoints.load_or_create(conn, checkpoints.ALL_STREAMS, name, start_from)


def _counts(conn: psycopg.Connection[Any], name: str) -> set[int]:
    """The partition counts of the group `name`'s rows (empty: not a group)."""
    rows = subscription_rows.names_with_prefix(conn, checkpoints.ALL_STREAMS, _prefix(name))
    return {p[2] for raw in rows if (p := parse_row_name(raw)) is not None}


def row_names(conn: psycopg.Connection[Any], name: str) -> list[str]:
    """The checkpoint row names of the group `name`'s partitions (none: not a group)."""
    found = subscription_rows.names_with_prefix(conn, checkpoints.ALL_STREAMS, _prefix(name))
    return [raw for raw in found if parse_row_name(raw) is not None]


def delete_rows(conn: psycopg.Connection[Any], name: str) -> None:
    """Delete every partition checkpoint (and parked event) of the group `name`."""
    subscription_rows.delete_with_prefix(conn, checkpoints.ALL_STREAMS, _prefix(name))


@dataclass(frozen=True, eq=False)
class GroupSubscription(Subscription):
    """The handle a consumer-group subscribe returns. Each batch comes with its partition's
    own handle (`message.subscription`), which acks that partition; acks and nacks through
    this one are checked as that one checks them, then routed: events by their stream's
    partition, an int position to the partition whose batch sent last ends there (an ack)
    or holds it (a nack). An int that names no such batch of this member: ValueError (ack
    the events, or through `message.subscription`); one of a partition handed over from
    here since, or an event of one: nothing to do (its new holder delivers it again)."""

    _group: Group | None = field(default=None, repr=False, compare=False)

    def ack(self, acked: Sequence[Any] | RecordedEvent | int, *, conn: Any = None) -> None:
        self._position(acked)  # checked first (TypeError, ValueError)
        group = self._group
        target = None if group is None else group.route(acked, nack=False)
        if target is not None:
            target.ack(acked, conn=conn)

    def nack(
        self, event_or_position: RecordedEvent | int, action: str = "retry", reason: Any = None
    ) -> None:
        self._nack_position(event_or_position, action, reason)  # checked first
        group = self._group
        target = None if group is None else group.route(event_or_position, nack=True)
        if target is not None:
            target.nack(event_or_position, action, reason)

    def unsubscribe(self) -> None:
        """Leave the group: this store's partitions go to the other members."""
        if self._group is not None:
            self._group.leave()


class _Relay:
    """The subscriber as every partition sees it: `Subscribed` and `SubscriptionStopped` are
    told once for the whole group (with the group's handle); nothing follows the stop."""

    def __init__(self, group: Group, subscriber: Any) -> None:
        self._group = group
        self.subscriber = subscriber
        self._lock = threading.Lock()
        self._announced = False
        self._stopped = False

    def tell(self, message: Any) -> None:
        if isinstance(message, Subscribed):
            with self._lock:  # held while telling: no partition's events overtake it
                if self._announced or self._stopped:
                    return
                self.subscriber.tell(Subscribed(self._group.handle))
                self._announced = True
        elif isinstance(message, SubscriptionStopped):
            with self._lock:
                if self._stopped:
                    return
                self._stopped = True
            self._group.failed(message.reason)
            self.subscriber.tell(SubscriptionStopped(self._group.handle, message.reason))
        elif not self._stopped:
            self.subscriber.tell(message)

    def silence(self) -> None:
        """An unsubscribe: nothing more is told."""
        with self._lock:
            self._stopped = True

    def is_alive(self) -> bool:
        is_alive = getattr(self.subscriber, "is_alive", None)
        return not callable(is_alive) or bool(is_alive())


class Group:
    """One store instance's membership of a consumer group (see the module docstring).

    `start_partition(index, relay)` subscribes one partition (as standby) and returns its
    handle; `stop_partition(index)` unsubscribes it (checkpoint flushed, lock released);
    `control(index)` is the partition's `Control` while it runs.
    """

    def __init__(
        self,
        settings: Settings,
        name: str,
        count: int,
        subscriber: Any,
        start_partition: Callable[[int, Any], Subscription],
        stop_partition: Callable[[int], None],
        control: Callable[[int], Any],
        on_end: Callable[[Group], None],
    ) -> None:
        self._settings = settings
        self.name = name
        self.count = count
        self._start_partition = start_partition
        self._stop_partition = stop_partition
        self._control = control
        self._on_end = on_end
        self.relay = _Relay(self, subscriber)
        self.handle = GroupSubscription(checkpoints.ALL_STREAMS, name, _group=self)
        self.log = log.bind(schema=settings.schema, subscription=name, partitions=count)
        self._handles: dict[int, Subscription] = {}  # the partitions started here
        self._left: dict[int, Control] = {}  # those stopped here since (see `route`)
        self._session = Session(settings)  # the member slot's connection
        self._slot: int | None = None
        self._wake = threading.Event()
        self._closing = False
        self._ended = False
        self._end_lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name=f"eventstore-group-{name}", daemon=True
        )
        self.members = 0  # members seen on the last poll
        self._slots: list[int] = []  # the member slots seen on the last poll
        self._changed = time.monotonic()  # when this member joined or the members changed

    # Life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Join (take a member slot, start the wanted partitions), then keep polling."""
        try:
            self.step()
        except psycopg.Error as exc:
            raise translate(exc, self._session.conn, "join") from None
        self._thread.start()

    def close(self, *, silent: bool = True, partitions: bool = True) -> None:
        """Leave the group: stop polling, stop this instance's partitions (their checkpoints
        flushed, their locks released; not with `partitions=False`: the store is stopping
        them), release the member slot."""
        with self._end_lock:
            if self._ended:
                return
            self._ended = True
        if silent:
            self.relay.silence()
        self._closing = True
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self._settings.call_timeout)
        if partitions:
            for index in sorted(self._handles):
                self._stop(index)
        self._drop()
        self._session.settle()  # no reconnect follows to end a lost connection's backend
        self._on_end(self)

    def leave(self) -> None:
        """The subscriber's own unsubscribe, through the group's handle or a partition's:
        nothing more is told once this returns, and this store leaves the group (at once; or
        just after, on another thread, when called from a partition's own thread: a plain
        subscriber's tell() must not wait for its own partition to stop)."""
        self.relay.silence()
        if in_actor_thread():
            threading.Thread(target=self.close, name="eventstore-group-leave", daemon=True).start()
        else:
            self.close()

    def tell_stopped(self, reason: str) -> None:
        """Tell the subscriber `SubscriptionStopped` unless it was told already (a member
        holding no partition when its store stops)."""
        try:
            self.relay.tell(SubscriptionStopped(self.handle, reason))
        except Exception:  # includes pykka.ActorDeadError
            pass

    def failed(self, reason: str) -> None:
        """A partition ended for `reason` (told to the subscriber once): the group ends."""
        self._closing = True
        self._wake.set()

    def _interval(self) -> float:
        """How long until the next poll: short while the group is unsettled."""
        return _FAST_POLL if time.monotonic() - self._changed < _SETTLE else _POLL

    def _run(self) -> None:
        while not self._wake.wait(self._interval()):
            try:
                self.step()
            except Exception as exc:  # the database is away: retried on the next poll
                self.log.warning("consumer group poll failed", error=str(exc))
                self._drop(lost=is_connection_loss(exc, self._session.conn))
        if not self._ended:  # a partition failed: leave, telling nothing more
            threading.Thread(target=self.close, kwargs={"silent": False}, daemon=True).start()

    # Membership -----------------------------------------------------------------------------
    def step(self) -> None:
        """One poll: who is in the group, which partitions are wanted here; stop and start
        partitions accordingly."""
        if self._closing:
            return
        if not self.relay.is_alive():  # its partitions (if any) notice too; told once
            self.tell_stopped("the subscriber stopped")
            return
        slots = self._members()
        self.members = len(slots)
        if slots != self._slots:
            self._slots, self._changed = slots, time.monotonic()
        wanted = (
            assign(slots, self.count).get(self._slot, set()) if self._slot is not None else set()
        )
        for index in sorted(set(self._handles) - wanted):
            self._stop(index)
        for index in sorted(wanted - set(self._handles)):
            if self._closing:
                return
            try:
                self._handles[index] = self._start_partition(index, self.relay)
                self._left.pop(index, None)
            except Exception as exc:  # the previous holder here still ending: next poll
                self.log.warning("could not start a partition", partition=index, error=str(exc))

    def _members(self) -> list[int]:
        """The member slots held now (sorted), after taking ours if we have none."""
        held_on = self._session.conn
        conn = self._session.get()
        if conn is not held_on:
            self._slot = None  # a new connection holds no slot yet
        schema = self._settings.schema
        slots = _SLOTS_PER_PARTITION * self.count + _SPARE_SLOTS
        keys = [_member_key(schema, self.name, k) for k in range(slots)]
        with guard(conn, self._settings.io_timeout):  # a silent server fails the poll
            if self._slot is None:
                for slot, key in enumerate(keys):
                    if locks.try_lock(conn, key):
                        self._slot = slot
                        break
            held = locks.held(conn, keys)
        return sorted(i - 1 for i in held)

    def _drop(self, *, lost: bool = False) -> None:
        """Close the member connection (the slot goes with it); `lost`: after a failure that
        may leave its backend alive, holding the slot (ended when the next one opens)."""
        self._slot = None
        if lost:
            self._session.lost()
        else:
            self._session.close()

    def _stop(self, index: int) -> None:
        self._handles.pop(index, None)
        control = self._control(index)
        if isinstance(control, Control):  # acks of what it sent are not errors (`route`)
            self._left[index] = control
        try:
            self._stop_partition(index)
        except Exception as exc:
            self.log.warning("could not stop a partition", partition=index, error=str(exc))

    # Acks through the group's handle --------------------------------------------------------
    def route(self, acked: Any, *, nack: bool) -> Subscription | None:
        """The partition handle an ack or nack through the group's handle is meant for (see
        `GroupSubscription`); None: a partition not held here (handed over since)."""
        last = acked
        if isinstance(acked, Sequence) and not isinstance(acked, (str, bytes)) and acked:
            last = acked[-1]
        if isinstance(last, RecordedEvent):
            return self._handles.get(reader.partition_of(last.stream_uuid, self.count))
        position = int(last)
        for index, handle in list(self._handles.items()):
            if _sent(self._control(index), position, nack):
                return handle
        if any(_sent(control, position, nack) for control in list(self._left.values())):
            return None  # its partition was handed over from here since
        if nack:
            raise ValueError(
                f"nack position {position} is not an event of the batch in flight of a "
                "partition delivered to this subscriber (nack the event, or through "
                "message.subscription)"
            )
        raise ValueError(
            f"ack position {position} is not the last event of a batch delivered to this "
            "subscriber (ack the events, or an int through message.subscription)"
        )


def _sent(control: Any, position: int, nack: bool) -> bool:
    """Whether the partition of `control` sent `position` last: its replayed parked event;
    else for a nack, an event of its batch sent last; for an ack, that batch's end."""
    if not isinstance(control, Control):
        return False
    replaying = control.replaying
    if replaying is not None and replaying[0] == position:
        return True
    if nack:
        return any(event.event_id == position for event in control.in_flight)
    return control.delivered == position
