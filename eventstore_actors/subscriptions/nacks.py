"""Nacks and the parked list of a subscription's actor: retry counts and delays, parking,
and parked events delivered again (`replay_parked`), for both ways of delivering (one
subscriber with cumulative acks, competing consumers with per-event acks).

A parked event is stored before the checkpoint may pass it, so it is never lost; a retried
event waits `retry_delay` (its retry is due on a tick), then `max_retries` sends it to the
parked list. Replayed parked events count their retries apart from new ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..events import RecordedEvent
from ..storage import parked
from .concurrent import ConcurrentState
from .control import Control
from .hub import SharedLockSession
from .inbox import Nack
from .lock import LockSession
from .reading import position
from .spec import SubscriptionSpec
from .state import SubscriptionState

__all__ = ["Nacks"]


class Nacks:
    """The retries and the parked events of one actor instance. The nack methods return a
    checkpoint the nack moved (to be stored like an ack's), or None."""

    def __init__(
        self,
        spec: SubscriptionSpec,
        lock: LockSession | SharedLockSession,
        control: Control,
        log: Any,
        decode: Callable[[list[Any]], list[RecordedEvent]],
    ) -> None:
        self._spec = spec
        self._lock = lock
        self._control = control
        self._log = log
        self._decode = decode
        self._all = spec.stream_uuid == "$all"
        self.retries: dict[int, int] = {}  # nack "retry" counts by position (-event_id: replays)
        self.replay_queued: set[int] = set()  # event_ids of parked events queued again
        self.retry_due: dict[int, float] = {}  # position -> when its retry may go out
        self.to_redo: list[Nack] = []  # their park was interrupted: done on a tick

    def reset(self) -> None:
        """A fresh state machine: nothing is retried or replayed yet."""
        self.retries, self.replay_queued, self.retry_due = {}, set(), {}

    def idle(self) -> bool:
        """Nothing waits for a tick: no retry delay running, no park to redo."""
        return not self.retry_due and not self.to_redo

    def due(self, now: float) -> list[int]:
        """The positions whose retry delay has passed (taken)."""
        ready = [p for p, due in self.retry_due.items() if now >= due]
        for found in ready:
            del self.retry_due[found]
        return ready

    def _decide(self, key: int, action: str) -> tuple[str, int]:
        """What a nack does ("retry" while retries remain, counted here; then "park") and
        the retries counted before it; `key`: the position, or -event_id for a replay."""
        retries = self.retries.get(key, 0)
        if action == "retry":
            if retries < self._spec.max_retries:
                self.retries[key] = retries + 1
                return action, retries
            return "park", retries
        return action, retries

    def _retry_later_or_now(
        self, state: SubscriptionState[RecordedEvent] | ConcurrentState[RecordedEvent], at: int
    ) -> None:
        delay = self._spec.retry_delay
        if delay <= 0:
            state.resume(at)
        else:
            self.retry_due[at] = time.monotonic() + delay

    # One subscriber: a nack refuses one event of the batch in flight ---------------------------
    def single(self, state: SubscriptionState[RecordedEvent], message: Nack) -> int | None:
        """Retry (later, alone; then park), skip or park one event of the batch in flight;
        the events before it count as acked, those after it are sent again."""
        replaying = state.replaying
        if replaying is not None:
            if position(replaying, self._all) == message.position:
                self._control.replaying = None  # (sent again, if retried)
                self._nack_replayed(state, replaying, message)
            return None
        at, action = message.position, message.action
        event = state.sent_event(at)
        if event is None:
            return None  # not in flight (acked already, or from an earlier batch)
        action, retries = self._decide(at, action)
        if action == "retry":
            moved = state.nacked(at, resolved=False)
            self._retry_later_or_now(state, at)
            return moved
        if action == "park":
            self.park(event, message.reason, retries)
        self.retries.pop(at, None)
        return state.nacked(at, resolved=True)

    def _nack_replayed(
        self, state: SubscriptionState[RecordedEvent], event: RecordedEvent, message: Nack
    ) -> None:
        key = -event.event_id  # replayed events count apart from new ones
        action, retries = self._decide(key, message.action)
        if action == "retry":
            state.replay_done(retry=True)
            self._retry_later_or_now(state, message.position)
            return
        if action == "skip":
            self.replay_resolved(state)
            return
        self.park(event, message.reason, retries)  # also ends its replay
        self.retries.pop(key, None)  # after: an interrupted park is redone with its count
        self.replay_queued.discard(event.event_id)
        state.replay_done()

    def replay_resolved(self, state: SubscriptionState[RecordedEvent]) -> None:
        """The replayed event in flight was acked (or skipped): off the parked list."""
        event = self.replay_ended(state)
        if event is not None:
            self.forget(event)

    def replay_ended(self, state: SubscriptionState[RecordedEvent]) -> RecordedEvent | None:
        """The replayed event in flight is done with (returned), its parked row left as is."""
        self._control.replaying = None
        event = state.replay_done()
        if event is not None:
            self.retries.pop(-event.event_id, None)
        return event

    # Competing consumers: a nack refuses one event in flight at one member ---------------------
    def competing(
        self, state: ConcurrentState[RecordedEvent], member: int, message: Nack
    ) -> int | None:
        """Retry (after `retry_delay`; then park), skip or park one event in flight at the
        nacking member; the others are not affected (acks are per event)."""
        at = message.position
        event = state.sent_event(member, at)
        if event is None:
            return None
        replay = state.is_replay(at)
        count_key = -event.event_id if replay else at
        action, retries = self._decide(count_key, message.action)
        if action == "retry":
            state.nacked(member, at, resolved=False)
            self._retry_later_or_now(state, at)
            return None
        if action == "park":
            self.park(event, message.reason, retries)
        self.retries.pop(count_key, None)
        if replay:
            self.replay_queued.discard(event.event_id)
            if action == "skip":
                self.forget(event)
        return state.nacked(member, at, resolved=True)

    # The parked list ----------------------------------------------------------------------------
    def park(self, event: RecordedEvent, reason: str | None, retries: int) -> None:
        """Stored before the checkpoint may pass it: a parked event is never lost."""
        stream, name, event_id = self._spec.stream_uuid, self._spec.name, event.event_id
        self._lock.run(lambda c: parked.park(c, stream, name, event_id, reason, retries))
        self._log.info("event parked", event_id=event_id, retries=retries)

    def forget(self, event: RecordedEvent) -> None:
        """A replayed parked event was acked (or skipped): off the parked list."""
        self.retries.pop(-event.event_id, None)
        self.replay_queued.discard(event.event_id)
        stream, name, event_id = self._spec.stream_uuid, self._spec.name, event.event_id
        self._lock.run(lambda c: parked.forget(c, stream, name, event_id))

    def load_replay(
        self,
        state: SubscriptionState[RecordedEvent] | ConcurrentState[RecordedEvent] | None,
        *,
        polled: bool = False,
    ) -> None:
        """Queue the parked events marked for replay (by this or another store) that are
        not queued yet. `polled` (the health check's look for another process's
        `replay_parked`): no read when the shared lock connection's last probe found none
        marked for this subscription (one statement for all of the store's subscriptions)."""
        lock = self._lock
        if state is None or (
            polled and isinstance(lock, SharedLockSession) and lock.replay_marked() is False
        ):
            return
        if events := self.to_replay():
            state.replay(events)

    def to_replay(self) -> list[RecordedEvent]:
        """The parked events marked for replay that are not queued yet, now marked queued."""
        stream, name = self._spec.stream_uuid, self._spec.name
        found = self._lock.read(lambda c: parked.rows(c, stream, name, replay_only=True))
        fresh = [row for row, *_ in found if row[0] not in self.replay_queued]
        if not fresh:
            return []
        events = self._decode(fresh)
        self.replay_queued.update(e.event_id for e in events)
        return events
