"""Session-bound connections: the `Session` that holders of advisory locks use, and the
ending of orphaned backends (a connection given up client-side whose backend lives on):
`Orphan` ends one at once from a connection of its own, `end_orphan` on a given connection."""

from __future__ import annotations

import threading
from typing import Any

import psycopg

from .. import logs
from ..config import Settings
from ..errors import StoreUnavailableError
from .connection import connect
from .deadline import guard
from .errors import is_gone, reason

__all__ = ["Orphan", "Session", "backend_pid", "end_orphan"]

log = logs.get_logger("eventstore_actors.storage")  # warnings rate-limited


def backend_pid(conn: psycopg.Connection[Any] | None) -> int | None:
    """The server process of `conn` (None if unknown): remembered before a lost connection
    is dropped, so that its backend can be ended if it outlives the client (`end_orphan`).

    Asked of the server once (call it on a new connection): behind a pooler (PgBouncer) the
    pid the client was given is the pooler's invention, and the server process serving it
    is shared with other clients, so it must never be terminated: None then.
    """
    if conn is None:
        return None
    try:
        told = int(conn.pgconn.backend_pid)
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
    except Exception:
        return None
    return told if row is not None and told and int(str(row[0])) == told else None


def end_orphan(conn: psycopg.Connection[Any], pid: int | None) -> bool:
    """Terminate our own earlier backend `pid` if it is still there; whether that was done
    (or there was nothing to do), False when the statement failed.

    A connection given up client-side (the watchdog shut its socket, a proxy or middlebox
    froze) can leave its backend running on the server until the server's TCP keepalives
    notice (seconds with the store's startup options, hours with the server's defaults; never
    while a middlebox still acknowledges), still holding what it held: a subscription's
    advisory lock, or the counter row lock of an append in progress, which would block every
    appender. The same role may end its own backends. Best effort.
    """
    if pid is None or pid == backend_pid(conn):
        return True
    try:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid = %s AND usename = current_user AND datname = current_database()",
            (pid,),
        )
    except psycopg.Error as exc:
        log.warning("could not end an orphaned backend", pid=pid, error=reason(exc))
        return False
    return True


def _end_alone(settings: Settings, pid: int, session: bool) -> bool:
    """`end_orphan` on a short connection opened for that alone, the way the orphaned one
    was (see `connect`), bounded by connect_timeout and io_timeout."""
    try:
        conn = connect(settings, session=session)
    except StoreUnavailableError as exc:
        log.warning("could not end an orphaned backend", pid=pid, error=str(exc))
        return False
    try:
        with guard(conn, settings.io_timeout):
            return end_orphan(conn, pid)
    finally:
        conn.close()


class Orphan:
    """The backend `pid` of a connection given up while it may have been in use, ended at
    once (`at_once`) from a short connection of its own on a daemon thread, off its owner's
    path: what it holds (the counter row lock of an append under way, a subscription's
    advisory lock) is let go about a connect after the give-up, not when its owner next
    connects nor when the server notices the peer is gone.

    `pending` until that succeeded: the owner's next connection then ends it itself before
    anything else (`end_orphan`), and an owner that stops calls `settle`. `session`: the
    orphaned connection was opened with `connect(settings, session=True)`; the short one is
    opened the same way (the same server).
    """

    def __init__(
        self, settings: Settings, pid: int, *, session: bool, at_once: bool = True
    ) -> None:
        self.pid = pid
        self._settings = settings
        self._session = session
        self._ended = threading.Event()
        self._tried = threading.Event()  # the attempt at once is over (or none was made)
        if not at_once:
            self._tried.set()
            return
        threading.Thread(target=self._attempt, name=f"eventstore-orphan-{pid}", daemon=True).start()

    @property
    def pending(self) -> bool:
        """Whether it may still be there (not ended by an attempt of its own yet)."""
        return not self._ended.is_set()

    def end_on(self, conn: psycopg.Connection[Any]) -> None:
        """The owner's new connection `conn`: end the backend on it first, unless an attempt
        of its own did already (the one at once failed, or is still under way)."""
        if self.pending:
            end_orphan(conn, self.pid)

    def _attempt(self) -> None:
        try:
            if _end_alone(self._settings, self.pid, self._session):
                self._ended.set()
        finally:
            self._tried.set()

    def settle(self) -> None:
        """For an owner that will not reconnect: wait for the attempt under way, and if it
        failed make one more on this thread (each bounded by connect_timeout and io_timeout)."""
        settings = self._settings
        if self._tried.wait(settings.connect_timeout + settings.io_timeout + 1.0) and self.pending:
            self._attempt()


class Session:
    """The one way the store opens a connection for advisory locks (subscriptions, consumer
    group members): a dedicated session on `session_dsn` when the store has one (on `dsn`
    otherwise), one at a time, replaced after a loss.

    `get()` is the open connection, or a new one; `lost()` gives it up after a failure that
    may leave its backend running on the server (a frozen network path: packets dropped, no
    reset), still holding its locks, which would keep another process's subscription or
    member from taking them over: that backend is ended at once from a connection of its own
    (`Orphan`, by the pid recorded when it opened), and if that failed, by the next `get()`
    before anything else. `close()` closes on purpose. Not thread-safe: one owner at a time.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.conn: psycopg.Connection[Any] | None = None
        self.pid: int | None = None  # the open connection's real backend (None behind a pooler)
        self._orphan: Orphan | None = None  # the backend of the connection lost before it

    def get(self) -> psycopg.Connection[Any]:
        """The open connection, or a new one (StoreUnavailableError if unreachable)."""
        conn = self.conn
        if conn is not None and not is_gone(conn):
            return conn
        if conn is not None:
            self._give_up(at_once=False)  # ended below, before anything else
        conn = connect(self._settings, session=True)
        try:
            if self._orphan is not None:
                self._orphan.end_on(conn)
            pid = backend_pid(conn)  # known now: a broken connection forgets it
        except BaseException:
            conn.close()
            raise
        self.conn, self.pid, self._orphan = conn, pid, None
        return conn

    def lost(self) -> None:
        """Give the connection up after a failure: its backend is ended at once (`Orphan`),
        or else by the next `get`."""
        self._give_up(at_once=True)

    def _give_up(self, *, at_once: bool) -> None:
        if self.conn is not None and self.pid is not None:
            self._orphan = Orphan(self._settings, self.pid, session=True, at_once=at_once)
        self.close()

    def close(self) -> None:
        """Close the connection (its session's locks go with it)."""
        conn, self.conn, self.pid = self.conn, None, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass

    def settle(self) -> None:
        """For an owner that will not reconnect: make sure the backend of a connection it
        lost, if any, was ended (best effort, see `Orphan.settle`)."""
        orphan, self._orphan = self._orphan, None
        if orphan is not None:
            orphan.settle()
