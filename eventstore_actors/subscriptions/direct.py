"""Direct delivery: a subscription's own handler, run on the fan-out's or the acker's thread.

Why: with 200 live subscriptions, one actor wake-up per subscription per event (and another
per ack) was where the time went (`notifications/fanout.py`). A subscription that is *level*
(live, nothing in flight, buffered, replayed, retried or parked; its inbox holds no batch;
its lock on the shared lock connection) takes a published batch on the fan-out's thread, and
an ack of a subscriber takes effect on the acker's thread, when nothing is left to do after
it but wait. Either runs the actor's own `handle` (the same code as for a message) under the
subscription's `mutex`, which the actor holds for everything it does, so one thing at a time
still happens to its state. Anything else goes as a message, as before.

What keeps the rules:
- order: only a batch that continues the cursor is taken, only when no batch is queued for
  the actor, and the fan-out hands each subscription its batches in order;
- fencing: the hub looks at its connection once per batch (`LockHub.vouch`) instead of once
  per delivery; a lock of a lost generation is never vouched for, so nothing is delivered;
- back-pressure: a batch is taken only with nothing in flight, and the ack applied directly
  is the same cumulative ack (clamped to what was sent); an ack the subscriber makes inside
  its tell(), on the thread telling it, is kept and applied by that thread as soon as the
  tell() returns, before anything else happens to the subscription (not by a second run of
  the handler inside the first);
- exactly-once: acks in a caller's transaction still go as messages, and a subscription
  that uses them never takes direct batches (its checkpoint writes wait on its callers);
- checkpoints go through the same saver (the hub's batched writes), and health and lag
  figures through the same hooks.

A subscriber's tell() then runs on the fan-out's thread, so it pays only where tell() is
cheap (a pykka ActorRef's is a queue put): a subscriber whose direct deliveries take longer
than `SLOW` `STREAK` times in a row (a projection writing to a database, say) gets no direct
batch for `PAUSE` seconds, so its work runs on its subscription's own thread, in parallel
with the others, as before; one slow delivery alone (the thread waited for the GIL) does not
count. The fan-out's watchdog moves on without a tell() that blocks (see `FanOut`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ..actors.supervised import acting_as

__all__ = ["PAUSE", "SLOW", "STREAK", "Direct"]

#: Seconds past which a direct delivery counts as slow: far above a queue put, below the
#: time a subscriber doing I/O in tell() would hold the fan-out's thread from the others.
SLOW = 0.002
#: Slow direct deliveries in a row that pause a subscription (then: messages).
STREAK = 3
#: Seconds a slow subscription takes no direct batch.
PAUSE = 30.0


class Direct:
    """One actor instance's mutex and the runner of its handler on other threads."""

    def __init__(
        self, urn: str, handle: Callable[[Any], Any], crash: Callable[[BaseException], None]
    ) -> None:
        self.mutex = threading.RLock()
        self.busy = False  # the actor itself holds the mutex (handling a message)
        #: The thread telling the subscriber a batch (it holds the mutex), else None: an ack
        #: the subscriber makes from inside that tell(), on that thread, is taken there (see
        #: `LevelHooks._ack_direct`).
        self.teller: int | None = None
        #: While a direct delivery runs: the fan-out batch (for `SharedLockSession.vouched`).
        self.batch: int | None = None
        #: Whether the message being handled was given here, not queued (no inbox count).
        self.given = False
        self._urn = urn
        self._handle = handle
        self._crash = crash
        self._paused_until = 0.0
        self._slow = 0  # slow direct deliveries in a row

    def inside_tell(self) -> bool:
        """Whether this thread is the one telling the subscriber a batch (no lock needed:
        only that thread can find its own ident there)."""
        return self.teller == threading.get_ident()

    def own(self) -> _Own:
        """For the actor's own work (messages, start, stop): holds the mutex."""
        return _Own(self)

    def run(
        self,
        message: Any,
        batch: int | None,
        ready: Callable[[], bool],
        then: Callable[[], None] | None = None,
    ) -> bool | None:
        """Handle `message` here if `ready()` (checked under the mutex), then `then()`;
        False: it was not ready, None: the actor is busy (tell it as a message, or try again
        a moment later)."""
        if batch is not None and self._paused_until and time.monotonic() < self._paused_until:
            return False
        if not self.mutex.acquire(blocking=False):
            return None
        try:
            if self.busy and self.teller is None:  # the actor's own thread, not in a tell()
                return None
            if not ready():
                return False
            before = (self.batch, self.given)
            self.given = True
            if batch is not None:
                self.batch = batch
            started = time.monotonic()
            urn = acting_as(self._urn)
            try:
                self._handle(message)
                if then is not None:
                    then()
            except Exception as exc:  # as a failure in the actor: it crashes and restarts
                self._crash(exc)
            finally:
                acting_as(urn)
                self.batch, self.given = before
            if batch is not None:
                if time.monotonic() - started <= SLOW:
                    self._slow = 0
                else:
                    self._slow += 1
                    if self._slow >= STREAK:
                        self._slow = 0
                        self._paused_until = time.monotonic() + PAUSE
            return True
        finally:
            self.mutex.release()


class _Own:
    __slots__ = ("_direct", "_outer")

    def __init__(self, direct: Direct) -> None:
        self._direct = direct
        self._outer = False

    def __enter__(self) -> None:
        self._direct.mutex.acquire()
        self._outer, self._direct.busy = self._direct.busy, True

    def __exit__(self, *exc: object) -> None:
        self._direct.busy = self._outer
        self._direct.mutex.release()
