"""Session-bound connections: the `Session` that holders of advisory locks use, and the
ending of orphaned backends (a connection given up client-side whose backend lives on)."""

from __future__ import annotations

from typing import Any

import psycopg

from .. import logs
from ..config import Settings
from ..errors import StoreUnavailableError
from .connection import connect
from .errors import is_gone, reason

__all__ = ["Session", "backend_pid", "end_orphan"]

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


def end_orphan(conn: psycopg.Connection[Any], pid: int | None) -> None:
    """Terminate our own earlier backend `pid` if it is still there.

    A connection given up client-side (the watchdog shut its socket, a proxy or middlebox
    froze) can leave its backend running on the server for hours, still holding what it held:
    a subscription's advisory lock, or the counter row lock of an append in progress, which
    would block every appender. The same role may end its own backends. Best effort.
    """
    if pid is None or pid == backend_pid(conn):
        return
    try:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid = %s AND usename = current_user AND datname = current_database()",
            (pid,),
        )
    except psycopg.Error as exc:
        log.warning("could not end an orphaned backend", pid=pid, error=reason(exc))


class Session:
    """The one way the store opens a connection for advisory locks (subscriptions, consumer
    group members): a dedicated session on `session_dsn` when the store has one (on `dsn`
    otherwise), one at a time, replaced after a loss.

    `get()` is the open connection, or a new one; `lost()` gives it up after a failure that
    may leave its backend running on the server (a frozen network path: packets dropped, no
    reset), still holding its locks; the next `get()` ends that backend (`end_orphan`, by the
    pid recorded when it opened) before anything else. `close()` closes on purpose.
    Not thread-safe: one owner at a time.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.conn: psycopg.Connection[Any] | None = None
        self.pid: int | None = None  # the open connection's real backend (None behind a pooler)
        self._orphan: int | None = None  # the backend of the connection lost before it

    def get(self) -> psycopg.Connection[Any]:
        """The open connection, or a new one (StoreUnavailableError if unreachable)."""
        conn = self.conn
        if conn is not None and not is_gone(conn):
            return conn
        if conn is not None:
            self.lost()
        conn = connect(self._settings, session=True)
        try:
            end_orphan(conn, self._orphan)
            pid = backend_pid(conn)  # known now: a broken connection forgets it
        except BaseException:
            conn.close()
            raise
        self.conn, self.pid, self._orphan = conn, pid, None
        return conn

    def lost(self) -> None:
        """Give the connection up after a failure: its backend is ended by the next `get`."""
        if self.conn is not None:
            self._orphan = self.pid
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
        """For an owner that will not reconnect: end the backend of a connection it lost, if
        any, on a connection opened for that alone (best effort, bounded by connect_timeout)."""
        if self._orphan is None:
            return
        self.close()
        try:
            self.get()
        except StoreUnavailableError as exc:
            log.warning("could not end an orphaned backend", pid=self._orphan, error=str(exc))
        finally:
            self._orphan = None
            self.close()
