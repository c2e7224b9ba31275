"""The subscription actor's way in for other threads (see direct.py): the fan-out hands a
level subscription its batch, and an acker applies a plain ack, on their own threads, through
the actor's own handler under its mutex; anything else goes as a message."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pykka

from ..actors.supervised import Crash
from ..notifications.messages import Published
from ..tracing import Deliveries
from .acking import Acking
from .control import Control
from .direct import Direct
from .hub import SharedLockSession
from .inbox import Ack
from .lock import LockSession
from .members import Members
from .messages import Subscription
from .nacks import Nacks
from .reading import Reads
from .saving import CheckpointSaver
from .spec import SubscriptionSpec
from .state import SubscriptionState

__all__ = ["LevelHooks"]


class LevelHooks:
    """Mixed into `SubscriptionActor`: what the fan-out (`Control.direct`) and an acker
    (`Control.direct_ack`) call."""

    actor_ref: pykka.ActorRef[Any]
    _direct: Direct
    _state: Any
    _control: Control
    _lock: LockSession | SharedLockSession
    _nacks: Nacks
    _reads: Reads
    _saver: CheckpointSaver
    _handle: Subscription
    _ended: bool
    _inner_ack: int | None
    _nacks_seen: int
    _traces: Deliveries
    _members: Members
    _acking: Acking
    _spec: SubscriptionSpec
    handle: Callable[[Any], Any]  # the actor's own handler (an annotation only)

    def _take_direct(self, published: Published, batch: int) -> bool | None:
        """On the fan-out's thread: deliver `published` here if level, else False (None:
        the actor is busy)."""
        return self._direct.run(published, batch, lambda: self._level_for(published, batch))

    def _ack_direct(self, position: int, handle: Subscription) -> bool | None:
        """On the acker's thread: apply a plain ack here if nothing is left to do after it
        but wait, else False.

        From inside the subscriber's tell(), on the thread telling it (the fan-out's or the
        actor's, holding the mutex): kept, and applied by that thread as soon as the tell()
        returns (`_take_inner_ack`), before anything else happens to the subscription. The
        same ack as a message would be, without running the actor's handler inside its own
        delivery (a live subscriber that acks at once paid for two handler runs per batch)."""
        direct = self._direct
        if direct.inside_tell():
            if not self._settles(handle):
                return False
            kept = self._inner_ack
            self._inner_ack = position if kept is None else max(kept, position)
            return True
        took = direct.run(
            Ack(position, handle), None, lambda: self._settles(handle), self._saver.eagerly
        )
        if took:
            self._after_direct_ack()
        return took

    def _told(self, subscriber: Any, message: Any) -> Exception | None:
        """Tell `subscriber` a batch, an ack it makes inside that tell() kept and applied
        as it returns (see `_ack_direct`); what its tell() raised, if anything."""
        direct = self._direct
        teller, direct.teller = direct.teller, threading.get_ident()
        try:
            subscriber.tell(message)
        except Exception as exc:
            return exc
        finally:
            direct.teller = teller
            self._take_inner_ack()
        return None

    def _take_inner_ack(self) -> None:
        """Apply the ack kept while telling (see `_ack_direct`), on the thread that told: the
        actor's own handling of an ack, less the pump (the delivery that told it goes on
        pumping), then stored as a direct ack is."""
        position, self._inner_ack = self._inner_ack, None
        if position is None:
            return
        message = Ack(position, self._handle)
        state = self._state
        if state is None or self._ended or self._control.closed:
            self.handle(message)  # closing, or not holding the lock: the general way
        else:
            self._traces.acked(position, ())
            member = self._members.of(self._handle)
            if member is not None:
                self._acking.ack(state, member, message)
            self._spec.health.update(state, True)
        self._saver.eagerly()
        self._after_direct_ack()

    def _after_direct_ack(self) -> None:
        if self._saver.pending():
            self._control.quiet_until = 0.0  # a tick stores it (see CheckpointPolicy)

    def _quiet(self) -> bool:
        """Nothing for a tick to redo, nothing stored in callers' transactions, the lock
        held on the shared connection, the subscription running."""
        return (
            not self._ended
            and not self._control.closed
            and self._nacks.idle()
            and self._reads.fatal is None
            and not self._saver.in_transactions()
            and isinstance(self._lock, SharedLockSession)
            and self._lock.locked
        )

    def _level_for(self, published: Published, batch: int) -> bool:
        state, covered, lock = self._state, published.covered, self._lock
        return (
            isinstance(state, SubscriptionState)
            and covered is not None
            and self._control.inbox_clear
            and state.level_at(covered[0], len(published.events))
            and self._quiet()
            # the hub's one look for this batch (else the actor's own check decides)
            and isinstance(lock, SharedLockSession)
            and lock.vouched(batch)
        )

    def _settles(self, handle: Subscription) -> bool:
        state = self._state
        return (
            isinstance(state, SubscriptionState)
            and handle is self._handle
            and state.settles_on_ack
            # A nack told before it and not handled yet: the ack goes after it, as a message
            # (a retry asked inside a tell() was lost to the ack applied as it returned).
            and self._nacks_seen >= self._control.nacks_told
            and self._quiet()
        )

    def _crash(self, error: BaseException) -> None:
        try:
            self.actor_ref.tell(Crash(error))
        except pykka.ActorDeadError:
            pass
