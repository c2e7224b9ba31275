"""A second OS process for the multi-process tests: an EventStore driven by JSON lines.

Usage: ``python child.py DSN SCHEMA``. Reads one JSON command per line on stdin and answers
each with one line ``{"reply": CMD, "ok": bool, ...}`` on stdout. Subscription messages are
reported as ``{"event": "subscribed"|"events", "key": KEY, ...}`` lines, where KEY is
``"<stream_uuid>/<name>"``. Logs go to stderr.

Commands: ping; append {stream, expected, count, start}; write {streams, events, seed,
max_batch, pause, seconds} (appends in a background thread, owning `streams`, until `events`
were appended or `seconds` passed); write_join; subscribe
{stream ("$all" for all streams), name, auto_ack, partitions, options (more subscribe keyword
arguments: stall_after, checkpoint_threshold, ...)}; ack {key, position};
unsubscribe {stream, name}; stop.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
import traceback
from typing import Any

import structlog

from eventstore_actors import (
    EventData,
    Events,
    EventStore,
    StreamNotFoundError,
    Subscribed,
    Subscription,
)

_out_lock = threading.Lock()


def emit(message: dict[str, Any]) -> None:
    line = json.dumps(message)
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class Reporter:
    """A subscriber reporting what it receives to the parent; acks at once if `auto_ack`."""

    def __init__(self, key: str, auto_ack: bool) -> None:
        self.key = key
        self.auto_ack = auto_ack

    def tell(self, message: Any) -> None:
        if isinstance(message, Subscribed):
            emit({"event": "subscribed", "key": self.key})
        elif isinstance(message, Events):
            emit(
                {
                    "event": "events",
                    "key": self.key,
                    "events": [
                        [e.event_id, e.stream_uuid, e.stream_version, e.data]
                        for e in message.events
                    ],
                }
            )
            if self.auto_ack:
                message.subscription.ack(message.events)


class Child:
    def __init__(self, dsn: str, schema: str) -> None:
        self.store = EventStore.start(dsn, schema=schema)
        self.subs: dict[str, Subscription] = {}
        self.writer: threading.Thread | None = None
        self.write_result: dict[str, Any] = {}

    def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        cmd = command["cmd"]
        if cmd == "ping":
            return {}
        if cmd == "append":
            start = int(command.get("start", 1))
            events = [
                EventData(data={"n": n}, event_type="tests.Child")
                for n in range(start, start + int(command["count"]))
            ]
            self.store.append_to_stream(command["stream"], int(command["expected"]), events)
            return {}
        if cmd == "write":
            self.write_result = {}
            self.writer = threading.Thread(target=self._write, args=(command,), daemon=True)
            self.writer.start()
            return {}
        if cmd == "write_join":
            if self.writer is not None:
                self.writer.join(timeout=float(command.get("timeout", 60)))
                if self.writer.is_alive():
                    raise TimeoutError("the writer thread is still running")
            return dict(self.write_result)
        if cmd == "subscribe":
            stream, name = command["stream"], command["name"]
            key = f"{stream}/{name}"
            reporter = Reporter(key, bool(command.get("auto_ack", True)))
            start_from = command.get("start_from", "origin")
            options = dict(command.get("options", {}))
            if stream == "$all":
                sub = self.store.subscribe_to_all_streams(
                    name,
                    reporter,
                    start_from=start_from,
                    partitions=command.get("partitions"),
                    **options,
                )
            else:
                sub = self.store.subscribe_to_stream(
                    stream, name, reporter, start_from=start_from, **options
                )
            self.subs[key] = sub
            return {"key": key}
        if cmd == "ack":
            self.subs[command["key"]].ack(int(command["position"]))
            return {}
        if cmd == "unsubscribe":
            stream, name = command["stream"], command["name"]
            if stream == "$all":
                self.store.unsubscribe_from_all_streams(name)
            else:
                self.store.unsubscribe_from_stream(stream, name)
            self.subs.pop(f"{stream}/{name}", None)
            return {}
        raise ValueError(f"unknown command {cmd!r}")

    def _write(self, command: dict[str, Any]) -> None:
        """Append `events` events in random batches to `streams` (which only this process
        writes), recording the final version of each stream."""
        rng = random.Random(command.get("seed", 0))
        streams: list[str] = list(command["streams"])
        versions = dict.fromkeys(streams, 0)
        remaining = int(command["events"])
        max_batch = int(command.get("max_batch", 5))
        pause = float(command.get("pause", 0.0))  # pacing between appends, at random
        seconds = command.get("seconds")
        deadline = None if seconds is None else time.monotonic() + float(seconds)
        appended = 0
        errors: list[str] = []
        try:
            while remaining > 0 and (deadline is None or time.monotonic() < deadline):
                if pause:
                    time.sleep(rng.uniform(0, pause))
                stream = rng.choice(streams)
                size = min(remaining, rng.randint(1, max_batch))
                version = versions[stream]
                batch = [
                    EventData(data={"w": "child", "v": version + i}, event_type="tests.Soak")
                    for i in range(1, size + 1)
                ]
                try:
                    self.store.append_to_stream(stream, version, batch)
                except Exception as exc:  # StoreUnavailableError: retried after a re-read
                    errors.append(repr(exc))
                    if len(errors) > 20:
                        raise
                    try:
                        current = self.store.read_stream_forward(stream, version + 1, 10_000)
                    except StreamNotFoundError:
                        current = []
                    versions[stream] = version + len(current)
                    remaining -= len(current)
                    appended += len(current)
                    continue
                versions[stream] = version + size
                remaining -= size
                appended += size
        except Exception:
            errors.append(traceback.format_exc())
        self.write_result = {"appended": appended, "versions": versions, "errors": errors}

    def stop(self) -> None:
        self.store.stop()


def main() -> int:
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    dsn, schema = sys.argv[1], sys.argv[2]
    child = Child(dsn, schema)
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            command = json.loads(line)
            if command["cmd"] == "stop":
                child.stop()
                emit({"reply": "stop", "ok": True})
                return 0
            try:
                result = child.handle(command)
            except Exception as exc:
                emit(
                    {
                        "reply": command["cmd"],
                        "ok": False,
                        "error": type(exc).__name__,
                        "message": str(exc),
                    }
                )
            else:
                emit({"reply": command["cmd"], "ok": True, **result})
    finally:
        child.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
