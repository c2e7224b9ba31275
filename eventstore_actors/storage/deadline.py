"""Deadlines for calls on dedicated connections: a silent server must not block an actor for ever.

TCP keepalives and `tcp_user_timeout` end a connection whose peer vanished, but not one whose
peer still acknowledges packets and never answers (a hung server process, a frozen proxy or
middlebox). One watchdog thread per process shuts down the socket of a call that outlives its
deadline; the blocked call then fails as a lost connection (`is_connection_loss`), and its
owner reconnects as after any other loss.

Guarding costs no system call (a guarded call is usually on the append or delivery path,
where every GIL release means waiting for the GIL again behind the application's threads):
the connection and its descriptor number are registered, and only at the deadline is the
socket shut down, through a duplicate of the descriptor, after checking under the lock that
the connection is still open on that number. (A connection closed by its own call in the
instant between that check and the shutdown, and its number reused at once, is the one case
where another connection could be cut: it would then fail as a lost connection, no worse.)
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

__all__ = ["guard"]

#: How late past its deadline a call may be ended.
_RESOLUTION = 0.1
#: Seconds with nothing guarded after which the thread ends (no store running: no thread
#: waking ten times a second for nothing).
_IDLE_EXIT = 2.0


class _Watchdog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[int, tuple[float, psycopg.Connection[Any], int]] = {}
        self._tokens = itertools.count(1)
        self._thread: threading.Thread | None = None

    @contextmanager
    def guard(self, conn: psycopg.Connection[Any], seconds: float) -> Iterator[None]:
        try:
            fd = conn.fileno()
        except psycopg.Error:
            yield  # closed or broken already: the call fails on its own, at once
            return
        token = next(self._tokens)
        at = time.monotonic() + seconds
        with self._lock:
            self._calls[token] = (at, conn, fd)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="eventstore-watchdog", daemon=True
                )
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._calls.pop(token, None)

    def _run(self) -> None:
        idle_since = time.monotonic()
        while True:
            with self._lock:
                now = time.monotonic()
                expired = [t for t, (at, _, _) in self._calls.items() if at <= now]
                for token in expired:
                    _, conn, fd = self._calls.pop(token)
                    _shut_down(conn, fd)
                if self._calls:
                    idle_since = now
                elif now - idle_since >= _IDLE_EXIT:  # nothing guarded for a while: the
                    self._thread = None  # next guard starts a new thread
                    return
            time.sleep(_RESOLUTION)  # polling: a guarded call never has to wake the thread


def _shut_down(conn: psycopg.Connection[Any], fd: int) -> None:
    """Shut down `conn`'s socket if it is still open on descriptor `fd` (called under the
    watchdog's lock: the guarded call cannot return meanwhile)."""
    try:
        if conn.closed or conn.fileno() != fd:
            return
        sock = socket.socket(fileno=os.dup(fd))
    except (OSError, psycopg.Error):
        return  # closed meanwhile: the call has failed on its own
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the peer
    finally:
        sock.close()


_WATCHDOG = _Watchdog()


def guard(conn: psycopg.Connection[Any], seconds: float) -> Any:
    """Context manager: shut `conn`'s socket down if the block takes longer than `seconds`."""
    return _WATCHDOG.guard(conn, seconds)
