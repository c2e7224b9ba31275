"""The subscription actor: drives a subscription's state machine with storage, its
subscribers and a lock. One class for every durable subscription: a single subscriber, a
consumer group's partition and competing consumers differ only by data (`delivery.Delivery`)
and the state machine it picks; its subscribers are `members`.

A session-level advisory lock makes the actor the only subscriber of its name across every
process sharing the database: on the store's shared lock connection (`hub`, the default) or on
a dedicated one (`lock.LockSession`, with `shared_lock_session=False`). Losing the connection
loses the lock: the actor stops delivering at once, drops its state and, on its ticks,
reconnects with back-off, takes the lock again (waiting while another process holds it) and
resumes after the checkpoint. That is never counted as a crash.

A subscription that ends for any reason but its subscriber's own unsubscribe or delete tells
its subscribers `SubscriptionStopped`, then nothing more (see `Control`).

Catch-up reads: `reading.py`; a batch is delivered in `_deliver`; acks and nacks: `acking.py`.
"""

from __future__ import annotations

import random
import time
from typing import Any

import pykka

from .. import tracing
from ..actors.registry import Registry
from ..actors.supervised import SupervisedActor
from ..actors.ticker import Tick
from ..config import Settings
from ..errors import StoreUnavailableError, SubscriptionAlreadyExistsError
from ..events import RecordedEvent
from ..lifecycle.encryption import keyring_of
from ..lifecycle.handout import forgotten_since
from ..notifications.messages import CatchUp, Published, StreamDeleted
from ..storage import checkpoints
from . import ticking
from .acking import Acking
from .concurrent import ConcurrentState, Deliver
from .delivery import Delivery, mapped, subscriber_alive, tell_stopped
from .direct import Direct
from .health import is_error
from .hub import SharedLockSession
from .inbox import Ack, Attach, Detach, Nack, Pump, ReplayParked, Resync
from .info import lock_key
from .level import LevelHooks
from .lock import Interrupted, LockLost, LockSession
from .members import Member, Members
from .messages import Events, Subscribed, Subscription
from .nacks import Nacks
from .reading import Reads, deleted, position, start_position
from .saving import CheckpointSaver
from .spec import SubscriptionSpec
from .state import Read, Send, SubscriptionState
from .ticking import Ticking

__all__ = ["SubscriptionActor", "SubscriptionSpec"]

#: Seconds between attempts to take a lock another session holds; for a consumer group's
#: partition, whose previous holder lets go of it when the group rebalances, 0.1 s.
_LOCK_RETRY, _GROUP_LOCK_RETRY = 0.5, 0.1
#: A first subscribe retries a held lock this long (a closed backend may still hold it).
_SUBSCRIBE_LOCK_WAIT = 0.5
#: Longest back-off between reconnects after the lock connection was lost.
_MAX_BACKOFF = 2.0

_State = SubscriptionState[RecordedEvent] | ConcurrentState[RecordedEvent]


class SubscriptionActor(LevelHooks, Ticking, SupervisedActor):
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
        self._delivery = Delivery.of(spec)
        self._control = spec.control
        self._registry = registry
        self._handle = handle
        self._ready = ready  # set only for the first start: the subscribe call waits on it
        key = lock_key(settings.schema, spec.stream_uuid, spec.name)
        self._lock: LockSession | SharedLockSession = (
            LockSession(settings, key)
            if spec.hub is None
            else SharedLockSession(spec.hub, key, spec.pool, (spec.stream_uuid, spec.name))
        )
        self._reads = Reads(spec, settings, self._lock, self._delivery.partition_by)
        self._saver = CheckpointSaver(spec, self._lock, self._control, settings.schema)
        self._nacks = Nacks(spec, self._lock, self._control, self.log, self._reads.decode)
        self._acking = Acking(self._saver, self._nacks, self._control, self._reads.all)
        self._state: _State | None = None
        self._closing: _State | None = None  # the state at _end
        self._token = 0
        self._ended = False
        self._silent = False  # the subscribe call failed: tell the subscriber nothing
        self._next_health_check = 0.0
        self._retry_at = 0.0
        self._backoff = 0.0
        self._sent_before = 0  # last position sent before the lock was lost
        self._all = spec.stream_uuid == checkpoints.ALL_STREAMS
        self._since: float | None = None  # Published.at of the oldest event not yet told
        self._relock = False  # the lock connection was lost: retaking it is a reconnect
        self._idle = False  # the last pump left nothing to do (see `_rest`)
        self._members = Members(self._control)
        # A restart after a crash keeps the members of the previous instance.
        for subscriber, member_handle, buffer_size in list(self._control.members) or [
            (spec.subscriber, handle, spec.buffer_size)
        ]:
            self._members.add(subscriber, member_handle, buffer_size, None)
        self._traces = tracing.Deliveries(spec.name, self._all)  # spans when tracing
        # Batches and acks taken on other threads while level (see direct.py).
        self._direct = Direct(self.actor_urn, self.handle, self._crash)
        self._inner_ack: int | None = None  # see LevelHooks._ack_direct
        self._nacks_seen = 0  # nacks of the handle's handled (see LevelHooks._settles)
        self._keyring = keyring_of(settings.serializer)  # see handout.forgotten_since
        self._direct_ok = self._all and spec.hub is not None and not self._delivery.shared

    # Lifecycle --------------------------------------------------------------------------------
    def register(self) -> None:
        # Findable before anything is delivered: an ack told at once must reach this actor.
        self._token = self._control.started()
        self._nacks_seen = self._control.nacks_told  # those told before died with the last
        if self._direct_ok:
            self._control.direct = self._take_direct
            self._control.direct_ack = self._ack_direct
        self._registry.put(self.child_id, self.actor_ref, self._control)

    def on_receive(self, message: Any) -> Any:
        with self._direct.own():
            return super().on_receive(message)

    def setup(self) -> None:
        with self._direct.own():
            self._setup()

    def _setup(self) -> None:
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
            self._retry_at = time.monotonic() + self._lock_retry()
            return  # another holder: retried on the ticks
        self._start_locked()

    def _lock_retry(self) -> float:
        return _LOCK_RETRY if self._spec.partition is None else _GROUP_LOCK_RETRY

    def _stand_by(self) -> None:
        """Another process holds the name: return now; `Subscribed` once a tick takes it."""
        assert self._ready is not None
        self._ready.set(self._handle)
        self._ready = None
        self._retry_at = time.monotonic() + self._lock_retry()
        self.log.info("subscription standing by: another process holds the name")

    def _start_locked(self) -> None:
        stream, name = self._spec.stream_uuid, self._spec.name
        stored = self._saver.stored()
        first = self._ready is not None
        if first and not subscriber_alive(self._spec.subscriber):
            raise ValueError("the subscriber is not running (a stopped actor?)")
        checkpoint = self._saver.start(stored, lambda: start_position(self._lock, self._spec))
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
        interval = ticking.HEALTH_INTERVAL
        if self._spec.hub is not None:  # many on one store: spread their checks over time
            interval *= 0.5 + random.random() / 2
        self._next_health_check = time.monotonic() + interval
        self.log.info("subscription started", checkpoint=checkpoint)
        if self._relock:
            self._relock = False
            self._registry.metrics.count("reconnects_total", connection="subscription")
        self._nacks.load_replay(self._state)
        self.actor_ref.tell(Pump())

    def _begin(self, checkpoint: int) -> None:
        """A fresh state machine after the stored `checkpoint`."""
        self._state = self._delivery.new_state(
            self._spec, checkpoint, self._members.numbers(), self._reads.key_of
        )
        self._sent_before = checkpoint
        self._reads.discard()  # what was read ahead was for the state machine before
        self._nacks.reset()
        self._saver.restart(checkpoint)

    def cleanup(self) -> None:
        with self._direct.own():
            self._cleanup()

    def _cleanup(self) -> None:
        control = self._control
        if control.direct == self._take_direct:  # not a later instance's
            control.direct = control.direct_ack = None
        self._traces.close()
        if self._control.closed:  # unsubscribed (stopped with no message since): not watched
            self._spec.health.ended(self._control.reason)
        if self._ready is not None:  # the subscribe raises: the subscriber is told nothing
            error = StoreUnavailableError("the subscription stopped while starting")
            self._ready.set_exception(exc_info=(type(error), error, None))
            self._ready = None
            self._silent = True
        saver = self._saver
        # From now on, acks are stored by the handles.
        state = self._state or self._closing
        acked = self._acking.final(state, self._members.ids, shared=self._delivery.shared)
        if acked is not None and acked > max(saver.unsaved or 0, saver.policy.saved):
            saver.unsaved = acked  # told after the end (which came right after it)
        try:
            saver.flush()
        except Exception as exc:  # the acks since the last write will be delivered again
            self.log.warning("could not store the last checkpoint", error=str(exc))
        self._reads.close()
        self._lock.release()

    def after_exit(self) -> None:
        # After the supervisor was told, so that a subscriber resubscribing from inside its
        # tell() finds the name free.
        reason = self._control.finished(self._token)
        if reason is not None and not self._silent:
            for found in self._members:
                tell_stopped(found.subscriber, found.handle, reason)

    def _end(self, reason: str | None) -> None:
        """Deliver nothing more and stop; the subscribers are told `reason` (None: nothing)
        unless the subscription was closed before (first reason wins)."""
        if self._ended:
            return
        self._ended = True
        self._spec.health.ended(reason)
        self._control.close(reason)
        self._closing, self._state = self._state, None
        if reason is not None:
            say = self.log.warning if is_error(reason) else self.log.info  # see health
            say("subscription stopped", reason=reason)
        self.actor_ref.stop(block=False)

    def _lost(self, why: str) -> None:
        """The lock went with the connection: another process may hold the name now."""
        state, self._state = self._state, None
        self._nacks.to_redo = []  # their events come again after the checkpoint
        self._reads.discard()
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

    def _reconnect(self) -> None:
        if self._backoff == 0:
            self._backoff = self._settings.tick_interval  # the next failure waits
        try:
            self._connect_and_start()
        except (StoreUnavailableError, LockLost) as exc:
            self.log.warning("subscription still waiting for the database", error=str(exc))
            self._retry_later()

    # Members ----------------------------------------------------------------------------------
    def _remove(self, member: int) -> None:
        """The member leaves; its events in flight go to the others. The last one leaving
        (a single subscriber: the one) ends the subscription (unsubscribed: silently; died:
        "the subscriber stopped")."""
        found = self._members.get(member)
        if found is None:
            return
        detached = self._members.detached(member)
        if self._delivery.shared:
            self._members.drop(member, found.handle, self._state)
            if len(self._members):
                return
        self._end(None if detached else "the subscriber stopped")

    def _prune(self) -> None:
        for member, found in self._members.items():
            if self._members.detached(member) or not subscriber_alive(found.subscriber):
                self._remove(member)

    def _attach(self, message: Attach) -> Any:
        if self._ended or self._control.closed:
            return None
        if len(self._members) >= self._delivery.limit:
            return "full"
        handle = message.handle
        member = self._members.add(message.subscriber, handle, message.buffer_size, self._state)
        if self._control.announced:
            try:
                message.subscriber.tell(Subscribed(handle))
            except Exception:
                self._members.drop(member, handle, self._state)
                return "dead"
        self.actor_ref.tell(Pump())
        return handle

    # Messages ---------------------------------------------------------------------------------
    def handle(self, message: Any) -> Any:
        answered = isinstance(message, (Ack, Nack))
        if isinstance(message, Ack):
            self._traces.acked(message.position, message.each)
        elif isinstance(message, Nack):
            self._traces.nacked(message.position)
            self._nacks_seen += 1
        try:
            return self._on_message(message)
        finally:  # see health.py: no I/O
            self._spec.health.update(self._state, answered, isinstance(message, Nack))

    def _on_message(self, message: Any) -> Any:
        if not isinstance(message, Tick) and not self._direct.given:
            # What it brings may need the next ticks (a direct batch does not: see
            # `_ack_direct` for a direct ack).
            self._control.quiet_until = 0.0
        if isinstance(message, Attach):
            return self._attach(message)
        if isinstance(message, Detach):
            member = self._members.of(message.handle)
            if member is not None and not self._ended:
                self._remove(member)
                if not self._ended:
                    self.actor_ref.tell(Pump())  # its events go to the others
            return True
        if isinstance(message, Tick):
            self._control.took_tick()
        elif isinstance(message, Published) and not self._direct.given:
            self._control.took_events(len(message.events))
        elif isinstance(message, CatchUp):
            self._control.took_catch_up()
            self._reads.catch_up_due, self._reads.catch_up_lsn = True, None
        if isinstance(message, Ack) and (self._ended or self._control.closed):
            # Told before the subscription closed (queued ahead of its stop): kept, so that
            # the final write on stop stores it whatever the checkpoint tuning.
            state, member = self._state or self._closing, self._members.of(message.subscription)
            if state is not None and member is not None:
                self._acking.on_close(state, member, message)
        if self._ended:
            return
        if self._control.closed:
            self._end(None)
            return
        if isinstance(message, StreamDeleted):
            self._end(deleted(message.stream_uuid))
            return
        try:
            if isinstance(message, Tick):
                self._redo_nacks()
                self._tick()
                self._rest()
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
                self._nacks.to_redo.append(message)  # its event stays in flight until then
            if self._state is not None:
                self._state.must_recheck()

    def _redo_nacks(self) -> None:
        """The nacks whose park was interrupted, in order (a nack already done is ignored by
        the state); interrupted again, the first stays for a later tick."""
        redo = self._nacks.to_redo
        while redo:
            self._handle_state(redo[0])
            redo.pop(0)

    def _handle_state(self, message: Any) -> None:
        state = self._state
        if state is None:  # not holding the lock (yet): nothing to deliver
            if (
                isinstance(message, Ack)
                and not self._delivery.shared
                and message.subscription is self._handle
            ):
                self._acking.without_lock(message, self._sent_before)
            return
        if isinstance(message, Published):
            took, settled = self._reads.published(state, message)
            self._saver.settled(settled)
            if took and self._since is None:
                self._since = message.at
        elif isinstance(message, (Ack, Nack)):
            member = self._members.of(message.subscription)
            if member is None:
                return  # a handle from an earlier subscribe of the name, or a member gone
            if isinstance(message, Ack):  # per event or cumulative, see acking.py
                self._acking.ack(state, member, message)
            else:  # see nacks.py
                self._acking.nack(state, member, message)
        elif isinstance(message, ReplayParked):
            self._nacks.load_replay(state)
        elif isinstance(message, Resync):
            if message.subscription is not self._handle or message.stored < state.checkpoint:
                return
            if message.stored == state.checkpoint and not (message.latest and state.in_flight):
                return  # a stale copy's ack was refused: what is in flight stands
            # Whatever is in flight was acked by another holder, or through an earlier copy
            # (the rest of it, refused, was rolled back): go on after what is stored.
            self.log.warning("checkpoint acked elsewhere; resuming after it", stored=message.stored)
            self._begin(message.stored)
            self._nacks.load_replay(self._state)
            if self._state is not None:
                self._pump(self._state)
            return
        elif isinstance(message, CatchUp):
            state.must_recheck()
        elif not isinstance(message, Pump):
            super().handle(message)
            return
        self._pump(state)

    # Delivery ---------------------------------------------------------------------------------
    def _pump(self, state: _State) -> None:
        """Do what the state machine asks for until it waits: deliver batches, read storage."""
        self._prune()  # a dead member's events go to the others before anything else
        self._idle = False
        reads = self._reads
        while self._state is state and (action := state.next_action()) is not None:
            if isinstance(action, Read):
                if reads.fatal is not None:
                    if state.queued:  # the events before the bad one go out first
                        return
                    self._end(reads.fatal)  # everything before the bad event was sent
                    return
                if self._saver.due(acking=False):
                    self._saver.flush()
                found = reads.read(action, state)
                if found is None:
                    self._end(deleted(self._spec.stream_uuid))
                    return
                if self._state is not state:
                    return
                self._saver.settled(state.read_done(found[0], action.limit, found[1]))
                if reads.fatal is not None:
                    state.must_recheck()  # so that the end comes right after the last batch
                continue
            for member, events in self._batches(state, action):
                if self._state is not state:
                    return
                self._deliver(member, events)
        self._idle = self._state is state  # it waits: for acks, events or a retry

    def _batches(
        self, state: _State, action: Send[RecordedEvent] | Deliver[RecordedEvent]
    ) -> list[tuple[int, list[RecordedEvent]]]:
        """The batches to send now, by member; a single subscriber's is recorded as sent
        first (see `Control.sent`: acks in transactions are checked against it)."""
        keyring = self._keyring  # decoded before: see `handout.forgotten_since`
        if isinstance(action, Deliver):
            return [(member, forgotten_since(events, keyring)) for member, events in action.batches]
        assert isinstance(state, SubscriptionState)
        replay = state.replaying
        first = position(action.events[0], self._all)
        replay_of = None if replay is None else replay.event_id
        self._control.sent(first, state.last_sent, replay_of, action.events)
        # A subject forgotten since these were decoded (the batch waited for an ack) is not
        # handed out in clear; the objects told are recorded: an ack in a transaction that
        # names them is checked against this batch's floor (see `Control.delivery_of`).
        events = forgotten_since(action.events, keyring)
        if replay is None:
            self._control.delivering(events, first - 1, state.last_sent)
        return [(self._members.first(), events)]

    def _deliver(self, member: int, events: list[RecordedEvent]) -> None:
        """A batch is delivered: sent to one subscriber as `Events`. A mapper failing on an
        event sends the events before it, then ends the subscription."""
        found = self._members.get(member)
        if found is None:
            return
        if self._members.detached(member):
            self._remove(member)
            return
        batch, lock = self._direct.batch, self._lock
        # Nothing is sent once the lock connection is gone (a direct batch: as the hub's
        # one look for that batch found it, see direct.py).
        if not (
            lock.vouched(batch)
            if batch is not None and isinstance(lock, SharedLockSession)
            else lock.alive()
        ):
            raise LockLost("the lock connection is gone")
        payload, failure = mapped(self._spec.mapper, events)
        if payload:
            if self._control.closed:
                self._end(None)
                return
            self._registry.metrics.delivered(len(payload), self._since)
            self._since = None
            self._traces.delivered(events[: len(payload)])
            # The stall clock starts before the subscriber is told: a tell() that never
            # returns (a projection that hangs) is a stall too.
            self._spec.health.update(self._state, False)
            refused = self._told(found.subscriber, Events(found.handle, payload))
            if refused is not None:
                self._refused(member, found, refused)
                return
            if self._control.closed:  # unsubscribed from inside that tell()
                self._end(None)
                return
        if failure is not None:
            self._end(failure)

    def _refused(self, member: int, found: Member, exc: Exception) -> None:
        """A subscriber's tell() failed (stopped actor: ActorDeadError). A single one ends
        the subscription; a competing consumer leaves (told why, unless it stopped)."""
        dead = isinstance(exc, pykka.ActorDeadError)
        why = "the subscriber stopped" if dead else f"the subscriber's tell() failed: {exc!r}"
        if not self._delivery.shared:
            self._end(why)
            return
        self._remove(member)
        if not dead:
            tell_stopped(found.subscriber, found.handle, why)

    def _tell(self, message: Any) -> None:
        """Tell the subscriber, unless the subscription was closed meanwhile (possibly from
        inside the previous tell: then it ends here, at once)."""
        if self._control.closed:
            self._end(None)
            return
        self._spec.subscriber.tell(message)
        if self._control.closed:
            self._end(None)
