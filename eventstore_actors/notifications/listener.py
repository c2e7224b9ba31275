"""LISTEN on the store's channel on a dedicated connection, in a thread of its own.

Notifications sent while the connection is down are lost, so every (re)connect is followed by
a catch-up request: LISTEN first, then tell the publisher to read from storage.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import psycopg
import structlog

from ..config import Settings
from ..errors import StoreUnavailableError
from ..storage.connection import connect

__all__ = ["Listener"]

log = structlog.get_logger("eventstore_actors.listener")


class Listener:
    """Calls `on_notify(last_event_id)` per notification and `on_connect()` after each LISTEN.

    Notifications of commits made by the store instance `origin` itself are skipped: its writer
    hands those rows to the publisher directly.
    """

    def __init__(
        self,
        settings: Settings,
        origin: str,
        on_notify: Callable[[int], None],
        on_connect: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._origin = origin
        self._on_notify = on_notify
        self._on_connect = on_connect
        self._stop = threading.Event()
        self._control = settings.control_channel
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"eventstore-listener-{settings.schema}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        # A notification on the control channel wakes the blocked notifies() at once.
        try:
            with connect(self._settings) as conn:
                conn.execute("SELECT pg_notify(%s, 'stop')", (self._control,))
        except Exception:
            pass  # the timeout in notifies() is the backstop
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        delay = 0.05
        while not self._stop.is_set():
            try:
                with connect(self._settings) as conn:
                    conn.execute(f'LISTEN "{self._settings.channel}"')
                    conn.execute(f'LISTEN "{self._control}"')
                    delay = 0.05
                    self._on_connect()
                    self._listen(conn)
            except (psycopg.OperationalError, StoreUnavailableError) as exc:
                if self._stop.is_set():
                    return
                log.warning("listener connection lost; reconnecting", error=str(exc), delay=delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 2.0)

    def _listen(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        while not self._stop.is_set():
            for note in conn.notifies(timeout=1.0):
                if self._stop.is_set():
                    return
                if note.channel != self._settings.channel:
                    continue
                _, _, rest = note.payload.partition(",")
                last, _, origin = rest.partition(",")
                if origin == self._origin:
                    continue
                try:
                    self._on_notify(int(last))
                except ValueError:
                    log.warning("ignoring malformed notification")
