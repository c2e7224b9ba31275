"""A holder that cannot look after its subscription is found stalled by everyone else.

An adversarial probe froze the process holding a subscription (SIGSTOP) and appended events:
for 12 s and more every reader showed it 'live', `status --check` exited 0, and nothing was
delivered; only the holder's own monitor thread applied the stall rule, and it was frozen
too. Now the holder vouches (renewed every stall_after / 2) that nothing of its stalls, and
readers find a held subscription stalled once that vouch ran out (subscriptions/health.py).
A second OS process holds the subscription here (tests/support/child.py), frozen with
SIGSTOP and always resumed (SIGCONT) before the test ends. Real PostgreSQL; bounded polls.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from support import ChildProcess, QueueSubscriber, events, wait_until
from support.cli import cli

from eventstore_actors import Events, EventStore, SubscriptionInfo

#: The holder's stall_after, and the spec's bound for finding a stall: stall_after + 5 s.
STALL = 2.0
FOUND_WITHIN = STALL + 5.0


def info(store: EventStore, name: str = "proj", stream: str = "$all") -> SubscriptionInfo:
    return store.subscription_info(name, stream)


def becomes(
    store: EventStore, state: str, name: str = "proj", timeout: float = 10.0, **fields: Any
) -> SubscriptionInfo:
    """Poll until the subscription is in `state` (with these field values); its info then."""

    def check() -> SubscriptionInfo | None:
        found = info(store, name)
        ok = found.state == state and all(getattr(found, k) == v for k, v in fields.items())
        return found if ok else None

    return wait_until(check, timeout=timeout, what=f"{name} to be {state} {fields}")


@contextmanager
def frozen(child: ChildProcess) -> Iterator[None]:
    """The child process stopped (SIGSTOP) for the block, resumed (SIGCONT) after it."""
    os.kill(child.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(child.proc.pid, signal.SIGCONT)


def hold(child: ChildProcess, **options: Any) -> None:
    """The child subscribes to all streams as 'proj' (acking every batch) and has started."""
    child.ok({"cmd": "subscribe", "stream": "$all", "name": "proj", "options": options})
    notice = child.notice()
    assert notice["event"] == "subscribed", notice


def status_check(dsn: str, schema: str, *extra: str) -> Any:
    return cli("status", "--check", "--dsn", dsn, "--schema", schema, *extra, timeout=60)


def test_a_frozen_holder_is_reported_stalled_by_another_process(
    dsn: str, schema: str, store: EventStore, child: ChildProcess
) -> None:
    hold(child, stall_after=STALL)
    store.append_to_stream("a", 0, events(1))
    becomes(store, "live", checkpoint=1, lag=0)  # the child acked it
    with frozen(child):
        store.append_to_stream("a", 1, events(5, start=2))
        appended = time.monotonic()
        found = becomes(store, "stalled", timeout=FOUND_WITHIN)
        assert time.monotonic() - appended <= FOUND_WITHIN
        assert found.active and found.lag == 5 and found.checkpoint == 1
        assert found.holder is not None and f"pid {child.proc.pid} " in found.holder
        assert found.lag_seconds is not None and found.lag_seconds >= STALL
        assert [r.state for r in store.subscriptions()] == ["stalled"]
        done = status_check(dsn, schema)
        assert done.returncode == 2, (done.stdout, done.stderr)
        row = next(line for line in done.stdout.splitlines() if " proj " in f" {line} ")
        assert row.split()[-1] == "stalled"
        shown = status_check(dsn, schema, "--json")
        assert shown.returncode == 2
        (sub,) = json.loads(shown.stdout)["subscriptions"]
        assert sub["state"] == "stalled" and sub["active"] is True
    # Resumed: it delivers and acks what came meanwhile, and is live again everywhere.
    becomes(store, "live", checkpoint=6, lag=0, timeout=15.0)
    done = status_check(dsn, schema)
    assert done.returncode == 0, (done.stdout, done.stderr)


def test_a_holder_with_batched_checkpoints_is_live_until_it_freezes(
    store: EventStore, child: ChildProcess
) -> None:
    """Its acks are stored only every 1000 events: the row's checkpoint trails (lag 3, no
    last_ack_at) for longer than stall_after + 5 s while the holder is fine, so a reader
    applying the stall rule to the row alone would call it stalled; its vouch says it is not.
    Frozen, it is stalled; resumed, live again."""
    hold(child, stall_after=STALL, checkpoint_threshold=1000)
    store.append_to_stream("a", 0, events(3))
    notice = child.notice()
    assert notice["event"] == "events" and len(notice["events"]) == 3  # acked in the child
    becomes(store, "live", lag=3)  # as its monitor wrote it
    healthy_until = time.monotonic() + FOUND_WITHIN + 1.0

    def still_live() -> bool:
        found = info(store)
        assert (found.state, found.lag, found.active) == ("live", 3, True), found
        assert found.last_ack_at is None
        return time.monotonic() >= healthy_until

    wait_until(still_live, timeout=FOUND_WITHIN + 10.0, interval=0.2)
    assert (info(store).lag_seconds or 0.0) >= FOUND_WITHIN
    with frozen(child):
        frozen_at = time.monotonic()
        found = becomes(store, "stalled", timeout=FOUND_WITHIN)
        assert time.monotonic() - frozen_at <= FOUND_WITHIN
        assert found.active and found.lag == 3
    becomes(store, "live", lag=3, timeout=10.0)


def test_a_subscriber_retrying_an_event_is_not_stalled_anywhere(
    make_store: Callable[..., EventStore],
) -> None:
    """Nacks restart the stall clock: a subscriber retrying one event (the checkpoint does
    not move, the event ages) is not stalled, for its holder nor for any reader, as long as
    its holder vouches for it."""
    holder, reader = make_store(), make_store()
    sub = QueueSubscriber()
    holder.subscribe_to_all_streams("proj", sub, stall_after=0.5, retry_delay=0.1, max_retries=1000)
    sub.subscribed()
    holder.append_to_stream("a", 0, events(1))
    until = time.monotonic() + 3.0
    while time.monotonic() < until:
        message = sub.next()
        assert isinstance(message, Events)
        message.subscription.nack(message.events[0], "retry")
        found = info(reader)
        assert found.state in ("live", "catching_up") and found.lag == 1, found
    assert (info(reader).lag_seconds or 0.0) >= 2.5
    assert sum(v for k, v in holder.metrics().items() if k.startswith("subscription_stalls")) == 0


@pytest.mark.parametrize(
    ("unvouched_for", "stall_after", "lag_seconds", "late"),
    [
        (None, 2.0, 100.0, False),  # no vouch of this holder (one of release 5): as written
        (5.0, None, 100.0, False),
        (-10.0, 2.0, 100.0, False),  # vouched for 10 s more
        (1.0, 2.0, 100.0, False),  # ran out, within the margin
        (3.0, 2.0, 100.0, True),
        (3.0, 2.0, 1.0, False),  # the oldest unacked event is younger than stall_after
        (3.0, 2.0, None, True),  # its age unknown: the vouch decides
    ],
)
def test_overdue_and_state_of(
    unvouched_for: float | None, stall_after: float | None, lag_seconds: float | None, late: bool
) -> None:
    from eventstore_actors.subscriptions.health import overdue, state_of

    assert overdue(unvouched_for, stall_after, lag_seconds) is late
    assert state_of(True, 3, "live", late) == ("stalled" if late else "live")
    assert state_of(True, 3, None, late) == ("stalled" if late else "catching_up")
    assert state_of(True, 0, "live", late) == "live"  # nothing to deliver: not stalled
    assert state_of(False, 3, "live", late) == "idle"
    assert state_of(True, 3, "stalled", False) == "stalled"
