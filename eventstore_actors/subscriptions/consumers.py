"""Competing consumers: the subscription actor when `concurrency_limit > 1`.

The same actor as `SubscriptionActor` (one per name, its lock, its reads, its checkpoints,
nacks and the parked list), driving a `ConcurrentState` instead of a `SubscriptionState`:
several subscribers of this store ("members", each with its own `Subscription` handle)
share the events, each holding up to its `buffer_size` events in flight, acks are per event
and the stored checkpoint is the highest position at or below which everything is acked.

A subscribe of the same name in this store attaches a member (`Attach`); `handle.unsubscribe()`
removes one (`Control.detached`, checked before every tell, then `Detach`). A member that dies
(or whose tell() fails) leaves too; its events in flight go to the others. When the last one
leaves, the subscription ends as a single one does. After a restart or a lost lock, events
acked above the stored checkpoint are delivered again (at least once).
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import pykka

from ..actors.registry import Registry
from ..config import Settings
from ..events import RecordedEvent
from ..notifications.publisher import CatchUp, Published
from ..storage import parked
from . import actor
from .actor import (
    Ack,
    Nack,
    ReplayParked,
    SubscriptionActor,
    SubscriptionSpec,
    _own,
    _Pump,
    subscriber_alive,
    tell_stopped,
)
from .checkpointing import CheckpointPolicy
from .concurrent import ConcurrentState, Deliver
from .intake import Intake
from .lock import LockLost
from .messages import Events, Subscribed, Subscription
from .state import SubscriptionState

__all__ = ["Attach", "ConcurrentSubscriptionActor", "Detach"]


@dataclass(frozen=True)
class Attach:
    """Asked by a subscribe of the name in this store: add a member. Replies the handle,
    "full" (the limit is reached), "dead" (its tell failed) or None (the subscription is
    ending)."""

    subscriber: Any
    handle: Subscription
    buffer_size: int


@dataclass(frozen=True)
class Detach:
    """The member with this handle unsubscribed."""

    handle: Subscription


@dataclass
class _Member:
    subscriber: Any
    handle: Subscription
    buffer_size: int


class ConcurrentSubscriptionActor(SubscriptionActor):
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
        super().__init__(supervisor, child_id, settings, spec, handle, ready, registry)
        self._members: dict[int, _Member] = {}
        self._ids: dict[Subscription, int] = {}  # handle (by identity) -> member
        self._next_member = 0
        self._cs: ConcurrentState[RecordedEvent] | None = None
        self._cs_closing: ConcurrentState[RecordedEvent] | None = None
        self._retry_due: dict[int, float] = {}  # position -> when its retry may go out
        self._keys: dict[int, Hashable] = {}  # position -> partition key (computed on intake)
        # A restart after a crash keeps the members of the previous instance.
        for subscriber, member_handle, buffer_size in list(self._control.members) or [
            (spec.subscriber, handle, spec.buffer_size)
        ]:
            self._add(subscriber, member_handle, buffer_size)

    # Members ----------------------------------------------------------------------------------
    def _add(self, subscriber: Any, handle: Subscription, buffer_size: int) -> int:
        member = self._next_member
        self._next_member += 1
        self._members[member] = _Member(subscriber, handle, buffer_size)
        self._ids[handle] = member
        if all(m[1] is not handle for m in self._control.members):
            self._control.members.append((subscriber, handle, buffer_size))
        if self._cs is not None:
            self._cs.add_member(member, buffer_size)
        return member

    def _remove(self, member: int) -> None:
        """The member leaves; its events in flight go to the others. The last one leaving
        ends the subscription (unsubscribed: silently; died: as a single subscriber's)."""
        found = self._members.pop(member, None)
        if found is None:
            return
        self._ids.pop(found.handle, None)
        self._control.members = [m for m in self._control.members if m[1] is not found.handle]
        if self._cs is not None:
            self._cs.remove_member(member)
        if not self._members:
            detached = found.handle in self._control.detached
            self._end(None if detached else "the subscriber stopped")

    def _prune(self) -> None:
        for member, found in list(self._members.items()):
            if found.handle in self._control.detached or not subscriber_alive(found.subscriber):
                self._remove(member)

    def _attach(self, message: Attach) -> Any:
        if self._ended or self._control.closed:
            return None
        if len(self._members) >= self._spec.concurrency_limit:
            return "full"
        member = self._add(message.subscriber, message.handle, message.buffer_size)
        if self._control.announced:
            try:
                message.subscriber.tell(Subscribed(message.handle))
            except Exception:
                self._members.pop(member, None)
                self._ids.pop(message.handle, None)
                self._control.members = [
                    m for m in self._control.members if m[1] is not message.handle
                ]
                if self._cs is not None:
                    self._cs.remove_member(member)
                return "dead"
        self.actor_ref.tell(_Drive())
        return message.handle

    # Overrides --------------------------------------------------------------------------------
    def handle(self, message: Any) -> Any:
        if isinstance(message, Attach):
            return self._attach(message)
        if isinstance(message, Detach):
            member = self._ids.get(message.handle)
            if member is not None and not self._ended:
                self._remove(member)
                if not self._ended:
                    self.actor_ref.tell(_Drive())  # its events go to the others
            return True
        return super().handle(message)

    def _begin(self, checkpoint: int) -> None:
        self._sent_before = checkpoint
        self._retries, self._replay_queued = {}, set()
        self._policy = CheckpointPolicy(
            checkpoint, self._spec.checkpoint_threshold, self._spec.checkpoint_after
        )
        keys = self._keys
        all_streams = self._all
        self._cs = ConcurrentState(
            checkpoint,
            self._spec.max_size,
            position=_event_id if all_streams else _event_number,
            key=None
            if self._spec.partition_by is None
            else (lambda e: keys.pop(e.event_id if all_streams else e.event_number, None)),
        )
        self._retry_due = {}
        for member, found in self._members.items():
            self._cs.add_member(member, found.buffer_size)

    def _intake(self) -> Intake[RecordedEvent] | None:
        return self._cs

    def _load_replay(self, state: SubscriptionState[RecordedEvent] | None) -> None:
        if self._cs is not None and (events := self._parked_to_replay()):
            self._cs.replay(events)

    def _select(
        self, events: list[RecordedEvent]
    ) -> tuple[list[RecordedEvent], RecordedEvent | None]:
        """As the single subscriber's, plus the partition keys (a failing `partition_by`
        cuts the events there, as a failing selector does)."""
        kept, failed = super()._select(events)
        partition_by = self._spec.partition_by
        if partition_by is None:
            return kept, failed
        keys = self._keys
        if len(keys) > 2 * self._spec.max_size and self._cs is not None:
            cursor = self._cs.cursor
            for stale in [p for p in keys if p <= cursor]:
                del keys[stale]
        for index, event in enumerate(kept):
            try:
                key = partition_by(event)
                hash(key)
            except Exception as exc:
                self._fatal = f"partition_by failed on event {event.event_id}: {exc!r}"
                return kept[:index], event
            if key is not None:
                keys[event.event_id if self._all else event.event_number] = key
        return kept, failed

    def _end(self, reason: str | None) -> None:
        if self._ended:
            return
        self._cs_closing, self._cs = self._cs, None
        super()._end(reason)

    def _lost(self, why: str) -> None:
        self._cs = None
        super()._lost(why)

    def _ack_on_close(self, message: Ack) -> None:
        state = self._cs or self._cs_closing
        member = self._ids.get(message.subscription)
        if state is None or member is None:
            return
        checkpoint, _ = state.acked(member, message.each or (message.position,))
        if checkpoint is not None:
            self._note_checkpoint(checkpoint)

    def _final_acks(self) -> int | None:
        """The checkpoint that the per-event acks told since the subscription closed complete
        (applied to its last state, as those told after the final write: `Control.each_ack`)."""
        state = self._cs or self._cs_closing
        ids = dict(self._ids)

        def apply(handle: Any, positions: tuple[int, ...]) -> int | None:
            member = ids.get(handle)
            if state is None or member is None:
                return None
            return state.acked(member, positions)[0]

        return self._control.final_each(apply)

    def after_exit(self) -> None:
        reason = self._control.finished(self._token)
        if reason is not None and not self._silent:
            for found in self._members.values():
                tell_stopped(found.subscriber, found.handle, reason)

    def _handle_state(self, message: Any) -> None:
        state = self._cs
        if state is None:  # not holding the lock: acks are lost, their events come again
            return
        if isinstance(message, Ack):
            member = self._ids.get(message.subscription)
            if member is None:
                return
            checkpoint, replayed = state.acked(member, message.each or (message.position,))
            for event in replayed:
                self._forget_parked(event)
            if checkpoint is not None:
                self._note_checkpoint(checkpoint)
                if self._checkpoint_due(acking=True):
                    self._flush_checkpoint()
        elif isinstance(message, Published):
            spec = self._spec
            if self._all:
                covered = message.covered
                events = [e for e in message.events if spec.matches(e)]
                events, failed = self._select_published(events)
                if failed is not None and covered is not None:
                    covered = (covered[0], failed.event_id - 1)
                self._settled(state.notified(events, covered))
            else:
                stream = spec.stream_uuid
                own = [_own(e) for e in message.events if e.stream_uuid == stream]
                events, failed = self._select_published([e for e in own if spec.matches(e)])
                state.notified(events)
            if events and self._since is None:
                self._since = message.at
            if failed is not None:
                state.must_recheck()
        elif isinstance(message, Nack):
            self._nack_one(state, message)
        elif isinstance(message, ReplayParked):
            self._load_replay(None)
        elif isinstance(message, CatchUp):
            state.must_recheck()
        elif not isinstance(message, (_Drive, _Pump)):
            return
        self._drive()

    def _tick(self) -> None:
        self._prune()
        if self._ended:
            return
        now = time.monotonic()
        state = self._cs
        if state is None:
            if now >= self._retry_at:
                self._reconnect()
            return
        if self._checkpoint_due(acking=False):
            self._flush_checkpoint()
        for position, due in list(self._retry_due.items()):
            if now >= due:
                del self._retry_due[position]
                state.resume(position)
        if now >= self._next_health_check:
            self._next_health_check = now + actor._HEALTH_INTERVAL
            self._load_replay(None)
            if self._cs is not state:
                return
            head = self._head()
            self._seen_head = head
            if self._cs is not state:
                return
            if head > state.cursor:
                state.must_recheck()
        elif not self._lock.alive():
            raise LockLost("the lock connection is gone")
        self._drive()

    # Delivery ---------------------------------------------------------------------------------
    def _drive(self) -> None:
        self._prune()  # a dead member's events go to the others before anything else
        state = self._cs
        while state is not None and self._cs is state and (action := state.next_action()):
            if isinstance(action, Deliver):
                for member, events in action.batches:
                    if self._cs is not state:
                        return
                    self._send(member, events)
            elif self._fatal is not None:
                if state.queued:  # the events before the bad one go out first
                    return
                self._end(self._fatal)
            else:
                if self._checkpoint_due(acking=False):
                    self._flush_checkpoint()
                events, covered = self._read(action)
                if self._cs is not state:
                    return
                self._settled(state.read_done(events, action.limit, covered))
                if self._fatal is not None:
                    state.must_recheck()

    def _send(self, member: int, events: list[RecordedEvent]) -> None:
        found = self._members.get(member)
        if found is None:
            return
        if found.handle in self._control.detached:
            self._remove(member)
            return
        payload, failure = self._mapped(events)
        if payload:
            if self._control.closed:
                self._end(None)
                return
            self._registry.metrics.delivered(len(payload), self._since)
            self._since = None
            self._traces.delivered(events[: len(payload)])
            try:
                found.subscriber.tell(Events(found.handle, payload))
            except pykka.ActorDeadError:
                self._remove(member)
                return
            except Exception as exc:
                self._remove(member)
                why = f"the subscriber's tell() failed: {exc!r}"
                tell_stopped(found.subscriber, found.handle, why)
                return
            if self._control.closed:
                self._end(None)
                return
        if failure is not None:
            self._end(failure)

    # Nacks --------------------------------------------------------------------------------------
    def _nack_one(self, state: ConcurrentState[RecordedEvent], message: Nack) -> None:
        """Retry (after `retry_delay`; then park), skip or park one event in flight at the
        nacking member; the others are not affected (acks are per event)."""
        member = self._ids.get(message.subscription)
        if member is None:
            return
        position = message.position
        event = state.sent_event(member, position)
        if event is None:
            return
        replay = state.is_replay(position)
        count_key = -event.event_id if replay else position
        retries = self._retries.get(count_key, 0)
        action = message.action
        if action == "retry":
            if retries < self._spec.max_retries:
                self._retries[count_key] = retries + 1
                state.nacked(member, position, resolved=False)
                if self._spec.retry_delay <= 0:
                    state.resume(position)
                else:
                    self._retry_due[position] = time.monotonic() + self._spec.retry_delay
                return
            action = "park"
        if action == "park":
            self._park(event, message.reason, retries)
        self._retries.pop(count_key, None)
        if replay:
            self._replay_queued.discard(event.event_id)
            if action == "skip":
                self._forget_parked(event)
        self._moved(state.nacked(member, position, resolved=True))

    def _forget_parked(self, event: RecordedEvent) -> None:
        """A replayed parked event was acked (or skipped): off the parked list."""
        self._retries.pop(-event.event_id, None)
        self._replay_queued.discard(event.event_id)
        stream, name, event_id = self._spec.stream_uuid, self._spec.name, event.event_id
        self._lock.run(lambda c: parked.forget(c, stream, name, event_id))


@dataclass(frozen=True)
class _Drive:
    pass


def _event_id(event: RecordedEvent) -> int:
    return event.event_id


def _event_number(event: RecordedEvent) -> int:
    return event.event_number
