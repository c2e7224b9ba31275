"""What the facade, the publisher, the ticker and one subscription actor share about it.

A pykka inbox is unbounded and cannot be inspected cheaply, so the senders count what they
queued here and hold back once a subscription is `limit` events behind: the publisher then
queues one coalesced `CatchUp` instead (the subscription reads storage once it has room), and
the ticker never queues a second `Tick`. Memory thus stays bounded by `max_size` whatever
the event rate and however slow the subscriber.

It also carries how the subscription ends. `close(reason)` is sticky (the first reason wins;
`None` means the subscriber's own unsubscribe or delete, which tells it nothing) and is
checked by the actor before every message it tells the subscriber, from any thread, so an
unsubscribe called from inside the subscriber's own `tell()` takes effect at once. The
subscriber is told `SubscriptionStopped` at most once, by whoever sees the subscription end
last: the actor's cleanup, or the supervisor giving up on an actor that already ended.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any

__all__ = ["Admit", "Control", "Delivery"]

#: Deliveries remembered for acks in callers' transactions: the one in flight and every
#: earlier one not acked yet (copies sent before a lost lock was retaken, or before a
#: retry: their subscriber may still ack them), up to this many, naming at most
#: `DELIVERED_IDS` events together; beyond that the oldest go (the one in flight stays).
DELIVERIES = 64
DELIVERED_IDS = 8_000


class Admit(Enum):
    """What a sender should queue for a subscription."""

    EVENTS = "events"  # the events themselves
    CATCH_UP = "catch_up"  # one CatchUp instead: the subscription reads storage itself
    NOTHING = "nothing"  # a CatchUp is already queued: it covers these events too


class Delivery:
    """One batch told to a single subscriber, for acks in callers' transactions: the
    identities of the event objects it held (not the objects: an acked batch is not kept
    alive here), the highest position the subscription may find stored when one of them is
    acked (just before the batch), and what the subscriber acked of it since."""

    __slots__ = ("acked", "floor", "ids", "last")

    def __init__(self, events: list[Any], floor: int, last: int) -> None:
        self.ids = tuple(map(id, events))
        self.floor = floor
        self.last = last
        self.acked = floor

    def done(self, plain: int) -> bool:
        """Acked whole (in a transaction, or by plain acks up to `plain`): an ack of it now
        names positions the stored checkpoint already holds, refused as acked before."""
        return self.acked >= self.last or self.last <= plain


class Control:
    """Thread-safe counters and end-of-life flags of one subscription (all its restarts)."""

    def __init__(self, limit: int, subscriber: Any = None) -> None:
        self.subscriber = subscriber  # lets a resubscribe see that this one is ending
        self._lock = threading.Lock()
        self._limit = max(1, limit)
        self._events = 0  # events queued in the actor's inbox (Published messages)
        self._catch_up = False  # a CatchUp is queued
        self._tick = False  # a Tick is queued
        #: Until when (monotonic) the actor needs no Tick: it is idle and its next health
        #: check is not due (see `SubscriptionActor._rest`); 0 once any message arrives.
        self.quiet_until = 0.0
        self._closed = False
        self._reason: str | None = None
        self._running = 0  # the token of the actor instance running now (0: none)
        self._tokens = 0
        self._told_stopped = False
        #: Highest position sent to the subscriber (an ack in a transaction is clamped to it).
        self.delivered = 0
        #: For acks in callers' transactions: the highest position this run may find stored
        #: when it acks (just before its batch in flight, or what it acked itself since).
        #: A stored checkpoint above it means another holder acked these events. For an ack
        #: that names its events, the floor of the delivery that held them (`delivery_of`).
        self.ack_floor = 0
        self._deliveries: deque[Delivery] = deque()
        self._kept_ids = 0  # identities the deliveries hold together
        #: The replayed parked event in flight, (position, event_id), if any: an ack of it in a
        #: caller's transaction takes it off the parked list and leaves the checkpoint alone.
        self.replaying: tuple[int, int] | None = None
        #: Set when an ack in a caller's transaction begins (before its write): from then on
        #: the subscription's own checkpoint writes never wait on the row (see the actor).
        self.acks_in_transaction = False
        #: Nacks the single subscriber's handle told the actor (see `LevelHooks._settles`).
        self.nacks_told = 0
        self._acked = 0  # the highest plain ack told by the handle (at most `delivered`)
        self._final = False  # the actor instance made its final checkpoint write
        #: Competing consumers: per-event acks told since the subscription closed, and what
        #: applies later ones to its last state (see `each_ack`).
        self._each_late: list[tuple[Any, tuple[int, ...]]] = []
        self._apply_each: Callable[[Any, tuple[int, ...]], int | None] | None = None
        #: Whether the subscriber was told `Subscribed` (a standby is told at take-over).
        self.announced = False
        #: Competing consumers: the handles unsubscribed one by one (told nothing more), and
        #: the (subscriber, handle, buffer_size) of every member (kept across restarts).
        self.detached: set[Any] = set()
        self.members: list[tuple[Any, Any, int]] = []
        #: Set by the running actor instance (see `direct.py`): `direct(published, batch)`
        #: delivers a batch on the fan-out's thread and `direct_ack(position, handle)` applies
        #: an ack on the acker's thread, each returning False (or None: the actor is busy)
        #: when it must go as a message.
        self.direct: Callable[[Any, int], bool | None] | None = None
        self.direct_ack: Callable[[int, Any], bool | None] | None = None
        #: A consumer group's partition (set by the service): the batch sent last is kept
        #: (`in_flight`, the list itself: nothing computed per batch), for the group's handle
        #: to route an int nack.
        self.keeps_sent = False
        self.in_flight: Sequence[Any] = ()

    # Inbox accounting ---------------------------------------------------------------------------
    def admit_events(self, count: int) -> Admit:
        """Called by the publisher before telling `count` events (it must tell what it gets)."""
        with self._lock:
            if self._catch_up:
                return Admit.NOTHING
            if self._events == 0 or self._events + count <= self._limit:
                self._events += count
                return Admit.EVENTS
            self._catch_up = True
            return Admit.CATCH_UP

    def admit_catch_up(self) -> bool:
        """Whether to tell a CatchUp (False: one is queued already)."""
        with self._lock:
            if self._catch_up:
                return False
            self._catch_up = True
            return True

    def admit_tick(self) -> bool:
        if self.quiet_until and time.monotonic() < self.quiet_until:
            return False  # an idle subscription is not woken for nothing
        with self._lock:
            if self._tick:
                return False
            self._tick = True
            return True

    def took_events(self, count: int) -> None:
        """The actor took a Published of `count` events from its inbox (or it was never
        queued: the actor was dead)."""
        with self._lock:
            self._events = max(0, self._events - count)

    def took_catch_up(self) -> None:
        """Called by the actor *before* it re-checks storage, so that anything skipped after
        this point is covered by a new CatchUp."""
        with self._lock:
            self._catch_up = False

    def took_tick(self) -> None:
        with self._lock:
            self._tick = False

    @property
    def inbox_clear(self) -> bool:
        """Whether no Published and no CatchUp is queued for the actor."""
        return self._events == 0 and not self._catch_up

    @property
    def queued_events(self) -> int:
        return self._events

    def sent(
        self, first: int, last: int, replay_of: int | None = None, events: Sequence[Any] = ()
    ) -> None:
        """The actor is about to send a batch from position `first` to `last`; `replay_of`:
        it is the replay of the parked event of that event_id (at `first`, below the
        checkpoint: it moves neither `delivered` nor `ack_floor`). `events`: the batch, which
        is kept when `keeps_sent` (see `in_flight`)."""
        with self._lock:
            if self.keeps_sent:
                self.in_flight = events
            if replay_of is not None:
                self.replaying = (first, replay_of)
                return
            self.replaying = None
            self.delivered = max(self.delivered, last)
            self.ack_floor = max(self.ack_floor, first - 1)

    def replayed(self, position: int) -> int | None:
        """The event_id of the replayed parked event in flight at `position`, if any."""
        with self._lock:
            replaying = self.replaying
            return replaying[1] if replaying is not None and replaying[0] == position else None

    def plain_ack(self, position: int) -> int | None:
        """A plain ack told by the handle (clamped to what was delivered). Returns the
        position for the caller to store itself when no actor instance will any more (it made
        its final write: an ack told after a subscription stopped, e.g. on an event it cannot
        rebuild, right after the batch before it); else None (the actor takes it)."""
        with self._lock:
            position = min(position, self.delivered)
            if position <= self._acked:
                return None
            self._acked = position
            return position if self._final else None

    def final_acks(self) -> int:
        """For an actor instance's final checkpoint write: the highest plain ack told; the
        handle stores the acks told from now on itself (until an instance starts again)."""
        with self._lock:
            self._final = True
            return self._acked

    def each_ack(
        self, handle: Any, positions: tuple[int, ...], tell: Callable[[], None]
    ) -> int | None:
        """Competing consumers: per-event acks of `handle`. While the subscription is open
        they are told to the actor (`tell`, under the lock: so queued ahead of the stop of a
        subscription closing meanwhile); once it closed, kept for its final write; after that
        write, applied to its last state here: returns the checkpoint they complete, for the
        caller to store (None: nothing moved)."""
        with self._lock:
            if not self._closed:
                tell()
                return None
            if self._apply_each is None:
                self._each_late.append((handle, positions))
                return None
            return self._apply_each(handle, positions)

    def final_each(self, apply: Callable[[Any, tuple[int, ...]], int | None]) -> int | None:
        """Competing consumers, for an actor instance's final write: `apply` (handle,
        positions) -> new checkpoint or None takes the per-event acks told since it closed,
        and any told later (see `each_ack`). Returns the highest checkpoint they complete."""
        with self._lock:
            self._final = True
            self._apply_each = apply
            late, self._each_late = self._each_late, []
            moved = [apply(handle, positions) for handle, positions in late]
            return max((m for m in moved if m is not None), default=None)

    def told_nack(self) -> None:
        """The handle tells the actor a nack: until the actor has it, no ack is applied
        directly (on the acker's thread), so that an ack made after it comes after it."""
        with self._lock:
            self.nacks_told += 1

    def delivering(self, events: list[Any], floor: int, last: int) -> None:
        """A batch of these event objects, positions `floor` + 1 to `last`, is about to be
        told to the single subscriber (see `Delivery`). Those acked whole are forgotten
        (the oldest at once, any other once the bounds are reached)."""
        delivery = Delivery(events, floor, last)
        with self._lock:
            kept, plain = self._deliveries, self._acked
            while kept and kept[0].done(plain):
                self._kept_ids -= len(kept.popleft().ids)
            kept.append(delivery)
            self._kept_ids += len(delivery.ids)
            if len(kept) > DELIVERIES or self._kept_ids > DELIVERED_IDS:
                live = [d for d in kept if d is delivery or not d.done(plain)]
                total = sum(len(d.ids) for d in live)
                while len(live) > 1 and (len(live) > DELIVERIES or total > DELIVERED_IDS):
                    total -= len(live.pop(0).ids)
                self._deliveries, self._kept_ids = deque(live), total

    def delivery_of(self, event: Any) -> Delivery | None:
        """The latest remembered delivery that told this very event object (None: not
        one of them, or an ack by position).

        Why by object: after a lost lock is retaken, the events after the stored checkpoint
        are told again (new objects, read again), while the subscriber may still hold the
        first copy. An ack of either copy must be checked against the checkpoint its own
        delivery started from: one floor for the whole subscription, raised by the
        subscriber's ack of the first copy, let the second copy's ack pass too, and the
        events were applied twice (found by an adversarial probe). Identities, newest first:
        an object held by the subscriber keeps its id; one reused after its object was gone
        belongs to a later delivery, found first."""
        if event is None:
            return None
        wanted = id(event)
        with self._lock:
            for delivery in reversed(self._deliveries):
                ids = delivery.ids
                if ids and (ids[-1] == wanted or wanted in ids):
                    return delivery
        return None

    def latest_delivery(self) -> Delivery | None:
        """The batch told last (the one in flight, for a single subscriber)."""
        with self._lock:
            return self._deliveries[-1] if self._deliveries else None

    def floor_of(self, delivery: Delivery | None) -> int:
        """The highest checkpoint an ack of `delivery` may find stored: just before it, or
        what its own subscriber acked of it since; by position, the subscription's."""
        with self._lock:
            return self.ack_floor if delivery is None else delivery.acked

    def acked_in_transaction(self, position: int, delivery: Delivery | None = None) -> None:
        """An ack in a caller's transaction wrote `position` (committed or not: a rollback
        leaves the stored checkpoint lower, which is allowed). By position (`delivery`
        None), it counts for the latest delivery that holds it: a later ack naming events
        of that batch must not find its own acks refused."""
        with self._lock:
            self.ack_floor = max(self.ack_floor, position)
            if delivery is None:
                delivery = next(
                    (d for d in reversed(self._deliveries) if d.floor < position <= d.last),
                    None,
                )
            if delivery is not None:
                delivery.acked = max(delivery.acked, position)

    # Life cycle ---------------------------------------------------------------------------------
    def started(self) -> int:
        """A new actor instance starts: whatever the previous one had queued died with it.
        Returns the instance's token for `finished`."""
        with self._lock:
            self._events = 0
            self._catch_up = False
            self._tick = False
            self._final = False
            self._apply_each, self._each_late = None, []
            self._tokens += 1
            self._running = self._tokens
            return self._running

    def close(self, reason: str | None) -> str | None:
        """End the subscription (first call wins). Returns the reason to tell the subscriber
        in `SubscriptionStopped` now, when no actor instance is left to do it; else None."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._reason = reason
            return self._reason if self._claim_notice(self._running == 0) else None

    def finished(self, token: int) -> str | None:
        """The actor instance `token` has cleaned up. Returns the reason to tell the subscriber,
        if it must be told now (the subscription was closed with a reason, not told yet)."""
        with self._lock:
            if self._running == token:
                self._running = 0
            return self._reason if self._claim_notice(self._running == 0) else None

    def _claim_notice(self, allowed: bool) -> bool:
        if allowed and self._closed and self._reason is not None and not self._told_stopped:
            self._told_stopped = True
            return True
        return False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def reason(self) -> str | None:
        return self._reason
