"""Running the sync facade's blocking calls off the event loop.

`EventStore` is thread-safe and every one of its calls may block (a pooled read, an append
waiting for its group commit, a subscribe waiting for its lock). pykka futures cannot be
awaited without blocking the loop (their ``__await__`` calls ``get()``), so each call runs on a
thread of a dedicated pool and the loop awaits that thread's result. The pool is the store's
own: a busy default executor of the application cannot starve it, and it is large enough that
appends from many tasks all reach the writer together and share its group commits.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from ..errors import StoreUnavailableError

__all__ = ["Calls", "default_threads"]

P = ParamSpec("P")
R = TypeVar("R")

#: Threads beyond the connection pool's: appends in flight at once, waiting on the writer.
APPEND_THREADS = 64


def default_threads(pool_size: int, pool_overflow: int) -> int:
    """One thread per pooled connection (reads), plus room for appends waiting on the writer
    (they hold no connection: more of them in flight means larger group commits)."""
    return pool_size + pool_overflow + APPEND_THREADS


def _pass(gate: threading.Barrier) -> None:
    try:
        gate.wait()
    except threading.BrokenBarrierError:  # shut down meanwhile
        pass


class Calls:
    """A thread pool that runs blocking calls for coroutines."""

    def __init__(self, threads: int) -> None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an int >= 1, got {threads!r}")
        self.threads = threads
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="eventstore-aio")
        self._closed = False

    def prime(self) -> None:
        """Start the pool's threads now, from the calling thread (never the loop's).

        ThreadPoolExecutor starts threads lazily inside submit(), on the submitter's thread,
        and each start waits for the new thread to run: on a busy machine that held the event
        loop for milliseconds per thread (170 ms seen during a burst of 70 appends). Primed,
        blocking calls always find a thread waiting. One thread is left to the caller (the
        store's start runs this on one)."""
        parties = self.threads - 1
        if parties < 1:
            return
        gate = threading.Barrier(parties, timeout=30.0)
        started = []
        try:
            for _ in range(parties):
                started.append(self._executor.submit(_pass, gate))
        except RuntimeError:  # shut down meanwhile (a cancelled start): nothing to prime
            gate.abort()
        for future in started:
            future.exception()

    def prime_in_background(self) -> None:
        threading.Thread(target=self.prime, name="eventstore-aio-primer", daemon=True).start()

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        """Start `fn` on a thread, with the caller's contextvars (structlog's bound context)."""
        if self._closed:
            raise StoreUnavailableError("the event store is stopped")
        context = contextvars.copy_context()
        try:
            return self._executor.submit(context.run, functools.partial(fn, *args, **kwargs))
        except RuntimeError:  # shut down between the check and the submit
            raise StoreUnavailableError("the event store is stopped") from None

    async def run(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Await `fn(*args, **kwargs)` run on a thread.

        Cancelling the awaiting task cancels the wait only: a call already running goes on to
        its end (an append commits entirely or not at all) and its outcome is dropped; a call
        still queued for a thread never runs.
        """
        return await asyncio.wrap_future(self.submit(fn, *args, **kwargs))

    def close(self) -> None:
        """No new calls; queued and running ones finish (they meet the stopped store)."""
        self._closed = True
        self._executor.shutdown(wait=False)
