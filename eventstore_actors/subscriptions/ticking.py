"""The subscription actor's ticks: checkpoints due, retries due, the once-a-second health
check (lock, parked replays asked by other processes, a backstop read of the head), and the
rest an idle subscription takes between them."""

from __future__ import annotations

import time
from typing import Any

from .control import Control
from .hub import SharedLockSession
from .lock import LockLost, LockSession
from .nacks import Nacks
from .reading import Reads
from .saving import CheckpointSaver

__all__ = ["HEALTH_INTERVAL", "Ticking"]

#: Seconds between checks that the lock connection is still alive.
HEALTH_INTERVAL = 1.0


class Ticking:
    """Mixed into `SubscriptionActor`: what a `Tick` does."""

    _state: Any
    _control: Control
    _lock: LockSession | SharedLockSession
    _nacks: Nacks
    _reads: Reads
    _saver: CheckpointSaver
    _ended: bool
    _idle: bool
    _next_health_check: float
    _retry_at: float

    def _prune(self) -> None:
        raise NotImplementedError

    def _reconnect(self) -> None:
        raise NotImplementedError

    def _end(self, reason: str | None) -> None:
        raise NotImplementedError

    def _pump(self, state: Any) -> None:
        raise NotImplementedError

    def _rest(self) -> None:
        """After a tick that left nothing to do (shared lock connection; nothing to retry,
        redo or store), no Tick until the next health check: an idle subscription costs no
        wake-up every `tick_interval`; any message ends the rest. A lost lock is then seen
        before its next batch or on that health check."""
        shared = isinstance(self._lock, SharedLockSession)
        if shared and self._idle and self._nacks.idle() and not self._saver.pending():
            self._control.quiet_until = min(self._next_health_check, time.monotonic() + 1.0)

    def _tick(self) -> None:
        self._idle = False
        self._prune()
        if self._ended:
            return
        now = time.monotonic()
        state = self._state
        if state is None:
            if now >= self._retry_at:
                self._reconnect()
            return
        if self._saver.due(acking=False):
            self._saver.flush()
        for at in self._nacks.due(now):
            state.resume(at)  # a retry's delay passed
        if now >= self._next_health_check:  # a round trip: also finds half-open sockets
            self._next_health_check = now + HEALTH_INTERVAL
            self._nacks.load_replay(state, polled=True)  # replay_parked by another process
            if self._state is not state:
                return
            head, gone = self._reads.head()  # also a backstop for a lost notification
            if gone is not None:
                self._end(gone)  # its stream or its checkpoint row was deleted
                return
            if head > state.cursor:
                # A backstop, whatever the notifications did: storage holds more than this
                # subscription has seen, so it reads it (at most one health interval late).
                state.must_recheck()
        elif not self._lock.alive():  # no round trip unless the socket has something to say
            raise LockLost("the lock connection is gone")
        self._pump(state)  # also redoes a read or a send an interruption left undone
