"""Read-ahead for a subscription's catch-up: the next page is read from the read pool, on a
thread of the subscription's own (which ends once it has had nothing to read for a second),
while the subscriber works on the page before it, so the database round trip overlaps
delivery instead of following it.

Only what a later read would return anyway is ever served:
- Rows are kept only from *full* reads, whose cover ends at their last row: every position
  up to it is among the rows or gone for good, and stays so (a short read covers up to the
  head as of its snapshot, which a notification or a `CatchUp` told since may have passed:
  such a page is thrown away, and the read that goes live is done afresh).
- What was read ahead belongs to one state machine (`owner`) and starts at one position: a
  read asking for another start, or for another state machine (a restart, a lock loss, a
  resync to another checkpoint), discards it. The cursor of one state machine only moves
  forward by contiguous extension, so a matching start is the same read, done earlier.
- At most one page of rows is held or being read ahead (`page`), and at most one thread per
  subscription runs; the reads ahead on one pool are bounded by a semaphore (half of its
  connections; without a permit the read simply is not done ahead). A read that failed
  ahead is done again by the actor, whose errors (a lost lock, an interruption) take their
  usual path.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

from ..storage import reader
from ..storage.pool import ReadPool

__all__ = ["THREAD_NAME", "Ahead", "Query"]

#: The name of the read-ahead threads (one per subscription catching up, at most).
THREAD_NAME = "eventstore-prefetch"
#: Seconds a read-ahead thread waits for the next job before it ends.
_IDLE = 1.0

#: A covered read of `count` rows from a position, as (rows, covered, deleted): `deleted` says
#: that a stream subscription's stream is soft-deleted (all-streams reads: always False).
Page = tuple[list[reader.Row], int, bool]
Work = Callable[[Any], Page]
Query = Callable[[int, int], Work]

_permits: weakref.WeakKeyDictionary[ReadPool, threading.BoundedSemaphore] = (
    weakref.WeakKeyDictionary()
)
_permits_lock = threading.Lock()


def _permit(pool: ReadPool, size: int) -> threading.BoundedSemaphore:
    """The semaphore bounding read-ahead threads on `pool` (half of its connections, so that
    the other calls of the store always find some)."""
    with _permits_lock:
        found = _permits.get(pool)
        if found is None:
            found = _permits[pool] = threading.BoundedSemaphore(max(1, size // 2))
        return found


def _full(page: Page, count: int) -> bool:
    """Whether a read of `count` rows came back full, covered up to its last row only (and
    not on a deleted stream): its rows stay valid however long they are kept."""
    rows, covered, deleted = page
    return len(rows) >= count and covered == rows[-1][10] and not deleted


class _Job:
    """One read ahead of `count` rows from `low` (`done` once `result` is set)."""

    def __init__(self, work: Work, low: int, count: int) -> None:
        self.low, self.count, self.work = low, count, work
        self.result: Page | None = None
        self.done = threading.Event()


class _Worker:
    """The thread that reads ahead for one subscription, a job at a time: started on the
    first job (no thread start per page), ended by `close` or after `_IDLE` seconds without
    a job (a live subscription keeps no thread)."""

    def __init__(self, pool: ReadPool, permit: threading.BoundedSemaphore) -> None:
        self._pool, self._permit = pool, permit
        self._cond = threading.Condition()
        self._job: _Job | None = None
        self._closed = False
        self.thread: threading.Thread | None = None  # None: not running (or ending)

    def submit(self, job: _Job) -> bool:
        """Run `job` (a permit is held for it); False if no thread could be started."""
        with self._cond:
            if self._closed:
                return False
            self._drop_pending()
            self._job = job
            if self.thread is None:
                thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
                try:
                    thread.start()
                except RuntimeError:  # no thread to be had: the read is done when needed
                    self._job = None
                    return False
                self.thread = thread
            self._cond.notify()
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._job is None and not self._closed:
                    if not self._cond.wait(_IDLE) and self._job is None:
                        self.thread = None  # the next job starts another
                        return
                if self._closed:
                    self.thread = None
                    return
                job, self._job = self._job, None
            assert job is not None
            try:
                job.result = self._pool.run(job.work)
            except Exception:  # the actor reads again and meets the error there
                job.result = None
            finally:
                self._permit.release()
                job.done.set()

    def _drop_pending(self) -> None:
        """A job not picked up yet is not run: its permit goes back, and it is done (with
        no result: the actor reads itself). Called holding the condition."""
        job, self._job = self._job, None
        if job is not None:
            self._permit.release()
            job.done.set()

    def close(self, timeout: float) -> None:
        """End the thread, after the read in progress (waited for at most `timeout`)."""
        with self._cond:
            self._closed = True
            self._drop_pending()
            thread = self.thread
            self._cond.notify()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)


class Ahead:
    """What one subscription read ahead: contiguous rows from `start`, covered up to the last
    one, and at most one read in progress that continues them."""

    def __init__(
        self,
        pool: ReadPool,
        pool_size: int,
        page: int,
        fresh: Callable[[Work], Page],
        join_timeout: float,
    ) -> None:
        self._pool = pool
        self._permit = _permit(pool, pool_size)
        self._page = max(1, page)
        self._fresh = fresh  # a read now, by the actor (the lock's `read`, with its errors)
        self._join_timeout = join_timeout
        self._owner: object | None = None
        self._start = -1  # where the rows (or the read in progress, without rows) start
        self._rows: list[reader.Row] = []
        self._job: _Job | None = None  # continues the rows
        self._worker = _Worker(pool, self._permit)
        self._busy: _Job | None = None  # the last job given to the worker

    @property
    def held(self) -> int:
        """Rows kept ahead (not counting a read in progress)."""
        return len(self._rows)

    @property
    def pending(self) -> bool:
        """Whether a read ahead was started and not collected yet (maybe finished)."""
        return self._job is not None

    @property
    def running(self) -> bool:
        """Whether a read ahead is in progress (it may have been discarded)."""
        return self._busy is not None and not self._busy.done.is_set()

    @property
    def thread(self) -> threading.Thread | None:
        """The read-ahead thread while it runs."""
        return self._worker.thread

    def take(self, owner: object, start: int, limit: int, query: Query) -> Page:
        """The covered read of `limit` rows from `start` for `owner`: from what was read
        ahead, completed by a read now when that is not enough; then, if it was full, the
        next page is read ahead."""
        if owner is not self._owner or start != self._start:
            self.discard()
            self._owner = owner
        self._collect(start)
        rows = self._rows
        found: Page
        if len(rows) >= limit:
            served, self._rows = rows[:limit], rows[limit:]
            found = (served, served[-1][10], False)
        else:
            self._rows = []
            low = rows[-1][10] + 1 if rows else start
            fresh = self._fresh(query(low, limit - len(rows)))
            found = (rows + fresh[0], fresh[1], fresh[2]) if rows else fresh
        if _full(found, limit):
            self._start = found[1] + 1
            self._ahead(query)
        else:  # going live (or ending): nothing is read ahead
            self.discard()
        return found

    def _collect(self, start: int) -> None:
        """Wait for the read in progress; keep its rows if it came back full and continues
        the rows kept (which start at `start`)."""
        job, self._job = self._job, None
        if job is None:
            return
        found = job.result if job.done.wait(self._join_timeout) else None
        expected = self._rows[-1][10] + 1 if self._rows else start
        if found is not None and job.low == expected and _full(found, job.count):
            self._rows.extend(found[0])

    def _ahead(self, query: Query) -> None:
        """Start reading the rows after ours (up to one page held), if a permit is free and
        no read (even a discarded one) is in progress."""
        count = self._page - len(self._rows)
        if count <= 0 or self.running or not self._permit.acquire(blocking=False):
            return
        low = self._rows[-1][10] + 1 if self._rows else self._start
        job = _Job(query(low, count), low, count)
        if not self._worker.submit(job):
            self._permit.release()
            return
        self._job = self._busy = job

    def discard(self) -> None:
        """Forget what was read ahead (a read in progress finishes unused)."""
        self._rows, self._start, self._job = [], -1, None

    def close(self) -> None:
        """Discard, and end the read-ahead thread (after a read in progress, waited for at
        most the join timeout): no thread outlives the actor."""
        self.discard()
        self._owner = None
        self._worker.close(self._join_timeout)
