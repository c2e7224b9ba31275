"""The fan-out: hands each published batch to every subscription, on one thread of its own.

Why: telling 200 subscription actors one message each per event costs 200 thread wake-ups
(and as many again for their acks), which under the GIL made live delivery to 200
subscriptions 10-17x slower than one thread handing rows to 200 consumer threads. So a
subscription that is level with the head takes the batch *directly*: this thread runs the
subscription's own handler under that subscription's lock (see `subscriptions.direct`), so
the subscriber is told on this thread, and an ack it makes at once is applied there too.
Whatever is not level (catching up, events in flight, a retry, a busy actor, a lost lock)
is told the batch as a message, exactly as before, behind the same inbox bound (`Control`).

One thread, so each subscription gets its batches in order. The publisher never waits on a
subscriber: it queues the batch here and goes on. A subscriber whose tell() blocks would
hold this thread: a watchdog that finds one delivery taking longer than `STALL` retires the
thread (it ends once that tell returns) and starts another, which goes on with the next
subscription; the stuck subscription's later batches go the actors' way (its lock is held
by the stuck delivery), and it takes no direct batch for a while afterwards.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import pykka

from .. import logs
from ..subscriptions.control import Admit, Control
from .messages import CatchUp

__all__ = ["STALL", "FanOut", "tell_alive", "tell_published"]

log = logs.get_logger("eventstore_actors.notifications")

#: Seconds one direct delivery may hold the fan-out's thread before another takes over.
STALL = 0.05

_Item = tuple[pykka.ActorRef[Any], Any, Any, int]


def tell_published(ref: pykka.ActorRef[Any], control: Any, published: Any) -> None:
    """Tell a subscription `published` as a message, within its inbox bound (`Control`):
    once it holds too many events, one coalesced `CatchUp` instead."""

    if not isinstance(control, Control):
        tell_alive(ref, published)
        return
    count = len(published.events)
    admit = control.admit_events(count)
    if admit is Admit.EVENTS:
        if not tell_alive(ref, published):
            control.took_events(count)
    elif admit is Admit.CATCH_UP and not tell_alive(ref, CatchUp()):
        control.took_catch_up()


def tell_alive(ref: pykka.ActorRef[Any], message: Any) -> bool:
    """Tell `ref` `message`; False when the actor is gone (a dying subscription is not
    an error of the fan-out: its supervisor deals with it)."""
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        return False
    return True


class FanOut:
    """The fan-out's queue, thread and watchdog (one per publisher)."""

    def __init__(self, name: str = "eventstore-fan-out", stall: float = STALL) -> None:
        self._name = name
        self._stall = stall
        self._items: deque[_Item] = deque()
        self._wake = threading.Condition(threading.Lock())
        self._take = threading.Lock()  # taking an item, and retiring the thread
        self._worker = 0  # the number of the thread that may take items
        self._since: float | None = None  # when the item being delivered was taken
        self._batches = 0
        self._closed = False
        self.replaced = 0  # threads retired by the watchdog (for tests)
        self._start_worker()
        self._watchdog = threading.Thread(target=self._watch, name=f"{name}-watchdog", daemon=True)
        self._watchdog.start()

    def publish(self, members: list[tuple[pykka.ActorRef[Any], Any]], published: Any) -> None:
        """Queue `published` for every member (in order) and return."""
        self._batches += 1
        batch = self._batches
        with self._wake:
            self._items.extend((ref, control, published, batch) for ref, control in members)
            self._wake.notify()

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify_all()

    # The thread ---------------------------------------------------------------------------------
    def _start_worker(self) -> None:
        self._worker += 1
        threading.Thread(
            target=self._run, args=(self._worker,), name=self._name, daemon=True
        ).start()

    def _next(self, me: int, wait: bool) -> _Item | None:
        """The next item, or None: none now (`wait` False), this thread was retired, or the
        fan-out closed."""
        while True:
            with self._take:
                if self._worker != me:
                    return None
                if self._items:
                    self._since = time.monotonic()
                    return self._items.popleft()
                self._since = None
            if not wait:
                return None
            with self._wake:
                if self._closed:
                    return None
                if not self._items:
                    self._wake.wait()

    def _run(self, me: int) -> None:
        # Subscriptions whose actor was busy (a tick, say) get a second try once the rest of
        # their batch was handed out, before anything of the next batch.
        later: list[_Item] = []
        while True:
            item = self._next(me, wait=not later)
            if later and (item is None or item[3] != later[0][3]):
                for again in later:
                    _deliver_safely(again, retry=False)
                later = []
            if item is None:
                if self._worker != me or self._closed:
                    return
                continue
            if _deliver_safely(item, retry=True) is None:
                later.append(item)

    def _watch(self) -> None:
        while not self._closed:
            time.sleep(self._stall)
            with self._take:
                since = self._since
                if since is None or time.monotonic() - since < self._stall:
                    continue
                # One delivery holds the thread (a subscriber's tell() blocks): retired,
                # it ends once that returns; a new one goes on with the next item.
                self._since = None
                self.replaced += 1
                self._start_worker()
            log.warning("a subscriber's tell() held the fan-out; another thread goes on")


def _deliver_safely(item: _Item, retry: bool) -> bool | None:
    try:
        return deliver(*item, retry=retry)
    except Exception as exc:  # never the fan-out's end: a subscription's own bug
        log.error("fan-out delivery failed", error=repr(exc))
        return False


def deliver(
    ref: pykka.ActorRef[Any], control: Any, published: Any, batch: int, *, retry: bool = False
) -> bool | None:
    """Directly if the subscription takes it (see `subscriptions.direct`), else as a message;
    None: its actor was busy and `retry` (nothing was told: try again)."""
    direct: Callable[[Any, int], bool | None] | None = getattr(control, "direct", None)
    if direct is not None:
        took = direct(published, batch)
        if took:
            return True
        if took is None and retry:
            return None
    tell_published(ref, control, published)
    return False
