"""Subscribers for the benchmarks: an inbox stamping each message on arrival, a raw listener."""

from __future__ import annotations

import queue
import threading
from typing import Any

import psycopg
from psycopg import sql as pgsql

from . import raw
from .harness import now
from .schema import BenchSchema

__all__ = ["Inbox", "RawListener"]


class Inbox:
    """A subscriber for the API (`tell`): queues (arrival time, message) for the bench thread.

    The bench thread acks, as an application's actor would from its own thread.
    """

    def __init__(self) -> None:
        self.queue: queue.Queue[tuple[float, Any]] = queue.Queue()

    def tell(self, message: Any) -> None:
        self.queue.put((now(), message))

    def get(self, timeout: float) -> tuple[float, Any]:
        return self.queue.get(timeout=timeout)


class RawListener:
    """The raw delivery path: LISTEN on a dedicated connection, read the notified id range on
    a second one, decode, and queue (arrival time, rows)."""

    def __init__(self, schema: BenchSchema) -> None:
        self._schema = schema
        self.queue: queue.Queue[tuple[float, list[raw.Row]]] = queue.Queue()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bench-raw-listener", daemon=True)

    def __enter__(self) -> RawListener:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"raw listener did not start: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def get(self, timeout: float) -> tuple[float, list[raw.Row]]:
        return self.queue.get(timeout=timeout)

    def _run(self) -> None:
        try:
            with self._schema.connect() as listen, self._schema.connect() as read:
                channel = raw.channel(self._schema.name)
                listen.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(channel)))
                self._ready.set()
                while not self._stop.is_set():
                    for note in listen.notifies(timeout=0.2, stop_after=1):
                        first, last = note.payload.split(",")
                        rows = raw.read_range(read, int(first), int(last))
                        self.queue.put((now(), rows))
        except (psycopg.Error, OSError) as exc:
            self._error = exc
            self._ready.set()
