"""What an ack or a nack told to a subscription's actor does to its state machine and to the
checkpoint it stores: cumulative acks of a single subscriber (possibly written in the
caller's transaction, or told while the lock is being retaken) and per-event acks of
competing consumers, including those told while the subscription closes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..events import RecordedEvent
from .concurrent import ConcurrentState
from .control import Control
from .inbox import Ack, Nack
from .messages import Subscription
from .nacks import Nacks
from .reading import position
from .saving import CheckpointSaver
from .state import SubscriptionState

__all__ = ["Acking"]

_State = SubscriptionState[RecordedEvent] | ConcurrentState[RecordedEvent]


class Acking:
    """Applies acks and nacks (the actor checked whose they are: `member`)."""

    def __init__(
        self, saver: CheckpointSaver, nacks: Nacks, control: Control, all_streams: bool
    ) -> None:
        self._saver = saver
        self._nacks = nacks
        self._control = control
        self._all = all_streams

    def ack(self, state: _State, member: int, message: Ack) -> None:
        """Per event (competing consumers) or cumulative (a single subscriber, possibly
        written in the caller's transaction)."""
        saver = self._saver
        if isinstance(state, ConcurrentState):
            checkpoint, replayed = state.acked(member, message.each or (message.position,))
            for event in replayed:
                self._nacks.forget(event)
            saver.acked(checkpoint)
            return
        replaying = state.replaying
        if replaying is not None and position(replaying, self._all) == message.position:
            if message.in_transaction:
                # The caller's transaction takes it off the parked list (iff it commits;
                # a rollback leaves it parked, marked for replay: it comes again on the
                # next start, like the events of a rolled-back ack).
                saver.acks_in_transaction = True
                self._nacks.replay_ended(state)
            else:
                self._nacks.replay_resolved(state)
            return
        checkpoint = state.acked(message.position)
        if not message.in_transaction:
            saver.acked(checkpoint)
            return
        saver.acks_in_transaction = True
        saver.fence = max(saver.fence, message.position)
        # The caller's transaction holds that checkpoint: never written here.
        if saver.unsaved is not None and saver.unsaved <= message.position:
            saver.unsaved = None
        if checkpoint is not None and checkpoint > message.position:
            # Filtered-out or deleted positions after it: stored here, once the caller's
            # transaction has committed (see CheckpointSaver.flush).
            saver.note(checkpoint)

    def nack(self, state: _State, member: int, message: Nack) -> None:
        """See nacks.py; the events a nack counts as acked are stored as acked ones."""
        if isinstance(state, ConcurrentState):
            self._saver.acked(self._nacks.competing(state, member, message))
        else:
            self._saver.acked(self._nacks.single(state, message))

    def without_lock(self, message: Ack, sent_before: int) -> None:
        """A cumulative ack while the lock is being retaken: it acked what was sent before
        the lock was lost, stored once the lock is back. (Per-event acks are lost then:
        their events come again.)"""
        if message.in_transaction:
            return
        at = min(message.position, sent_before)
        if at > (self._saver.unsaved or 0):
            self._saver.unsaved = at

    def on_close(self, state: _State, member: int, message: Ack) -> None:
        """An ack told before the subscription closed (queued ahead of its stop): kept, so
        that the final write on stop stores it whatever the checkpoint tuning."""
        if isinstance(state, ConcurrentState):
            checkpoint, _ = state.acked(member, message.each or (message.position,))
            if checkpoint is not None:
                self._saver.note(checkpoint)
            return
        if message.in_transaction:
            return
        checkpoint = state.acked(message.position)
        if checkpoint is not None and not self._saver.acks_in_transaction:
            self._saver.note(checkpoint)

    def final(
        self, state: _State | None, ids: Mapping[Subscription, int], *, shared: bool
    ) -> int | None:
        """For the final checkpoint write: the position the acks told so far complete
        (queued behind the stop, or told after the end); the handles store any told after
        this. Cumulative acks: the highest told; per-event acks: applied to the last state
        (as those told after the final write: `Control.each_ack`)."""
        if not shared:
            acked = self._control.final_acks()
            return None if self._saver.in_transactions() else acked
        members = dict(ids)

        def apply(handle: Any, positions: tuple[int, ...]) -> int | None:
            member = members.get(handle)
            if not isinstance(state, ConcurrentState) or member is None:
                return None
            return state.acked(member, positions)[0]

        return self._control.final_each(apply)
