"""Process lifetime: the store's threads never keep the interpreter alive.

Every thread of the store is a daemon (pykka's ``use_daemon_thread`` on the store's actors;
the ticker, listener, watchdog, lock hub and group threads are daemons too), so a program
that returns from ``main`` without ``store.stop()`` is not held at exit by them. Killing
daemon threads mid-statement would be rude, though, so the store also stops itself first:
every running store is tracked here, and a hook registered with
``threading._register_atexit`` (it runs when the main thread ends, *before* the interpreter
joins non-daemon threads; ``atexit`` handlers run after that join, too late for a program
whose own threads wait on the store) stops each one. What `stop()` does then is what it
always does: appends that returned are committed, acked checkpoints are flushed, unacked
events are delivered again later, as after a crash.

The stops run in daemon threads, all at once, for at most `EXIT_BUDGET` seconds; a Ctrl-C
(KeyboardInterrupt) while they run ends the wait at once and quietly. Stores running in a
forked child are not the child's to stop (their threads did not survive the fork).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Protocol

from . import logs

__all__ = ["EXIT_BUDGET", "forget", "stop_all", "track"]

#: Seconds the exit hook waits for the running stores to stop before the process goes on.
EXIT_BUDGET = 15.0

log = logs.get_logger("eventstore_actors.lifetime")

#: Longest single wait of the exit hook, so that a Ctrl-C is seen within it.
_JOIN_SLICE = 0.05


class _Stoppable(Protocol):
    def stop(self) -> None: ...


_lock = threading.Lock()
_running: dict[int, _Stoppable] = {}  # by id(): strong references (a forgotten store runs on)
_hooked = False


def track(store: _Stoppable) -> None:
    """Stop `store` at interpreter exit unless `forget(store)` was called first."""
    global _hooked
    with _lock:
        _running[id(store)] = store
        if not _hooked:
            try:
                # Private but stable since 3.9 (concurrent.futures relies on it): runs before
                # non-daemon threads are joined, unlike atexit.
                threading._register_atexit(stop_all)  # type: ignore[attr-defined]
            except (AttributeError, RuntimeError):  # already shutting down: nothing to add
                pass
            else:
                _hooked = True


def forget(store: _Stoppable) -> None:
    """`store` stopped: nothing to do for it at exit."""
    with _lock:
        _running.pop(id(store), None)


def _stop_quietly(store: _Stoppable) -> None:
    try:
        store.stop()
    except BaseException:  # at exit there is nobody left to tell
        pass


def stop_all(budget: float | None = None) -> None:
    """Stop every running store, in parallel, waiting at most `budget` seconds (default
    `EXIT_BUDGET`); a KeyboardInterrupt ends the wait at once."""
    with _lock:
        stores = list(_running.values())
        _running.clear()
    if not stores:
        return
    deadline = time.monotonic() + (EXIT_BUDGET if budget is None else budget)
    threads = [
        threading.Thread(target=_stop_quietly, args=(s,), name="eventstore-exit", daemon=True)
        for s in stores
    ]
    try:
        for thread in threads:
            thread.start()
        log.debug("stopping the running stores at exit", stores=len(stores))
        for thread in threads:
            _join_interruptibly(thread, deadline)
    except KeyboardInterrupt:  # a second Ctrl-C: leave now, the threads are daemons
        pass


def _join_interruptibly(thread: threading.Thread, deadline: float) -> None:
    # In short slices: a SIGINT that the kernel hands to another thread only sets Python's
    # pending flag, and a main thread blocked in one long join would see it at the timeout.
    while thread.is_alive():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        thread.join(min(left, _JOIN_SLICE))


def _after_fork_in_child() -> None:
    # A new lock (another thread may have held the old one at the fork); the parent's hook
    # registration is inherited, and finds nothing to stop here.
    global _lock, _running
    _lock = threading.Lock()
    _running = {}


os.register_at_fork(after_in_child=_after_fork_in_child)
