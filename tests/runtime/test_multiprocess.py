"""Two OS processes sharing one database: delivery across processes and one subscriber per name.

The other process is `tests/support/child.py`, an EventStore on the same dsn and schema,
driven by JSON lines (see support.ChildProcess).
"""

from __future__ import annotations

import signal

import pytest
from support import (
    ChildProcess,
    QueueSubscriber,
    checkpoint,
    events,
    subscribe_retrying,
    wait_until,
)

from eventstore_actors import EventStore, SubscriptionAlreadyExistsError

ALL = "$all"


def child_events(child: ChildProcess, key: str, count: int) -> list[list[object]]:
    """The next `count` events the child reports for subscription `key` (skips Subscribed)."""
    got: list[list[object]] = []
    while len(got) < count:
        notice = child.notice()
        if notice["event"] == "events":
            assert notice["key"] == key
            got.extend(notice["events"])
    return got


def test_event_appended_in_one_process_is_delivered_in_the_other(
    store: EventStore, child: ChildProcess
) -> None:
    q = QueueSubscriber()
    sub = store.subscribe_to_all_streams("here", q)
    q.subscribed()
    child.ok({"cmd": "subscribe", "stream": ALL, "name": "there", "auto_ack": True})
    assert child.notice()["event"] == "subscribed"

    child.ok({"cmd": "append", "stream": "from-child", "expected": 0, "count": 2})
    batch = q.batch()
    assert [(e.event_id, e.stream_uuid, e.data) for e in batch] == [
        (1, "from-child", {"n": 1}),
        (2, "from-child", {"n": 2}),
    ]
    sub.ack(batch)

    store.append_to_stream("from-parent", 0, events(1, start=3))
    got = child_events(child, f"{ALL}/there", 3)
    assert [(e[0], e[1], e[2]) for e in got] == [
        (1, "from-child", 1),
        (2, "from-child", 2),
        (3, "from-parent", 1),
    ]
    assert [e.event_id for e in q.batch()] == [3]


def test_stream_subscription_in_the_other_process(store: EventStore, child: ChildProcess) -> None:
    store.append_to_stream("noise", 0, events(3))
    child.ok({"cmd": "subscribe", "stream": "s", "name": "there", "auto_ack": True})
    assert child.notice()["event"] == "subscribed"
    store.append_to_stream("s", 0, events(2))
    store.append_to_stream("noise", 3, events(1))
    store.append_to_stream("s", 2, events(1, start=3))
    got = child_events(child, "s/there", 3)
    assert [(e[0], e[2]) for e in got] == [(4, 1), (5, 2), (7, 3)]
    wait_until(lambda: checkpoint(store.settings.dsn, store.settings.schema, "s", "there") == 3)


def test_name_held_in_the_child_is_refused_here_until_released(
    store: EventStore, child: ChildProcess
) -> None:
    child.ok({"cmd": "subscribe", "stream": ALL, "name": "shared"})
    loser = QueueSubscriber()
    with pytest.raises(SubscriptionAlreadyExistsError):
        store.subscribe_to_all_streams("shared", loser)
    loser.nothing(0.2)
    # Another name, and the same name on a stream, are other subscriptions.
    store.subscribe_to_all_streams("other", QueueSubscriber())
    store.subscribe_to_stream("s", "shared", QueueSubscriber())

    child.ok({"cmd": "unsubscribe", "stream": ALL, "name": "shared"})
    winner = QueueSubscriber()
    subscribe_retrying(lambda: store.subscribe_to_all_streams("shared", winner), timeout=2.0)
    winner.subscribed()


def test_name_held_here_is_refused_in_the_child_until_released(
    store: EventStore, child: ChildProcess
) -> None:
    q = QueueSubscriber()
    store.subscribe_to_stream("s", "shared", q)
    reply = child.request({"cmd": "subscribe", "stream": "s", "name": "shared"})
    assert not reply["ok"]
    assert reply["error"] == "SubscriptionAlreadyExistsError"
    store.unsubscribe_from_stream("s", "shared")
    wait_until(
        lambda: child.request({"cmd": "subscribe", "stream": "s", "name": "shared"})["ok"],
        timeout=3.0,
        interval=0.05,
        what="the child to get the name",
    )


def test_a_killed_process_frees_its_names_and_keeps_its_checkpoints(
    store: EventStore, child: ChildProcess, dsn: str, schema: str
) -> None:
    store.append_to_stream("s", 0, events(5))
    child.ok({"cmd": "subscribe", "stream": ALL, "name": "shared", "auto_ack": False})
    assert child.notice()["event"] == "subscribed"
    assert [e[0] for e in child_events(child, f"{ALL}/shared", 5)] == [1, 2, 3, 4, 5]
    child.ok({"cmd": "ack", "key": f"{ALL}/shared", "position": 3})
    wait_until(lambda: checkpoint(dsn, schema, ALL, "shared") == 3)

    child.proc.send_signal(signal.SIGKILL)
    child.proc.wait(timeout=10)
    q = QueueSubscriber()
    sub = subscribe_retrying(lambda: store.subscribe_to_all_streams("shared", q), timeout=5.0)
    q.subscribed()
    batch = q.batch()
    assert [e.event_id for e in batch] == [4, 5]
    sub.ack(batch)


def test_concurrent_writers_in_both_processes_one_order_everywhere(
    store: EventStore, child: ChildProcess
) -> None:
    child.ok({"cmd": "subscribe", "stream": ALL, "name": "there", "auto_ack": True})
    assert child.notice()["event"] == "subscribed"
    q = QueueSubscriber()
    sub = store.subscribe_to_all_streams("here", q)
    q.subscribed()
    child.ok({"cmd": "write", "streams": ["c0", "c1", "c2"], "events": 150, "seed": 1})
    version = 0
    while version < 150:
        store.append_to_stream("p0", version, events(3, start=version + 1))
        version += 3
    result = child.ok({"cmd": "write_join", "timeout": 60}, timeout=70)
    assert result["appended"] == 150 and not result["errors"]
    here = q.collect(sub, 300, timeout=30)
    there = child_events(child, f"{ALL}/there", 300)
    assert [e.event_id for e in here] == list(range(1, 301))
    assert [(e.event_id, e.stream_uuid, e.stream_version) for e in here] == [
        (e[0], e[1], e[2]) for e in there
    ]
