"""The subscription actor: drives a `SubscriptionState` with storage, the subscriber and a lock.

One actor per named subscription. A session-level advisory lock on its own dedicated
connection (`LockSession`) makes it the only subscriber of that name across every process
sharing the database; the connection also serves its catch-up reads and checkpoint writes.
Losing the connection loses the lock: the actor stops delivering at once, drops its state and,
on its ticks, reconnects with back-off, takes the lock again (waiting while another process
holds it) and resumes after the checkpoint. That is never counted as a crash.

A subscription that ends for any other reason than its subscriber's own unsubscribe or delete
(a mapper, the subscriber or the serializer failing, its stream deleted, the store stopping,
the supervisor giving up) tells its subscriber `SubscriptionStopped`, then nothing more (see
`Control`).

Positions: event_id for all streams; event_number for one stream (its own events' stream
version, or a link's position in it). Catch-up reads say how far they covered, so gaps left by
hard deletes are stepped over (see `SubscriptionState`). A stream subscription learns that its
stream was deleted from `StreamDeleted` (told by the deleting store, or by the publisher on
another process's notification), from its reads, or on its health check (the stream is
soft-deleted, or its checkpoint row is gone: a hard delete removes it).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pykka

from ..actors.registry import Registry
from ..actors.supervised import SupervisedActor
from ..actors.ticker import Tick
from ..config import Settings
from ..errors import InvalidStartFromError, StoreUnavailableError, SubscriptionAlreadyExistsError
from ..events import RecordedEvent
from ..notifications.publisher import CatchUp, Published, StreamDeleted
from ..storage import checkpoints, deletes, parked, reader
from ..storage.pool import ReadPool
from ..storage.replica import ReplicaReads, current_lsn
from .checkpointing import CheckpointPolicy
from .control import Control
from .health import SubscriptionHealth
from .hub import LockHub, SharedLockSession
from .info import lock_key
from .intake import Intake
from .lock import Interrupted, LockLost, LockSession
from .messages import Events, Subscribed, Subscription, SubscriptionStopped
from .state import Read, Send, SubscriptionState

_R = TypeVar("_R", bound=tuple[Any, ...])

__all__ = [
    "Ack",
    "Nack",
    "ReplayParked",
    "SubscriptionActor",
    "SubscriptionSpec",
    "subscriber_alive",
    "tell_stopped",
]

#: Seconds between checks that the lock connection is still alive.
_HEALTH_INTERVAL = 1.0
#: Seconds between attempts to take a lock another session holds.
_LOCK_RETRY = 0.5
#: A first subscribe retries a held lock this long (a backend that just closed may not have
#: released it yet).
_SUBSCRIBE_LOCK_WAIT = 0.5
#: Longest back-off between reconnects after the lock connection was lost.
_MAX_BACKOFF = 2.0


@dataclass(frozen=True)
class SubscriptionSpec:
    stream_uuid: str  # "$all" for all streams
    name: str
    subscriber: Any
    start_from: str | int
    mapper: Callable[[RecordedEvent], Any] | None
    max_size: int
    control: Control
    holder: str = ""  # names this store instance in the subscriptions table
    standby: bool = False  # wait for another process to let go of the name
    max_batch: int = 1000
    mixed: bool = False  # batches may hold several streams (all-streams only)
    selector: Callable[[RecordedEvent], Any] | None = None  # applied here, after decoding
    event_types: tuple[str, ...] | None = None  # filtered in the database
    stream_prefix: str | None = None  # all-streams only; in the database
    checkpoint_threshold: int | None = None  # write at least every N acked positions
    checkpoint_after: float | None = None  # write at least every S seconds while pending
    max_retries: int = 10  # nack "retry": then parked
    retry_delay: float = 1.0  # seconds before a retried event is sent again
    replica: ReplicaReads | None = None  # catch-up reads from a standby (replica_dsn)
    partition: tuple[int, int] | None = None  # (index, count) in a consumer group; in the db
    concurrency_limit: int = 1  # >1: competing consumers (see consumers.py)
    partition_by: Callable[[RecordedEvent], Any] | None = None
    buffer_size: int = 1
    hub: LockHub | None = None  # shared_lock_session: the store's lock connection
    pool: ReadPool | None = None  # with a hub: catch-up reads from the read pool
    health: SubscriptionHealth = field(default_factory=SubscriptionHealth)  # see health.py

    def matches(self, event: RecordedEvent) -> bool:
        """What the database filters keep (for events from the publisher)."""
        if self.event_types is not None and event.event_type not in self.event_types:
            return False
        partition = self.partition
        if (
            partition is not None
            and reader.partition_of(event.stream_uuid, partition[1]) != (partition[0])
        ):
            return False
        prefix = self.stream_prefix
        return prefix is None or event.stream_uuid.startswith(prefix)


@dataclass(frozen=True)
class Ack:
    """A cumulative ack from the subscriber holding `subscription` (a handle from an earlier
    subscribe of the same name is ignored). `in_transaction`: the caller wrote the checkpoint
    in its own transaction; the actor only lets delivery go on and never writes it itself."""

    position: int
    subscription: Subscription
    in_transaction: bool = False
    each: tuple[int, ...] = ()  # competing consumers: per-event acks (position is the last)


@dataclass(frozen=True)
class Nack:
    """A nack from the subscriber holding `subscription` (see `Subscription.nack`)."""

    position: int
    action: str
    reason: str | None
    subscription: Subscription


@dataclass(frozen=True)
class Resync:
    """An ack in a transaction found the stored checkpoint at `stored`, beyond this run's
    (another holder acked those events during a take-over): go on after it."""

    stored: int
    subscription: Subscription


@dataclass(frozen=True)
class ReplayParked:
    """`replay_parked` marked this subscription's parked events: load them now."""


@dataclass(frozen=True)
class _Pump:
    pass


def tell_stopped(subscriber: Any, handle: Subscription, reason: str) -> None:
    """Tell `SubscriptionStopped`; a subscriber that is gone or fails is past caring."""
    try:
        subscriber.tell(SubscriptionStopped(handle, reason))
    except Exception:  # includes pykka.ActorDeadError
        pass


def subscriber_alive(subscriber: Any) -> bool:
    is_alive = getattr(subscriber, "is_alive", None)
    return not callable(is_alive) or bool(is_alive())


class SubscriptionActor(SupervisedActor):
    def __init__(
        self,
        supervisor: pykka.ActorRef[Any],
        child_id: str,
        settings: Settings,
        spec: SubscriptionSpec,
        handle: Subscription,
        ready: pykka.ThreadingFuture[Subscription] | None,
        registry: Registry,
    ) -> None:
        super().__init__(supervisor, child_id)
        self.log = self.log.bind(subscription=spec.name, stream=spec.stream_uuid)
        self._settings = settings
        self._spec = spec
        self._control = spec.control
        self._registry = registry
        self._handle = handle
        self._ready = ready  # set only for the first start: the subscribe call waits on it
        key = lock_key(settings.schema, spec.stream_uuid, spec.name)
        self._lock: LockSession | SharedLockSession = (
            LockSession(settings, key)
            if spec.hub is None
            else SharedLockSession(spec.hub, key, spec.pool)
        )
        self._state: SubscriptionState[RecordedEvent] | None = None
        self._token = 0
        self._ended = False
        self._silent = False  # the subscribe call failed: tell the subscriber nothing
        self._fatal: str | None = None  # set when storage holds an event that cannot be decoded
        self._next_health_check = 0.0
        self._retry_at = 0.0
        self._backoff = 0.0
        self._unsaved_checkpoint: int | None = None
        self._policy = CheckpointPolicy(0, spec.checkpoint_threshold, spec.checkpoint_after)
        self._closing: SubscriptionState[RecordedEvent] | None = None  # the state at _end
        self._retries: dict[int, int] = {}  # nack "retry" counts by position
        self._resume_at = 0.0  # when a pending retry may be sent
        self._replay_queued: set[int] = set()  # event_ids of parked events queued again
        self._acks_in_transaction = False  # acks come with conn=: see _flush_checkpoint
        self._fence = 0  # with them: the highest position they acked (see _flush_checkpoint)
        self._sent_before = 0  # last position sent before the lock was lost
        self._all = spec.stream_uuid == checkpoints.ALL_STREAMS
        self._seen_head = 0  # the head the last health check found (replica reads)
        # A CatchUp was told (replica reads): the next short read must cover what was
        # committed by then, as of the primary's WAL position taken for it (None: not yet).
        self._catch_up_due = False
        self._catch_up_lsn: int | None = None
        self._since: float | None = None  # Published.at of the oldest event not yet told
        self._relock = False  # the lock connection was lost: retaking it is a reconnect
        self._nacks_to_redo: list[Nack] = []  # their park was interrupted: done on a tick

    # Lifecycle --------------------------------------------------------------------------------
    def register(self) -> None:
        # Findable before anything is delivered: an ack told at once must reach this actor.
        self._token = self._control.started()
        self._registry.put(self.child_id, self.actor_ref, self._control)

    def setup(self) -> None:
        if self._control.closed:  # unsubscribed before it even started
            self._end(None)
            return
        try:
            self._connect_and_start()
        except (StoreUnavailableError, LockLost) as exc:
            if self._ready is None:
                # A restart while the database is away: retried on the ticks.
                self.log.warning("subscription waiting for the database", error=str(exc))
                self._retry_later()
                return
            self._fail_subscribe(exc if isinstance(exc, StoreUnavailableError) else None)
        except Exception as exc:
            if self._ready is None:
                raise
            self._fail_subscribe(exc)

    def _fail_subscribe(self, exc: Exception | None) -> None:
        assert self._ready is not None
        if exc is None:
            exc = StoreUnavailableError("the subscription lost its connection while starting")
        self._ready.set_exception(exc_info=(type(exc), exc, None))
        self._ready = None
        self._silent = True
        self._end(None)  # a failed subscribe is not restarted and tells nothing

    def _connect_and_start(self) -> None:
        self._lock.connect()
        if self._ready is not None:
            deadline = time.monotonic() + _SUBSCRIBE_LOCK_WAIT
            while not self._lock.try_lock():
                if self._spec.standby:
                    self._stand_by()
                    return
                if time.monotonic() >= deadline:
                    raise SubscriptionAlreadyExistsError(
                        f"subscription {self._spec.name!r} on {self._spec.stream_uuid!r} "
                        "already has a subscriber"
                    )
                time.sleep(0.02)
        elif not self._lock.try_lock():
            self._retry_at = time.monotonic() + _LOCK_RETRY
            return  # another holder: retried on the ticks
        self._start_locked()

    def _stand_by(self) -> None:
        """Another process holds the name: the subscribe returns now, and the lock is tried
        again on the ticks; `Subscribed` is told once it is taken."""
        assert self._ready is not None
        self._ready.set(self._handle)
        self._ready = None
        self._retry_at = time.monotonic() + _LOCK_RETRY
        self.log.info("subscription standing by: another process holds the name")

    def _start_locked(self) -> None:
        stream, name = self._spec.stream_uuid, self._spec.name
        stored = self._lock.run(lambda c: checkpoints.read(c, stream, name))
        first = self._ready is not None
        if first and not subscriber_alive(self._spec.subscriber):
            raise ValueError("the subscriber is not running (a stopped actor?)")
        if stored is None:
            start = self._start_position()
            checkpoint = self._lock.run(
                lambda c: checkpoints.load_or_create(c, stream, name, start)
            )
        else:
            checkpoint = stored
        unsaved = self._unsaved_checkpoint  # acked before the lock was lost
        if unsaved is not None and unsaved > checkpoint and not self._in_transactions():
            self._lock.run(lambda c: checkpoints.advance(c, stream, name, unsaved))
            checkpoint = unsaved
        self._unsaved_checkpoint = None
        holder = self._spec.holder
        if holder:
            self._lock.run(lambda c: checkpoints.claim(c, stream, name, holder))
        if self._ready is not None:
            try:
                self._tell(Subscribed(self._handle))
            except pykka.ActorDeadError:
                if stored is None:  # nothing may be left behind by a subscribe that raises
                    self._lock.run(lambda c: checkpoints.delete(c, stream, name))
                raise ValueError("the subscriber is not running (a stopped actor?)") from None
            self._control.announced = True
            self._ready.set(self._handle)
            self._ready = None
        elif not self._control.announced:  # a standby taking over
            try:
                self._tell(Subscribed(self._handle))
            except Exception:
                self._end("the subscriber stopped")
                return
            self._control.announced = True
            if self._ended:
                return
        self._begin(checkpoint)
        self._backoff = 0.0
        interval = _HEALTH_INTERVAL
        if self._spec.hub is not None:  # many on one store: spread their checks over time
            interval *= 0.5 + random.random() / 2
        self._next_health_check = time.monotonic() + interval
        self.log.info("subscription started", checkpoint=checkpoint)
        if self._relock:
            self._relock = False
            self._registry.metrics.count("reconnects_total", connection="subscription")
        self._load_replay(self._state)
        self.actor_ref.tell(_Pump())

    def _begin(self, checkpoint: int) -> None:
        """A fresh state machine after the stored `checkpoint`."""
        if self._all:
            self._state = SubscriptionState(
                checkpoint,
                self._spec.max_size,
                position=lambda e: e.event_id,
                stream_key=lambda e: e.stream_uuid,
                max_batch=self._spec.max_batch,
                mixed=self._spec.mixed,
            )
        else:  # links: batches hold the events of the stream subscribed to, from any stream
            self._state = SubscriptionState(
                checkpoint,
                self._spec.max_size,
                position=_event_number,
                stream_key=_one_stream,
                max_batch=self._spec.max_batch,
            )
        self._sent_before = checkpoint
        self._fence = checkpoint
        self._retries, self._replay_queued = {}, set()
        self._policy = CheckpointPolicy(
            checkpoint, self._spec.checkpoint_threshold, self._spec.checkpoint_after
        )

    def _start_position(self) -> int:
        start = self._spec.start_from
        if start == "origin":
            return 0
        if start == "current":
            if self._all:
                return self._lock.run(reader.last_event_id)
            stream = self._spec.stream_uuid
            return self._lock.run(lambda c: reader.stream_version(c, stream)) or 0
        if isinstance(start, int) and not isinstance(start, bool) and start >= 0:
            return start
        raise InvalidStartFromError(f"invalid start_from {start!r}")

    def cleanup(self) -> None:
        if self._ready is not None:  # the subscribe raises: the subscriber is told nothing
            error = StoreUnavailableError("the subscription stopped while starting")
            self._ready.set_exception(exc_info=(type(error), error, None))
            self._ready = None
            self._silent = True
        acked = self._final_acks()  # from now on, acks are stored by the handle
        if acked is not None and acked > max(self._unsaved_checkpoint or 0, self._policy.saved):
            self._unsaved_checkpoint = acked  # told after the end (which came right after it)
        try:
            self._flush_checkpoint()
        except Exception as exc:  # the acks since the last write will be delivered again
            self.log.warning("could not store the last checkpoint", error=str(exc))
        self._lock.release()

    def _final_acks(self) -> int | None:
        """The position the plain acks told so far complete (queued behind the stop, or told
        after the end), for the final write; the handle stores any told after this."""
        acked = self._control.final_acks()
        return None if self._in_transactions() else acked

    def after_exit(self) -> None:
        # After the supervisor was told, so that a subscriber resubscribing from inside its
        # tell() finds the name free.
        reason = self._control.finished(self._token)
        if reason is not None and not self._silent:
            tell_stopped(self._spec.subscriber, self._handle, reason)

    def _end(self, reason: str | None) -> None:
        """Deliver nothing more and stop; the subscriber is told `reason` (None: nothing)
        unless the subscription was closed before (first reason wins)."""
        if self._ended:
            return
        self._ended = True
        self._spec.health.ended(reason)
        self._control.close(reason)
        self._closing, self._state = self._state, None
        if reason is not None:
            self.log.warning("subscription stopped", reason=reason)
        self.actor_ref.stop(block=False)

    def _ack_on_close(self, message: Ack) -> None:
        """An ack told before the subscription closed (queued ahead of its stop): kept, so
        that the final write on stop stores it whatever the checkpoint tuning."""
        state = self._state or self._closing
        if state is None or message.subscription is not self._handle or message.in_transaction:
            return
        checkpoint = state.acked(message.position)
        if checkpoint is not None and not self._acks_in_transaction:
            self._note_checkpoint(checkpoint)

    def _lost(self, why: str) -> None:
        """The lock went with the connection: another process may hold the name now."""
        state, self._state = self._state, None
        self._nacks_to_redo = []  # their events come again after the checkpoint
        if state is not None:
            self._sent_before = state.last_sent
        self._lock.drop()
        self._relock = True
        self.log.warning("subscription lost its lock connection; reconnecting", error=why)
        if self._backoff == 0:
            self._reconnect()  # at once the first time: a killed backend is back in ms
        else:
            self._retry_later()

    def _retry_later(self) -> None:
        self._lock.drop()
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(_MAX_BACKOFF, max(self._backoff * 2, self._settings.tick_interval))

    # Messages ---------------------------------------------------------------------------------
    def handle(self, message: Any) -> Any:
        if isinstance(message, Tick):
            self._control.took_tick()
        elif isinstance(message, Published):
            self._control.took_events(len(message.events))
        elif isinstance(message, CatchUp):
            self._control.took_catch_up()
            self._catch_up_due, self._catch_up_lsn = True, None
        if isinstance(message, Ack) and (self._ended or self._control.closed):
            self._ack_on_close(message)
        if self._ended:
            return
        if self._control.closed:
            self._end(None)
            return
        if isinstance(message, StreamDeleted):
            self._end(_deleted(message.stream_uuid))
            return
        try:
            if isinstance(message, Tick):
                self._redo_nacks()
                self._tick()
            else:
                self._handle_state(message)
        except LockLost as exc:
            self._lost(str(exc))
        except Interrupted as exc:
            # Cancelled or timed out: the lock still holds; what failed (a read, a checkpoint
            # write, the park of a nacked event) is done again on a later tick, which pumps
            # the state again.
            self.log.warning("subscription statement interrupted; retrying", error=str(exc))
            if isinstance(message, Nack):
                self._nacks_to_redo.append(message)  # its event stays in flight until then
            intake = self._intake()
            if intake is not None:
                intake.must_recheck()
        self._spec.health.update(self._intake(), isinstance(message, (Ack, Nack)))

    def _intake(self) -> Intake[RecordedEvent] | None:
        """The state machine while the lock is held (None otherwise): the one both actors
        have (`ConcurrentSubscriptionActor` keeps its own elsewhere)."""
        return self._state

    def _redo_nacks(self) -> None:
        """The nacks whose park was interrupted, in order (a nack already done is ignored by
        the state); interrupted again, the first stays for a later tick."""
        while self._nacks_to_redo:
            self._handle_state(self._nacks_to_redo[0])
            self._nacks_to_redo.pop(0)

    def _handle_state(self, message: Any) -> None:
        state = self._state
        if state is None:  # not holding the lock (yet): nothing to deliver
            if (
                isinstance(message, Ack)
                and message.subscription is self._handle
                and not message.in_transaction
            ):
                # Acked what was sent before the lock was lost: stored once it is back.
                position = min(message.position, self._sent_before)
                if position > (self._unsaved_checkpoint or 0):
                    self._unsaved_checkpoint = position
            return
        if isinstance(message, Published):
            spec = self._spec
            if self._all:
                covered = message.covered
                events = [e for e in message.events if spec.matches(e)]
                events, failed = self._select_published(events)
                if failed is not None and covered is not None:
                    covered = (covered[0], failed.event_id - 1)
                self._settled(state.notified(events, covered))
            else:  # the publisher's view is $all's: event_number = event_id
                stream = spec.stream_uuid
                own = [_own(e) for e in message.events if e.stream_uuid == stream]
                # Filtered out: a gap, so the next matching event is read from storage.
                events, failed = self._select_published([e for e in own if spec.matches(e)])
                state.notified(events)
            if events and self._since is None:
                self._since = message.at
            if failed is not None:
                state.must_recheck()  # the end comes right after the last batch
        elif isinstance(message, Nack):
            if message.subscription is not self._handle:
                return
            self._nack(state, message)
        elif isinstance(message, ReplayParked):
            self._load_replay(state)
        elif isinstance(message, Resync):
            if message.subscription is not self._handle or message.stored <= state.checkpoint:
                return
            # Whatever is in flight was acked by another holder: go on after what it stored.
            self.log.warning("checkpoint acked elsewhere; resuming after it", stored=message.stored)
            self._begin(message.stored)
            self._load_replay(self._state)
            if self._state is not None:
                self._pump(self._state)
            return
        elif isinstance(message, Ack):
            if message.subscription is not self._handle:
                return
            replaying = state.replaying
            if replaying is not None and _position(replaying, self._all) == message.position:
                if message.in_transaction:
                    # The caller's transaction takes it off the parked list (iff it commits;
                    # a rollback leaves it parked, marked for replay: it comes again on the
                    # next start, like the events of a rolled-back ack).
                    self._acks_in_transaction = True
                    self._replay_ended(state)
                else:
                    self._replay_resolved(state, None)
                self._pump(state)
                return
            checkpoint = state.acked(message.position)
            if message.in_transaction:
                self._acks_in_transaction = True
                self._fence = max(self._fence, message.position)
                # The caller's transaction holds that checkpoint: never written here.
                unsaved = self._unsaved_checkpoint
                if unsaved is not None and unsaved <= message.position:
                    self._unsaved_checkpoint = None
                if checkpoint is not None and checkpoint > message.position:
                    # Filtered-out or deleted positions after it: stored here, once the
                    # caller's transaction has committed (see _flush_checkpoint).
                    self._note_checkpoint(checkpoint)
            elif checkpoint is not None:
                self._note_checkpoint(checkpoint)
                if self._checkpoint_due(acking=True):
                    self._flush_checkpoint()
        elif isinstance(message, CatchUp):
            state.must_recheck()
        elif not isinstance(message, _Pump):
            super().handle(message)
            return
        self._pump(state)

    def _pump(self, state: SubscriptionState[RecordedEvent]) -> None:
        while self._state is state and (action := state.next_action()) is not None:
            if isinstance(action, Send):
                replay = state.replaying
                self._control.sent(
                    _position(action.events[0], self._all),
                    state.last_sent,
                    None if replay is None else replay.event_id,
                )
                self._deliver(action.events)
            elif self._fatal is not None:
                self._end(self._fatal)  # everything before the bad event was sent
            else:
                if self._checkpoint_due(acking=False):
                    self._flush_checkpoint()
                events, covered = self._read(action)
                if self._state is not state:
                    return  # ended: its stream was deleted
                self._settled(state.read_done(events, action.limit, covered))
                if self._fatal is not None:
                    state.must_recheck()  # so that the end comes right after the last batch

    def _read(self, action: Read) -> tuple[list[RecordedEvent], int]:
        """The events from `action.start` on and how far the read covered (see
        `reader.read_all_covered`); an undecodable event cuts both short."""
        start, limit = action.start, action.limit
        types, prefix = self._spec.event_types, self._spec.stream_prefix
        if self._all:
            part = self._spec.partition
            rows, covered = self._covered(
                lambda c: reader.read_all_covered(
                    c, start, limit, event_types=types, stream_prefix=prefix, partition=part
                ),
                limit,
            )
        else:
            stream = self._spec.stream_uuid
            rows, covered, deleted = self._covered(
                lambda c: reader.read_stream_covered(c, stream, start, limit, event_types=types),
                limit,
            )
            if deleted:
                self._end(_deleted(stream))
                return [], start - 1
        events = self._decode(rows)
        if len(events) < len(rows):  # stop right before the bad event
            covered = events[-1].event_number if events else start - 1
        events, failed = self._select(events)
        if failed is not None:  # stop right before the event the selector failed on
            covered = failed.event_number - 1
        return events, covered

    def _covered(self, work: Callable[[Any], _R], limit: int) -> _R:
        """A covered read on the lock connection, or on the standby with `replica_dsn`.

        A standby's snapshot covers less while it lags: a short read whose cover stops
        before a position already notified (or seen as the head) would let the state machine
        go live too early, so the read is done again once the standby has replayed the
        primary's WAL position of now (that notification's commit is before it), waiting at
        most replica_max_lag, else on the primary: no busy loop, nothing missed.

        A `CatchUp` stands for events committed and not told (the publisher's flow control
        coalesced them, or a resync): their positions are not known here, but their commits
        are before the primary's WAL position of the first read after it, so the reads wait
        for that position until one is short (the one that would go live).
        """
        replica = self._spec.replica
        if replica is None:
            return self._lock.read(work)  # with shared_lock_session: from the read pool
        if self._catch_up_due:
            if self._catch_up_lsn is None:
                self._catch_up_lsn = self._lock.run(current_lsn)
            found = replica.run_at_least(work, self._catch_up_lsn, self._lock.run)
            if len(found[0]) < limit:
                self._catch_up_due, self._catch_up_lsn = False, None
            return found
        found = replica.run_at_least(work, 0, self._lock.run)
        want = self._seen_head
        intake = self._intake()
        if intake is not None:
            want = max(want, intake.max_notified)
        rows, covered = found[0], found[1]
        if len(rows) >= limit or covered >= want:
            return found
        lsn = self._lock.run(current_lsn)
        return replica.run_at_least(work, lsn, self._lock.run)

    def _select_published(
        self, events: list[RecordedEvent]
    ) -> tuple[list[RecordedEvent], RecordedEvent | None]:
        """`_select` for events from the publisher, where a failure is not final yet
        (`_fatal` is left as it was): the storage read that follows meets it again right
        after the events before it (a subscription catching up may not have taken those
        from the publisher: it reads them from storage), and ends the subscription then."""
        fatal = self._fatal
        try:
            return self._select(events)
        finally:
            self._fatal = fatal

    def _select(
        self, events: list[RecordedEvent]
    ) -> tuple[list[RecordedEvent], RecordedEvent | None]:
        """The events the selector keeps, up to the first it fails on (returned second;
        `_fatal` then says why). The others count as acked: their positions are covered."""
        selector = self._spec.selector
        if selector is None:
            return events, None
        kept: list[RecordedEvent] = []
        for event in events:
            try:
                if selector(event):
                    kept.append(event)
            except Exception as exc:
                self._fatal = f"the selector failed on event {event.event_id}: {exc!r}"
                return kept, event
        return kept, None

    # Nacks and the parked list ----------------------------------------------------------------
    def _nack(self, state: SubscriptionState[RecordedEvent], message: Nack) -> None:
        """Retry (later, alone; then park), skip or park one event of the batch in flight;
        the events before it count as acked, those after it are sent again."""
        replaying = state.replaying
        if replaying is not None:
            if _position(replaying, self._all) == message.position:
                self._control.replaying = None  # (sent again, if retried)
                self._nack_replayed(state, replaying, message)
            return
        position, action = message.position, message.action
        event = state.sent_event(position)
        if event is None:
            return  # not in flight (acked already, or from an earlier batch)
        retries = self._retries.get(position, 0)
        if action == "retry":
            if retries < self._spec.max_retries:
                self._retries[position] = retries + 1
                self._moved(state.nacked(position, resolved=False))
                self._retry_later_or_now(state)
                return
            action = "park"
        if action == "park":
            self._park(event, message.reason, retries)
        self._retries.pop(position, None)
        self._moved(state.nacked(position, resolved=True))

    def _nack_replayed(
        self, state: SubscriptionState[RecordedEvent], event: RecordedEvent, message: Nack
    ) -> None:
        key = -event.event_id  # replayed events count apart from new ones
        retries = self._retries.get(key, 0)
        if message.action == "retry" and retries < self._spec.max_retries:
            self._retries[key] = retries + 1
            state.replay_done(retry=True)
            self._retry_later_or_now(state)
            return
        if message.action == "skip":
            self._replay_resolved(state, None)
            return
        self._park(event, message.reason, retries)  # also ends its replay
        self._retries.pop(key, None)  # after: an interrupted park is redone with its count
        self._replay_queued.discard(event.event_id)
        state.replay_done()

    def _replay_resolved(self, state: SubscriptionState[RecordedEvent], _: None) -> None:
        """The replayed event in flight was acked (or skipped): off the parked list."""
        event = self._replay_ended(state)
        if event is None:
            return
        self._replay_queued.discard(event.event_id)
        stream, name, event_id = self._spec.stream_uuid, self._spec.name, event.event_id
        self._lock.run(lambda c: parked.forget(c, stream, name, event_id))

    def _replay_ended(self, state: SubscriptionState[RecordedEvent]) -> RecordedEvent | None:
        """The replayed event in flight is done with (returned), its parked row left as is."""
        self._control.replaying = None
        event = state.replay_done()
        if event is not None:
            self._retries.pop(-event.event_id, None)
        return event

    def _retry_later_or_now(self, state: SubscriptionState[RecordedEvent]) -> None:
        delay = self._spec.retry_delay
        self._resume_at = time.monotonic() + delay
        if delay <= 0:
            state.resume()

    def _park(self, event: RecordedEvent, reason: str | None, retries: int) -> None:
        """Stored before the checkpoint may pass it: a parked event is never lost."""
        stream, name, event_id = self._spec.stream_uuid, self._spec.name, event.event_id
        self._lock.run(lambda c: parked.park(c, stream, name, event_id, reason, retries))
        self.log.info("event parked", event_id=event_id, retries=retries)

    def _moved(self, checkpoint: int | None) -> None:
        """A nack moved the checkpoint (the events before it are acked): stored like acks."""
        if checkpoint is not None:
            self._note_checkpoint(checkpoint)
            if self._checkpoint_due(acking=True):
                self._flush_checkpoint()

    def _load_replay(self, state: SubscriptionState[RecordedEvent] | None) -> None:
        """Queue the parked events marked for replay (by this or another store) that are
        not queued yet."""
        if state is not None and (events := self._parked_to_replay()):
            state.replay(events)

    def _parked_to_replay(self) -> list[RecordedEvent]:
        """The parked events marked for replay that are not queued yet, now marked queued."""
        stream, name = self._spec.stream_uuid, self._spec.name
        found = self._lock.read(lambda c: parked.rows(c, stream, name, replay_only=True))
        fresh = [row for row, *_ in found if row[0] not in self._replay_queued]
        if not fresh:
            return []
        events = self._decode(fresh)
        self._replay_queued.update(e.event_id for e in events)
        return events

    def _settled(self, checkpoint: int | None) -> None:
        """The state moved its checkpoint over filtered-out or deleted positions: stored like
        an ack (acked in callers' transactions: fenced, see `_flush_checkpoint`)."""
        if checkpoint is not None:
            self._note_checkpoint(checkpoint)
            if self._policy.tuned and self._checkpoint_due(acking=False):
                self._flush_checkpoint()

    def _note_checkpoint(self, checkpoint: int) -> None:
        """The state moved its checkpoint (acks, or covered empty positions): to be stored."""
        self._unsaved_checkpoint = checkpoint
        self._policy.moved(time.monotonic())

    def _checkpoint_due(self, *, acking: bool) -> bool:
        return self._policy.due(self._unsaved_checkpoint, time.monotonic(), acking=acking)

    def _decode(self, rows: list[reader.Row]) -> list[RecordedEvent]:
        """The events before the first undecodable one (then `_fatal` says which)."""
        serializer = self._settings.serializer
        try:
            return reader.decode(rows, serializer)
        except Exception:
            good: list[RecordedEvent] = []
            for row in rows:
                try:
                    good.extend(reader.decode([row], serializer))
                except Exception as exc:
                    self._fatal = f"event {row[0]} of type {row[3]!r} cannot be decoded: {exc}"
                    break
            return good

    def _mapped(self, events: list[RecordedEvent]) -> tuple[list[Any], str | None]:
        """What to send for `events` (the mapper's results, if any), and why it stopped early:
        a mapper failing on an event gives the results before it. LockLost first: nothing is
        sent once the lock connection is gone."""
        if not self._lock.alive():
            raise LockLost("the lock connection is gone")
        mapper = self._spec.mapper
        if mapper is None:
            return events, None
        payload: list[Any] = []
        for event in events:
            try:
                payload.append(mapper(event))
            except Exception as exc:
                return payload, f"the mapper failed on event {event.event_id}: {exc!r}"
        return payload, None

    def _deliver(self, events: list[RecordedEvent]) -> None:
        """Send one batch; a mapper failing on an event sends the events before it, then
        ends the subscription."""
        payload, failure = self._mapped(events)
        if payload:
            self._registry.metrics.delivered(len(payload), self._since)
            self._since = None
            try:
                self._tell(Events(self._handle, payload))
            except pykka.ActorDeadError:
                self._end("the subscriber stopped")
                return
            except Exception as exc:
                self._end(f"the subscriber's tell() failed: {exc!r}")
                return
        if failure is not None:
            self._end(failure)

    def _tell(self, message: Any) -> None:
        """Tell the subscriber, unless the subscription was closed meanwhile (possibly from
        inside the previous tell: then it ends here, at once)."""
        if self._control.closed:
            self._end(None)
            return
        self._spec.subscriber.tell(message)
        if self._control.closed:
            self._end(None)

    def _flush_checkpoint(self) -> None:
        """Store the last ack, if not stored yet. Acks are coalesced as `CheckpointPolicy`
        says (callers ask it first), plus a final write on stop; a crash in between only
        means those events are delivered again."""
        position = self._unsaved_checkpoint
        if position is None or not self._lock.locked:
            return
        stream, name = self._spec.stream_uuid, self._spec.name
        if self._in_transactions():
            # Acked in callers' transactions, which hold the row until they commit: the
            # positions no ack of theirs covers (filtered-out, deleted or nacked events) are
            # stored once their acks seen here are committed (the row reached the fence),
            # never waiting on the row, and never past an ack whose transaction rolled back.
            fence = self._fence
            stored = self._lock.run(
                lambda c: checkpoints.advance_fenced(c, stream, name, position, fence)
            )
            if stored is None:
                return  # a transaction holds the row: tried again on the next tick
            self._unsaved_checkpoint = None
            if stored:
                self._policy.written(position, time.monotonic())
            return
        if isinstance(self._lock, SharedLockSession):
            self._lock.advance(stream, name, position)  # batched with the others' writes
        else:
            self._lock.run(lambda c: checkpoints.advance(c, stream, name, position))
        self._unsaved_checkpoint = None
        self._policy.written(position, time.monotonic())

    def _in_transactions(self) -> bool:
        """Whether the subscriber acks in its own transactions (`ack(..., conn=)`)."""
        return self._acks_in_transaction or self._control.acks_in_transaction

    def _tick(self) -> None:
        if not subscriber_alive(self._spec.subscriber):
            self._end("the subscriber stopped")
            return
        now = time.monotonic()
        if self._state is None:
            if now >= self._retry_at:
                self._reconnect()
            return
        if self._checkpoint_due(acking=False):
            self._flush_checkpoint()
        state = self._state
        if state.paused and now >= self._resume_at:
            state.resume()  # a retry's delay passed
        if now >= self._next_health_check:  # a round trip: also finds half-open sockets
            self._next_health_check = now + _HEALTH_INTERVAL
            self._load_replay(state)  # replay_parked called by another process
            if self._state is not state:
                return
            head = self._head()
            self._seen_head = head
            if self._state is not state:
                return  # ended: its stream was deleted
            if head > state.cursor:
                # A backstop, whatever the notifications did: storage holds more than this
                # subscription has seen, so it reads it (at most one health interval late).
                state.must_recheck()
        elif not self._lock.alive():  # no round trip unless the socket has something to say
            raise LockLost("the lock connection is gone")
        self._pump(state)  # also redoes a read or a send an interruption left undone

    def _head(self) -> int:
        """The last position in storage; a stream subscription whose stream is soft-deleted,
        or whose checkpoint row a hard delete removed, ends instead (a backstop for a lost
        notification)."""
        if self._all:
            return self._lock.head(None)
        stream, name = self._spec.stream_uuid, self._spec.name
        version, deleted, kept = self._lock.read(lambda c: deletes.watch(c, stream, name))
        if deleted or (not kept and version == 0):
            self._end(_deleted(stream))
        elif not kept:
            self._end(
                "the subscription's checkpoint was deleted (its stream was deleted, or "
                "delete_subscription was called by another store)"
            )
        return version

    def _reconnect(self) -> None:
        if self._backoff == 0:
            self._backoff = self._settings.tick_interval  # the next failure waits
        try:
            self._connect_and_start()
        except (StoreUnavailableError, LockLost) as exc:
            self.log.warning("subscription still waiting for the database", error=str(exc))
            self._retry_later()


def _deleted(stream_uuid: str) -> str:
    return f"the stream {stream_uuid!r} was deleted"


def _position(event: RecordedEvent, all_streams: bool) -> int:
    return event.event_id if all_streams else event.event_number


def _event_number(event: RecordedEvent) -> int:
    return event.event_number


def _one_stream(event: RecordedEvent) -> str:
    return ""


def _own(event: RecordedEvent) -> RecordedEvent:
    """A published event as its own stream reads it: event_number = stream_version."""
    if event.event_number == event.stream_version:
        return event
    copy = object.__new__(RecordedEvent)
    copy.__dict__.update(event.__dict__, event_number=event.stream_version)
    return copy
