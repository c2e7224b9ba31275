"""A subscription's dedicated connection and the advisory lock it holds on the name.

The session-level lock is what makes one subscriber per name across processes; it lives and
dies with the connection. A lost connection (told apart from a failed statement by
`is_connection_loss`) raises `LockLost`, which is never a crash: the subscription stops
delivering, reconnects with back-off and takes the lock again. A statement that failed for a
reason of the moment (cancelled, timed out, a serialization failure, out of resources) raises
`Interrupted`: the connection and the lock are fine, and the work is simply done again later.
Every call runs under the watchdog (`io_timeout`), so a server that stops answering without
closing the connection is treated as a lost connection too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from ..config import Settings
from ..storage import locks, reader
from ..storage.connection import is_alive
from ..storage.deadline import guard
from ..storage.errors import is_connection_loss, is_gone, is_transient, reason, translate
from ..storage.sessions import Session

__all__ = ["Interrupted", "LockLost", "LockSession"]

T = TypeVar("T")


class LockLost(Exception):
    """The lock connection is gone, and the lock with it."""


class Interrupted(Exception):
    """A statement failed for a reason of the moment; the connection and the lock are fine."""


def run_guarded(
    conn: psycopg.Connection[Any],
    seconds: float,
    work: Callable[[psycopg.Connection[Any]], T],
    lost: Callable[[], None],
) -> T:
    """Run `work` on a lock connection under the watchdog. If the connection is gone:
    `lost()`, then LockLost; a statement failed for a reason of the moment: Interrupted;
    any other statement error becomes the contract's error (a real failure of the
    subscription; storage/errors.py)."""
    try:
        with guard(conn, seconds):
            return work(conn)
    except psycopg.Error as exc:
        if is_connection_loss(exc, conn):
            lost()
            raise LockLost(reason(exc)) from None
        if is_transient(exc):
            raise Interrupted(reason(exc)) from None
        raise translate(exc, conn) from None


class LockSession:
    def __init__(self, settings: Settings, key: str) -> None:
        self._settings = settings
        self._key = key
        self._session = Session(settings)  # ends the backend of a connection lost in use
        self._conn: psycopg.Connection[Any] | None = None  # the session's, while in use
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
        return run_guarded(conn, self._settings.io_timeout, work, self._lose)

    def _lose(self) -> None:
        self._session.lost()  # its backend may live on (a frozen network), locked
        self.drop()

    def read(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """A read: on this connection (see `SharedLockSession.read`)."""
        return self.run(work)

    def alive(self) -> bool:
        """Whether the lock is still held: the connection is open and its backend alive."""
        return self.locked and self._conn is not None and is_alive(self._conn)

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
        self._session.close()
