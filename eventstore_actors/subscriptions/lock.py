"""A subscription's dedicated connection and the advisory lock it holds on the name.

The session-level lock is what makes one subscriber per name across processes; it lives and
dies with the connection. A lost connection (told apart from a failed statement by
`is_connection_loss`) raises `LockLost`, which is never a crash: the subscription stops
delivering, reconnects with back-off and takes the lock again. A statement that failed for a
reason of the moment (cancelled, timed out, a serialization failure, out of resources) raises
`Interrupted`: the connection and the lock are fine, and the work is simply done again later.
Every call runs under the watchdog (`io_timeout`), so a server that stops answering without
closing the connection is treated as a lost connection too.

A lock is reported held (`alive()`) only under a `Lease`: while the last round trip on its
connection that was answered started less than `LEASE` seconds ago. Between round trips,
`alive()` only looks at the socket: a backend that was ended writes its farewell there, but
on a frozen network path (packets dropped, no reset) the farewell never arrives, and the
backend may be gone, its lock taken by another process. Once the lease has run out, `alive()`
makes a round trip itself before saying yes, so a holder whose connection stopped answering
stops delivering within `LEASE` of the last answer it had (see `LEASE` for the choice), not
after `io_timeout`. A dedicated connection's health check (once a second) renews it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from ..config import Settings
from ..errors import EventStoreError
from ..storage import locks, reader
from ..storage.connection import has_input, ping
from ..storage.deadline import guard
from ..storage.errors import is_connection_loss, is_gone, is_transient, reason, translate
from ..storage.sessions import Session

__all__ = ["LEASE", "Interrupted", "Lease", "LockLost", "LockSession"]

T = TypeVar("T")

#: Seconds a lock is reported held after the start of the last round trip on its connection
#: that was answered. Three times the interval at which that connection is probed when idle
#: (the shared connection's probe, `hub._PROBE_INTERVAL`; a dedicated connection's health
#: check, `ticking.HEALTH_INTERVAL`: both 1 s), and any other statement renews it too: a
#: probe late by up to two seconds (a loaded machine: its thread waiting for the GIL, or for
#: the connection behind other calls) leaves it held. Running out costs little (no lock is
#: given up: the next check waits for the connection and makes a round trip itself), but it
#: pauses deliveries, so it must not run out on a merely slow machine; and it is the bound on
#: how long a holder whose connection stopped answering goes on delivering after its last
#: answer, while another process may already hold the name.
LEASE = 3.0


class LockLost(Exception):
    """The lock connection is gone, and the lock with it."""


class Interrupted(Exception):
    """A statement failed for a reason of the moment; the connection and the lock are fine."""


class Lease:
    """When the last answered round trip on a lock connection started (see `LEASE`):
    renewed by the calls on that connection (one at a time), read from any thread."""

    __slots__ = ("_since",)

    def __init__(self) -> None:
        self._since = -math.inf  # nothing answered yet: run out

    def renew(self, started: float) -> None:
        """A round trip that started at `started` (monotonic) was answered: the backend was
        alive, holding its locks, at some moment after that."""
        if started > self._since:
            self._since = started

    def held(self) -> bool:
        return time.monotonic() - self._since < LEASE

    def end(self) -> None:
        self._since = -math.inf


def run_guarded(
    conn: psycopg.Connection[Any],
    seconds: float,
    work: Callable[[psycopg.Connection[Any]], T],
    lost: Callable[[], None],
    lease: Lease | None = None,
) -> T:
    """Run `work` on a lock connection under the watchdog. If the connection is gone:
    `lost()`, then LockLost; a statement failed for a reason of the moment: Interrupted;
    any other statement error becomes the contract's error (a real failure of the
    subscription; storage/errors.py). `lease` is renewed when the server answered, with
    results or with an error of its own."""
    started = time.monotonic()
    try:
        with guard(conn, seconds):
            result = work(conn)
    except psycopg.Error as exc:
        if is_connection_loss(exc, conn):
            lost()
            raise LockLost(reason(exc)) from None
        if lease is not None and exc.sqlstate is not None:  # the server's answer
            lease.renew(started)
        if is_transient(exc):
            raise Interrupted(reason(exc)) from None
        raise translate(exc, conn) from None
    if lease is not None:
        lease.renew(started)
    return result


class LockSession:
    def __init__(self, settings: Settings, key: str) -> None:
        self._settings = settings
        self._key = key
        self._session = Session(settings)  # ends the backend of a connection lost in use
        self._conn: psycopg.Connection[Any] | None = None  # the session's, while in use
        self._lease = Lease()
        self.locked = False

    def connect(self) -> None:
        """Open the connection if there is none (StoreUnavailableError if unreachable)."""
        if self._conn is not None and not is_gone(self._conn):
            return
        self.drop()
        self._conn = self._session.get()
        self.run(locks.relax_commits)  # a lost ack is only a re-delivery

    def try_lock(self) -> bool:
        self.locked = self.run(lambda c: locks.try_lock(c, self._key))
        return self.locked

    def run(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run `work` on the connection (see `run_guarded`)."""
        conn = self._conn
        if conn is None:
            raise LockLost("no lock connection")
        return run_guarded(conn, self._settings.io_timeout, work, self._lose, self._lease)

    def _lose(self) -> None:
        self._session.lost()  # its backend may live on (a frozen network), locked
        self.drop()

    def read(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """A read: on this connection (see `SharedLockSession.read`)."""
        return self.run(work)

    def alive(self) -> bool:
        """Whether the lock is still held: the connection is open and its backend alive. No
        round trip while the lease holds and the socket has nothing to say; else one (the
        caller waits for it, at most `io_timeout`: then the connection is lost)."""
        conn = self._conn
        if not self.locked or conn is None or is_gone(conn):
            return False
        if self._lease.held() and not has_input(conn):
            return True
        try:
            self.run(ping)
        except LockLost:
            return False
        except (Interrupted, EventStoreError):
            pass  # answered, with an error: alive (the lease says whether it was the server)
        return self.locked and self._lease.held()

    def head(self, stream_uuid: str | None) -> int:
        """A round trip that also tells the last position of the stream (None: of $all):
        LockLost if the connection died while idle."""
        if stream_uuid is None:
            return self.run(reader.last_event_id)
        return self.run(lambda c: reader.stream_version(c, stream_uuid)) or 0

    def release(self) -> None:
        """Unlock explicitly, then close: closing alone returns before the backend has let
        go of the lock, and a resubscribe right after would be refused."""
        conn = self._conn
        frozen = False
        if conn is not None and self.locked and not is_gone(conn):
            try:
                with guard(conn, self._settings.io_timeout):
                    locks.unlock(conn, self._key)
            except psycopg.Error as exc:  # closing below releases it, if the server hears it
                if is_connection_loss(exc, conn):
                    frozen = True  # a frozen path: its backend lives on, locked
                    self._session.lost()
        self.drop()
        if frozen:  # no reconnect follows to end that backend: now (new connections may pass)
            self._session.settle()

    def drop(self) -> None:
        """Close without unlocking (the connection is gone or the lock is not held)."""
        self._conn, self.locked = None, False
        self._lease.end()
        self._session.close()
