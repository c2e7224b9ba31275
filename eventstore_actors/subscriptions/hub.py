"""One session connection holding every advisory lock of a store's subscriptions.

With `shared_lock_session`, a store's subscriptions do not open a dedicated connection each
(`LockSession`): they share its `LockHub`, one session connection (on `session_dsn` when
given) used under a mutex. Each subscription gets a `SharedLockSession`, with the same
interface as `LockSession`, so the subscription actors do not change.

Fencing: a lock and the checkpoint writes it guards go through the same connection, so they
die together. Every connection the hub opens starts a new generation; a session's lock
belongs to the generation it was taken in. When the connection is lost (seen by any
session's statement or probe), every lock of that generation is lost at once: each session's
`alive()` turns False and its `run()` raises `LockLost`, so every subscription stops
delivering on its next tick (or before its next batch), reconnects, retakes its lock and
reloads its checkpoint, exactly as after losing a dedicated connection.

Advisory locks are re-entrant within one session: the hub keeps the set of names it holds,
so a second subscription of the same name in this store is refused as another process's
would be.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from ..config import Settings
from ..sql import statement
from ..storage import reader
from ..storage.connection import (
    backend_pid,
    connect,
    end_orphan,
    is_alive,
    is_connection_loss,
    is_transient,
    reason,
    unavailable,
)
from ..storage.deadline import guard
from .lock import Interrupted, LockLost

__all__ = ["LockHub", "SharedLockSession"]

T = TypeVar("T")


class LockHub:
    """The store's shared lock connection (thread-safe: every call holds `_mutex`)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._mutex = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._pid: int | None = None
        self._orphan: int | None = None  # backend of a connection given up while in use
        self.generation = 0  # bumped by every connection opened
        self._held: set[str] = set()  # keys locked in the current generation
        self._closed = False

    # Called with the mutex held -------------------------------------------------------------
    def _ensure(self) -> None:
        conn = self._conn
        if conn is not None and not (conn.closed or conn.broken):
            return
        self._lose()
        if self._closed:
            raise LockLost("the store is stopping")
        conn = connect(self._settings, session=True)  # StoreUnavailableError if unreachable
        try:
            # The lost connection's backend may live on (a frozen network), holding locks.
            end_orphan(conn, self._orphan)
            self._orphan = None
            self._pid = backend_pid(conn)
            # Losing the last acks in a server crash only means re-delivery (at least once).
            with guard(conn, self._settings.io_timeout):
                conn.execute("SET synchronous_commit = off")
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self.generation += 1

    def _lose(self) -> None:
        """The connection is gone: so is every lock of its generation."""
        conn, self._conn = self._conn, None
        self._held.clear()
        if conn is not None:
            self._orphan = self._pid
            try:
                conn.close()
            except psycopg.Error:
                pass

    def _run(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        conn = self._conn
        if conn is None:
            raise LockLost("no lock connection")
        try:
            with guard(conn, self._settings.io_timeout):
                return work(conn)
        except psycopg.Error as exc:
            if is_connection_loss(exc, conn):
                self._lose()
                raise LockLost(reason(exc)) from None
            if is_transient(exc):
                raise Interrupted(reason(exc)) from None
            raise unavailable(exc) from None

    def _current(self, key: str, generation: int) -> bool:
        return generation == self.generation and key in self._held and self._conn is not None

    # For SharedLockSession ----------------------------------------------------------------------
    def connect(self) -> None:
        with self._mutex:
            self._ensure()

    def try_lock(self, key: str) -> int | None:
        """The generation the lock was taken in, or None (held elsewhere, or here)."""
        with self._mutex:
            self._ensure()
            if key in self._held:
                return None
            params = {"key": key}
            row = self._run(lambda c: c.execute(statement("subscriptions/lock"), params).fetchone())
            if not (row and row[0]):
                return None
            self._held.add(key)
            return self.generation

    def run(self, key: str, generation: int, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """`work` on the connection, if the lock `key` of `generation` is still held."""
        with self._mutex:
            if not self._current(key, generation):
                raise LockLost("the shared lock connection was lost")
            return self._run(work)

    def alive(self, key: str, generation: int) -> bool:
        """Whether the lock is still held; a round trip only if the socket has something to
        say (see `is_alive`). A connection busy with another session's call is alive."""
        if not self._mutex.acquire(blocking=False):
            return generation == self.generation and key in self._held
        try:
            if not self._current(key, generation):
                return False
            assert self._conn is not None
            if is_alive(self._conn):
                return True
            self._lose()
            return False
        finally:
            self._mutex.release()

    def unlock(self, key: str, generation: int) -> None:
        """Release the lock if this generation still holds it (else it went with the
        connection)."""
        with self._mutex:
            if not self._current(key, generation):
                return
            self._held.discard(key)
            conn = self._conn
            assert conn is not None
            try:
                with guard(conn, self._settings.io_timeout):
                    conn.execute(statement("subscriptions/unlock"), {"key": key})
            except psycopg.Error as exc:
                if is_connection_loss(exc, conn):
                    self._lose()

    def backend(self) -> int | None:
        """The pid of the hub's backend (None: not connected)."""
        with self._mutex:
            return self._pid if self._conn is not None else None

    def close(self) -> None:
        """Close the connection (every lock goes with it); no reconnect afterwards."""
        with self._mutex:
            self._closed = True
            self._orphan = None
            self._lose()


class SharedLockSession:
    """`LockSession`'s interface for one subscription's lock on a `LockHub`."""

    def __init__(self, hub: LockHub, key: str) -> None:
        self._hub = hub
        self._key = key
        self._generation = -1
        self.locked = False

    def connect(self) -> None:
        self._hub.connect()

    def try_lock(self) -> bool:
        generation = self._hub.try_lock(self._key)
        self.locked = generation is not None
        if generation is not None:
            self._generation = generation
        return self.locked

    def run(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """`work` on the hub's connection while this lock holds: LockLost otherwise."""
        if not self.locked:
            raise LockLost("no lock held")
        try:
            return self._hub.run(self._key, self._generation, work)
        except LockLost:
            self.locked = False
            raise

    def alive(self) -> bool:
        return self.locked and self._hub.alive(self._key, self._generation)

    def head(self, stream_uuid: str | None) -> int:
        if stream_uuid is None:
            return self.run(reader.last_event_id)
        return self.run(lambda c: reader.stream_version(c, stream_uuid)) or 0

    def release(self) -> None:
        self.drop()

    def drop(self) -> None:
        """Let go of the lock (the hub's connection stays for the others)."""
        if self.locked:
            self.locked = False
            self._hub.unlock(self._key, self._generation)
