"""A release-1 process (commit 9f5705b) for the rolling-upgrade tests, driven by JSON lines.

Run by `support.release1.Release1Process` with release 1's own tree first on PYTHONPATH, so
`eventstore_actors` here is release 1's package, not this checkout's. Usage: ``python
release1_child.py DSN SCHEMA``. One JSON command per line on stdin, one
``{"reply": CMD, "ok": bool, ...}`` line per command on stdout (nothing else goes there);
subscription messages are ``{"event": "events", "ids": [...]}`` lines. Logs go to stderr.

Commands: ping; append {stream, expected, count} (the error's type and text on failure);
write {streams} (appends one event at a time to each, a thread per stream, until
write_stop);
write_stop (the versions whose appends returned, and the errors); subscribe {name} (an
all-streams subscription acking each batch); stop.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import sys
import threading
import time
import traceback
from typing import Any

import eventstore_actors
from eventstore_actors import EventData, Events, EventStore

_out = threading.Lock()
#: Our replies only: release 1 prints its log lines to stdout (structlog's default), from any
#: thread, which would tear a reply line; everything else written to fd 1 goes to stderr.
_replies = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
sys.stdout = sys.stderr


def emit(message: dict[str, Any]) -> None:
    with _out:
        _replies.write(json.dumps(message) + "\n")
        _replies.flush()


class Reporter:
    def tell(self, message: Any) -> None:
        if isinstance(message, Events):
            emit({"event": "events", "ids": [e.event_id for e in message.events]})
            message.subscription.ack(message.events)


class Child:
    def __init__(self, dsn: str, schema: str) -> None:
        self.store = EventStore.start(dsn, schema=schema)
        self.stopping = threading.Event()
        self.writers: list[threading.Thread] = []
        self.written: dict[str, list[int]] = {}
        self.errors: list[str] = []

    def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        cmd = command["cmd"]
        if cmd == "ping":
            return {"file": eventstore_actors.__file__}
        if cmd == "append":
            events = [EventData({"n": n}, event_type="tests.R1") for n in range(command["count"])]
            try:
                self.store.append_to_stream(command["stream"], command["expected"], events)
            except Exception as exc:
                return {"error": type(exc).__name__, "message": str(exc)}
            return {}
        if cmd == "write":
            for stream in command["streams"]:
                self.written[stream] = []
                writer = threading.Thread(target=self._write, args=(stream,))
                writer.start()
                self.writers.append(writer)
            return {}
        if cmd == "write_stop":
            self.stopping.set()
            for writer in self.writers:
                writer.join(timeout=60)
            alive = any(writer.is_alive() for writer in self.writers)
            return {"written": self.written, "errors": self.errors, "alive": alive}
        if cmd == "subscribe":
            self.store.subscribe_to_all_streams(command["name"], Reporter())
            return {}
        raise ValueError(f"unknown command {cmd!r}")

    def _write(self, stream: str) -> None:
        version = 0
        while not self.stopping.is_set():
            try:
                self.store.append_to_stream(stream, version, [EventData({"v": version + 1})])
            except Exception as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.05)
                continue
            version += 1
            self.written[stream].append(version)


def main() -> None:
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # a stuck child tells where
    child = Child(sys.argv[1], sys.argv[2])
    try:
        for line in sys.stdin:
            command = json.loads(line)
            if command["cmd"] == "stop":
                break
            try:
                emit({"reply": command["cmd"], "ok": True, **child.handle(command)})
            except Exception as exc:
                traceback.print_exc()
                emit({"reply": command["cmd"], "ok": False, "error": repr(exc)})
    finally:
        child.stopping.set()
        child.store.stop()
        emit({"reply": "stop", "ok": True})


if __name__ == "__main__":
    main()
