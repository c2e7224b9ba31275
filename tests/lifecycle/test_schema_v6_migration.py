"""Schema version 6: a store made and used by the previous release (commit 56d58c9, schema
version 5) is migrated in place. Every subscription row keeps its checkpoint and holder
(an all-streams subscription, a stream subscription held through the migration, a consumer
group's partitions); the columns of the holders' vouch are added (subscriptions/health.py).
A release-5 process still running keeps its subscriptions, and when it takes a name over
from this release's store, readers judge it by what it writes, not by the vouch the earlier
holder left in the row (it has run out, and says nothing of the release-5 holder)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from support import QueueSubscriber, events, query, wait_until
from support.release1 import release_tree

from eventstore_actors import EventStore, admin
from eventstore_actors.storage.migrations import SCHEMA_VERSION

#: The last commit of the previous release (schema version 5).
RELEASE_5 = "56d58c9"
#: The columns schema version 6 adds to subscriptions.
ADDED = ["stall_after", "vouched_until", "vouched_by"]

_RELEASE_5 = """
import queue, sys, time
from eventstore_actors import (
    EventData, Events, EventStore, Subscribed, SubscriptionAlreadyExistsError, admin,
)
from eventstore_actors.storage.migrations import SCHEMA_VERSION
dsn, schema = sys.argv[1:3]

class Sub:
    def __init__(self, ack):
        self.ack, self.q = ack, queue.Queue()
    def tell(self, m):
        self.q.put(m)
        if self.ack and isinstance(m, Events):
            m.subscription.ack(m.events)
    def get(self, kind):
        while True:
            m = self.q.get(timeout=20)
            if isinstance(m, kind):
                return m

def wait(check):
    end = time.monotonic() + 20
    while not check():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)

def rows(store, name):
    return [i for i in store.subscriptions() if i.subscription_name == name]

admin.init(dsn, schema)
with EventStore.start(dsn, schema=schema) as store:
    store.append_to_stream("s", 0, [EventData({"n": n}) for n in range(3)])  # 1-3
    store.append_to_stream("t", 0, [EventData({"n": n}) for n in range(2)])  # 4-5
    p = Sub(False)
    sub = store.subscribe_to_all_streams("p", p, max_batch=2)
    sub.ack(p.get(Events).events)  # 1-2 of 5
    wait(lambda: store.subscription_info("p").checkpoint == 2)
    store.unsubscribe_from_all_streams("p")
    store.subscribe_to_all_streams("g", Sub(True), partitions=2)
    wait(lambda: len(rows(store, "g")) == 2 and all(i.lag == 0 for i in rows(store, "g")))
    store.subscribe_to_stream("s", "q", Sub(True))
    wait(lambda: store.subscription_info("q", "s").state == "live")
    print(SCHEMA_VERSION, flush=True)
    sys.stdin.readline()  # migrated; 'p' held and let go by this release's store meanwhile
    holder = Sub(False)
    end = time.monotonic() + 20
    while True:
        try:
            store.subscribe_to_all_streams("p", holder, stall_after=60)
            break
        except SubscriptionAlreadyExistsError:
            assert time.monotonic() < end, "p was not let go"
            time.sleep(0.05)
    holder.get(Subscribed)
    print("holding", flush=True)
    print("got", *[e.event_id for e in holder.get(Events).events], flush=True)  # never acked
    sys.stdin.readline()
    print("ok", flush=True)
"""


@pytest.fixture(scope="module")
def release_5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return release_tree(tmp_path_factory.mktemp("release-5"), RELEASE_5)


def subscription_rows(dsn: str, schema: str) -> list[tuple[Any, ...]]:
    return query(
        dsn,
        schema,
        "SELECT stream_uuid, subscription_name, last_seen, holder, last_ack_at "
        "FROM subscriptions ORDER BY stream_uuid, subscription_name",
    )


def test_a_release_5_store_migrates_to_version_6_and_release_5_holders_keep_working(
    dsn: str, release_5: Path
) -> None:
    name = f"r5_{uuid.uuid4().hex[:12]}"
    child = subprocess.Popen(
        [sys.executable, "-c", _RELEASE_5, dsn, name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=release_5,  # not this checkout's package
        env={**os.environ, "PYTHONPATH": str(release_5)},
    )
    assert child.stdout is not None and child.stdin is not None
    try:
        assert child.stdout.readline().split() == ["5"]
        before = subscription_rows(dsn, name)
        assert {(r[0], r[2]) for r in before if r[1] in ("p", "q")} == {("$all", 2), ("s", 3)}
        assert len(before) == 4  # p, q and g's two partitions
        assert SCHEMA_VERSION >= 6
        assert admin.migrate(dsn, name) == SCHEMA_VERSION
        assert admin.migrate(dsn, name) == SCHEMA_VERSION  # again: nothing left to do
        # Every row as it was: checkpoint, holder, last ack.
        assert subscription_rows(dsn, name) == before
        added = query(
            dsn, name, "SELECT " + ", ".join(ADDED) + " FROM subscriptions"
        )  # release 5 writes none of them
        assert added == [(None, None, None)] * 4
        with EventStore.start(dsn, schema=name) as store:
            shown = {(i.subscription_name, i.partition): i for i in store.subscriptions()}
            # The release-5 process holds q and g's partitions, level with the head.
            assert {k: (i.state, i.lag, i.active) for k, i in shown.items()} == {
                ("g", 0): ("live", 0, True),
                ("g", 1): ("live", 0, True),
                ("p", None): ("idle", 3, False),
                ("q", None): ("live", 0, True),
            }
            # This release's store takes 'p', vouches for it, and lets it go.
            sub = QueueSubscriber()
            handle = store.subscribe_to_all_streams("p", sub, stall_after=0.5)
            sub.subscribed()
            acked: list[int] = []
            while acked[-1:] != [5]:  # 3, then 4-5 (a batch per stream)
                batch = sub.batch()
                handle.ack(batch)
                acked.extend(e.event_id for e in batch)
            assert acked == [3, 4, 5]
            wait_until(lambda: (i := store.subscription_info("p")).state == "live" and i.lag == 0)
            store.unsubscribe_from_all_streams("p")
            ((by, stall_after),) = query(
                dsn,
                name,
                "SELECT vouched_by, stall_after FROM subscriptions WHERE subscription_name = 'p'",
            )
            assert by is not None and stall_after == 0.5
            # The release-5 process takes it over and holds an event unacked.
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.stdout.readline().split() == ["holding"]
            store.append_to_stream("u", 0, events(1))  # event 6
            assert child.stdout.readline().split() == ["got", "6"]
            # The vouch left by this release's store ran out long enough ago, and the event
            # is older than that store's stall_after: still not stalled. The release-5 holder
            # is judged by what it writes: 'live' (level with the head when it took over,
            # delivering what came since) or, if its first read came after the append,
            # 'catching_up'; and no stall before its own stall_after, 60 s.
            wait_until(
                lambda: (
                    query(
                        dsn,
                        name,
                        "SELECT clock_timestamp() > vouched_until + interval '3 seconds' "
                        "FROM subscriptions WHERE subscription_name = 'p'",
                    )
                    == [(True,)]
                ),
                timeout=15.0,
            )
            found = store.subscription_info("p")
            assert found.active and found.holder is not None and found.lag == 1
            assert found.holder != by and (found.lag_seconds or 0.0) >= 0.5
            assert found.state in ("live", "catching_up"), found
        child.stdin.write("end\n")
        child.stdin.flush()
        assert child.stdout.readline().split() == ["ok"]
    finally:
        child.kill()
        child.wait(timeout=30)
        admin.drop(dsn, name)
