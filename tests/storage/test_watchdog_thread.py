"""The deadline watchdog's thread ends once nothing is guarded (no store running): an
adversarial probe found it waking ten times a second for the rest of the process after every
store had stopped."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from support import events, wait_until

from eventstore_actors import EventStore, lifetime


def _watchdogs() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "eventstore-watchdog"]


def test_the_watchdog_thread_ends_when_no_store_runs(make_store: Callable[..., EventStore]) -> None:
    store = make_store()
    store.append_to_stream("s", 0, events(2))
    assert _watchdogs(), "appends are guarded by the watchdog"
    store.stop()
    if lifetime._running:  # another test's store still runs in this process
        pytest.skip("another store runs in this process")
    wait_until(lambda: not _watchdogs(), timeout=10.0, what="the watchdog thread to end")
    again = make_store()  # a new guard starts a new thread
    again.append_to_stream("t", 0, events(1))
    assert _watchdogs()
