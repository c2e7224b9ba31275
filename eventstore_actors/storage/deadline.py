"""Deadlines for calls on dedicated connections: a silent server must not block an actor for ever.

TCP keepalives and `tcp_user_timeout` end a connection whose peer vanished, but not one whose
peer still acknowledges packets and never answers (a hung server process, a frozen proxy or
middlebox). One watchdog thread per process shuts down the socket of a call that outlives its
deadline; the blocked call then fails as a lost connection (`is_connection_loss`), and its
owner reconnects as after any other loss. The shutdown goes through a duplicate of the
connection's descriptor, so it can never hit another connection that reused the number.
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


class _Watchdog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[int, tuple[float, socket.socket]] = {}
        self._tokens = itertools.count(1)
        self._thread: threading.Thread | None = None

    @contextmanager
    def guard(self, conn: psycopg.Connection[Any], seconds: float) -> Iterator[None]:
        try:
            sock = socket.socket(fileno=os.dup(conn.fileno()))
        except (OSError, psycopg.Error):
            yield  # closed or broken already: the call fails on its own, at once
            return
        token = next(self._tokens)
        at = time.monotonic() + seconds
        with self._lock:
            self._calls[token] = (at, sock)
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
            sock.close()

    def _run(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                expired = [t for t, (at, _) in self._calls.items() if at <= now]
                for token in expired:
                    _, sock = self._calls.pop(token)
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass  # already closed by the peer
                    # the guarding call closes its own duplicate when it returns
            time.sleep(_RESOLUTION)  # polling: a guarded call never has to wake the thread


_WATCHDOG = _Watchdog()


def guard(conn: psycopg.Connection[Any], seconds: float) -> Any:
    """Context manager: shut `conn`'s socket down if the block takes longer than `seconds`."""
    return _WATCHDOG.guard(conn, seconds)
