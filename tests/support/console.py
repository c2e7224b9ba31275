"""Helpers of the console tests: a store with a parked event, uvicorn in a thread, and the
console command in a process of its own."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from eventstore_actors import EventData, EventStore
from support import QueueSubscriber, wait_until

#: Data that would run if the console inserted it as HTML.
SCRIPT = "<script>window.__pwned = true;</script><img src=x onerror='window.__pwned=1'>"


def seed(store: EventStore) -> None:
    """Two streams (one event holds HTML and script everywhere it can), and a subscription
    `proj` with one parked event whose reason holds markup too."""
    store.append_to_stream(
        "order-1",
        0,
        [
            EventData({"n": 1, "note": SCRIPT}, event_type="OrderPlaced<b>"),
            EventData({"n": 2}, event_type="OrderPaid", metadata={"who": SCRIPT}),
        ],
    )
    store.append_to_stream("customer-<i>1</i>", 0, [EventData({"n": 3}, event_type="Joined")])
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_all_streams("proj", subscriber)
    subscriber.subscribed()
    first = subscriber.batch()[0]
    sub.nack(first, "park", "cannot handle <b>this</b>")
    rest = subscriber.collect(sub, 2)  # the events after it come again, then the next stream
    assert [e.event_id for e in rest] == [2, 3]
    wait_until(lambda: store.subscription_info("proj").checkpoint == 3, what="checkpoint 3")
    wait_until(lambda: len(store.parked_events("proj")) == 1, what="one parked event")


def console_command(
    dsn: str, schema: str, port: int, *args: str, **env: str
) -> subprocess.Popen[str]:
    """`eventstore-actors console` on `port` with `args`, without a token, `env` added."""
    base = {k: v for k, v in os.environ.items() if k != "EVENTSTORE_CONSOLE_TOKEN"}
    command = [sys.executable, "-m", "eventstore_actors.cli", "console", "--dsn", dsn]
    return subprocess.Popen(
        [*command, "--schema", schema, "--port", str(port), *args],
        env={**base, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def served(asgi: Any) -> Iterator[str]:
    """`asgi` served by uvicorn on a free port of 127.0.0.1 in a thread; yields its base URL."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(
        asgi, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="console-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
