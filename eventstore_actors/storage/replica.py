"""Reads from a hot standby (`replica_dsn`) with read-your-writes, falling back to the primary.

Every write of the store (the writer's commits, deletes, links, snapshots) records the
primary's WAL position right after its commit (`LsnTracker`). A replica read first makes
sure the standby has replayed up to there (`pg_last_wal_replay_lsn()`), polling for at most
`replica_max_lag` seconds, else it reads from the primary: a read that starts after an append
returned sees that append. The replay position is remembered per connection, so reads with no
new write since the last check cost no extra round trip (not per store: with a multi-host
`replica_dsn` a new connection may land on another standby, which may lag where the first did
not).

A standby that is down or refuses a read (a lost connection, a query cancelled by a replay
conflict) sends the read to the primary; a lost or refused connection marks the standby down
for a moment, with a rate-limited warning, and it is tried again after that. A standby that
lagged past `replica_max_lag` is not waited on again until it has caught up (one check per
read, no wait), so a stuck standby costs each read one round trip, not `replica_max_lag`.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from .. import logs
from ..config import Settings, redact
from ..errors import StoreUnavailableError
from .connection import connect, is_alive, reset_to_idle
from .deadline import guard
from .errors import is_connection_loss, reason
from .pool import ReadPool

__all__ = ["LsnTracker", "ReplicaReads", "current_lsn", "replay_lsn"]

log = logs.get_logger("eventstore_actors.replica")
T = TypeVar("T")
Conn = psycopg.Connection[Any]

#: Seconds a standby found down (or refusing) is left alone before it is tried again.
DOWN_FOR = 1.0
#: Polling of the standby's replay position while waiting: first and longest pause.
_POLL_FIRST = 0.0005
_POLL_MAX = 0.02

_CURRENT = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint"
_REPLAYED = (
    "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()"
    " ELSE pg_current_wal_lsn() END - '0/0'::pg_lsn)::bigint"
)


def current_lsn(conn: Conn) -> int:
    """The primary's WAL write position (after a commit on `conn`: at or past that commit)."""
    row = conn.execute(_CURRENT).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def replay_lsn(conn: Conn) -> int:
    """How far a standby has replayed (a server not in recovery: its own write position)."""
    row = conn.execute(_REPLAYED).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


class LsnTracker:
    """The WAL position of the store's last write (0: none yet). Thread-safe; only grows,
    except that `unknown()` makes the next read ask the primary (a write whose position could
    not be read after its commit)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.lsn = 0
        self.stale = False

    def note(self, lsn: int) -> None:
        with self._lock:
            if lsn > self.lsn:
                self.lsn = lsn

    def after_commit(self, conn: Conn) -> None:
        """Record the position after a commit on `conn` (best effort: else `stale`)."""
        try:
            self.note(current_lsn(conn))
        except psycopg.Error:
            self.stale = True

    def tracked(self, work: Callable[[Conn], T]) -> Callable[[Conn], T]:
        """`work` (an autocommit write), then its position recorded on the same connection."""

        def run(conn: Conn) -> T:
            result = work(conn)
            self.after_commit(conn)
            return result

        return run


class ReplicaReads:
    """`run(work)` like `ReadPool.run`, on the standby when it is fresh enough."""

    def __init__(self, settings: Settings, primary: ReadPool, tracker: LsnTracker) -> None:
        self._settings = settings.for_replica()
        self._primary = primary
        self._tracker = tracker
        self._max_lag = settings.replica_max_lag
        self._size = settings.pool_size + settings.pool_overflow
        self._idle: list[Conn] = []
        self._lock = threading.Lock()
        self._closed = False
        # Each connection's server's replay position last seen on it.
        self._replayed: weakref.WeakKeyDictionary[Conn, int] = weakref.WeakKeyDictionary()
        self._down_until = 0.0
        self._lagging = False  # lagged past max_lag: no more waiting until it caught up
        self.log = log.bind(replica=redact(self._settings.dsn))
        #: Counters for tests and figures: reads served by each side.
        self.replica_reads = 0
        self.primary_reads = 0

    # The small pool of standby connections --------------------------------------------------
    def _acquire(self) -> Conn:
        with self._lock:
            if self._closed:
                raise StoreUnavailableError("the event store is stopped")
            while self._idle:
                conn = self._idle.pop()
                if is_alive(conn):
                    return conn
                _close(conn)
        return connect(self._settings)

    def _release(self, conn: Conn) -> None:
        if not reset_to_idle(conn):
            _close(conn)
            return
        with self._lock:
            if not self._closed and len(self._idle) < self._size:
                self._idle.append(conn)
                return
        _close(conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            _close(conn)

    def _down(self, why: str) -> None:
        self._down_until = time.monotonic() + DOWN_FOR
        self.log.warning("replica unavailable; reading from the primary", error=why)

    # Reads ------------------------------------------------------------------------------------
    def run(self, work: Callable[[Conn], T]) -> T:
        """`work` on the standby once it has replayed the store's last write, else on the
        primary (see the module doc)."""
        return self.run_at_least(work, 0)

    def run_at_least(
        self,
        work: Callable[[Conn], T],
        lsn: int,
        primary: Callable[[Callable[[Conn], T]], T] | None = None,
    ) -> T:
        """`run`, with the standby also having replayed `lsn`; `primary` runs the fallback
        (default: the primary pool)."""
        fallback: Callable[[Callable[[Conn], T]], T] = (
            self._primary.run if primary is None else primary
        )
        if time.monotonic() < self._down_until:
            return self._on_primary(work, fallback)
        try:
            target = max(lsn, self._target())
        except StoreUnavailableError:  # the position of a write is unknown: the primary
            return self._on_primary(work, fallback)
        try:
            conn = self._acquire()
        except StoreUnavailableError as exc:
            if self._closed:
                raise
            self._down(str(exc))
            return self._on_primary(work, fallback)
        try:
            with guard(conn, self._settings.io_timeout):  # a frozen standby: the primary
                fresh = target <= self._seen(conn) or self._wait(conn, target)
                if fresh:
                    result = work(conn)
            if not fresh:
                self._release(conn)
                return self._on_primary(work, fallback)
        except psycopg.Error as exc:
            if is_connection_loss(exc, conn):
                _close(conn)
                self._down(reason(exc))
            else:  # a replay conflict, a timeout: this read goes to the primary
                self._release(conn)
                self.log.warning("replica read failed; reading from the primary", error=reason(exc))
            return self._on_primary(work, fallback)
        except BaseException:
            _close(conn)
            raise
        self._release(conn)
        self.replica_reads += 1
        return result

    def _on_primary(
        self, work: Callable[[Conn], T], fallback: Callable[[Callable[[Conn], T]], T]
    ) -> T:
        self.primary_reads += 1
        return fallback(work)

    def _target(self) -> int:
        tracker = self._tracker
        if tracker.stale:
            tracker.note(self._primary.run(current_lsn))
            tracker.stale = False
        return tracker.lsn

    def _seen(self, conn: Conn) -> int:
        """How far `conn`'s server had replayed when last asked on it (0: never asked)."""
        with self._lock:
            return self._replayed.get(conn, 0)

    def _wait(self, conn: Conn, target: int) -> bool:
        """Whether the standby replayed `target`, polling for at most replica_max_lag."""
        deadline = time.monotonic() + (0.0 if self._lagging else self._max_lag)
        pause = _POLL_FIRST
        while True:
            replayed = replay_lsn(conn)
            with self._lock:
                self._replayed[conn] = replayed
            if replayed >= target:
                self._lagging = False
                return True
            now = time.monotonic()
            if now >= deadline:
                if not self._lagging:
                    self._lagging = True
                    self.log.warning(
                        "replica lags more than replica_max_lag; reading from the primary",
                        lag_bytes=target - replayed,
                    )
                return False
            time.sleep(min(pause, deadline - now))
            pause = min(pause * 2, _POLL_MAX)


def _close(conn: Conn) -> None:
    try:
        conn.close()
    except psycopg.Error:
        pass
