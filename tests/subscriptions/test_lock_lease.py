"""A subscription's lock is reported held only under a lease (`subscriptions.lock.LEASE`): while
the last answered round trip on its lock connection started less than that ago.

Found by an adversarial probe: a holder whose shared lock connection froze (packets dropped, no
reset), its backend then ended on the server, went on delivering every new event for
`io_timeout` (15 s by default) while a standby in another store had taken the name over half a
second later: its checks only looked at the socket, where the backend's farewell never arrived,
and the probe that would have found out waited on that silent socket. Real PostgreSQL and the
test TCP proxy (tests/support/proxy.py); the backend is ended with pg_terminate_backend.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from support import checkpoint, client_ports, events, kill_backends, lock_backends, wait_until
from support.proxy import Proxy

from eventstore_actors import ANY_VERSION, Events, EventStore, Subscribed
from eventstore_actors.config import Settings
from eventstore_actors.subscriptions.hub import LockHub, SharedLockSession
from eventstore_actors.subscriptions.info import lock_key

MakeStore = Callable[..., EventStore]
#: `subscriptions.lock.LEASE`, as these tests assume it (checked below).
LEASE = 3.0
#: Longer than the lease and the test, so that only the lease can stop the frozen holder.
IO_TIMEOUT = 20.0


class Recorder:
    """Acks every batch at once; keeps the event ids it was sent, in order (thread-safe)."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.subscribed = 0
        self._mutex = threading.Lock()

    def tell(self, message: Any) -> None:
        if isinstance(message, Subscribed):
            with self._mutex:
                self.subscribed += 1
        elif isinstance(message, Events):
            with self._mutex:
                self.ids.extend(e.event_id for e in message.events)
            message.subscription.ack(message.events[-1])

    def seen(self) -> list[int]:
        with self._mutex:
            return list(self.ids)


def test_the_lease_is_what_these_tests_assume() -> None:
    from eventstore_actors.subscriptions import lock

    assert lock.LEASE == LEASE


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "dedicated"])
def test_a_holder_whose_lock_connection_froze_stops_delivering_within_the_lease(
    make_store: MakeStore, dsn: str, schema: str, shared: bool
) -> None:
    """Store A (its lock connection through the proxy) holds "s"; B stands by. A's lock
    connection freezes and its backend is ended on the server: B takes the name over and
    delivers everything after the stored checkpoint, and A delivers no event appended once the
    lease has run out since the freeze (its last answered round trip started before it), long
    before `io_timeout`. After a thaw A finds its connection lost, and once B unsubscribes it
    takes over where B stopped: nothing is lost. (Before the lease, with the shared lock
    connection, A delivered every event for `io_timeout`; a dedicated connection's health
    check blocked its actor within a second, which the lease now bounds too.)"""
    with Proxy.for_dsn(dsn) as proxy:
        a = make_store(
            session_dsn=proxy.dsn(dsn), shared_lock_session=shared, io_timeout=IO_TIMEOUT
        )
        b = make_store(shared_lock_session=shared)
        writer = make_store()
        got_a, got_b = Recorder(), Recorder()
        a.subscribe_to_all_streams("s", got_a)
        wait_until(lambda: got_a.subscribed, what="A subscribed")
        b.subscribe_to_all_streams("s", got_b, standby=True)
        writer.append_to_stream("x", ANY_VERSION, events(1))
        wait_until(lambda: got_a.seen() == [1], what="A to receive the first event")
        wait_until(lambda: checkpoint(dsn, schema, "$all", "s") == 1, what="its ack stored")

        (pid,) = lock_backends(dsn, lock_key(schema, "$all", "s"))
        assert proxy.freeze(client_ports(dsn, [pid])) == 1
        frozen_at = time.monotonic()
        assert kill_backends(dsn, [pid]) == 1
        wait_until(lambda: got_b.subscribed, what="B to take the name over")

        appended: dict[int, float] = {}  # event_id -> when its append started
        last = 1
        while time.monotonic() < frozen_at + LEASE + 1.5:
            last += 1
            appended[last] = time.monotonic()
            writer.append_to_stream("x", ANY_VERSION, events(1, start=last))
            wait_until(lambda n=last: n in got_b.seen(), what=f"B to receive event {last}")

        late = [i for i in got_a.seen() if appended.get(i, 0.0) > frozen_at + LEASE]
        assert late == [], f"A delivered {len(late)} events appended after its lease ran out"
        assert got_b.seen() == list(range(2, last + 1))  # all after the checkpoint, once
        assert any(t > frozen_at + LEASE for t in appended.values())  # the check had cases

        proxy.thaw()
        before = len(got_a.seen())
        b.unsubscribe_from_all_streams("s")
        writer.append_to_stream("x", ANY_VERSION, events(1, start=last + 1))
        wait_until(lambda: last + 1 in got_a.seen(), timeout=10.0, what="A to take over")
        assert got_a.seen()[before:] == [last + 1]  # after B's last checkpoint
        assert set(range(1, last + 2)) <= set(got_a.seen()) | set(got_b.seen())


def test_a_lease_run_out_on_a_live_connection_pauses_and_loses_nothing(
    dsn: str, schema: str
) -> None:
    """No round trip on the shared lock connection for longer than the lease (a probe late on
    a loaded machine; here the test holds the hub's mutex, white-box): the fan-out's batch is
    not vouched for, a delivery's `alive()` waits for the connection, then makes the round
    trip and says yes. No lock is lost, no generation ends: nothing is delivered again."""
    hub = LockHub(Settings(dsn=dsn, schema=schema, application_name="eventstore-actors"))
    hub.connect()
    key = lock_key(schema, "$all", "slow")
    try:
        session = SharedLockSession(hub, key)
        assert session.try_lock()
        generation, pid = hub.generation, hub.backend()
        answers: list[bool] = []
        checker = threading.Thread(target=lambda: answers.append(session.alive()))
        with hub._mutex:
            wait_until(lambda: not hub._lease.held(), timeout=LEASE + 2, what="no lease")
            assert hub.vouch(1) is None  # the batch goes the actors' way
            checker.start()
            checker.join(timeout=0.3)
            assert checker.is_alive()  # waits for the connection
        checker.join(timeout=5.0)
        assert answers == [True]
        assert hub.generation == generation and session.locked
        assert lock_backends(dsn, key) == [pid]
        assert hub.vouch(2) == generation
    finally:
        hub.close()


def test_acks_whose_batched_write_was_lost_with_the_lock_are_not_delivered_again(
    make_store: MakeStore, dsn: str, schema: str
) -> None:
    """Found by a probe restarting the server: a subscription re-sent up to 8 events its
    subscriber had acked, within one running subscription, without a new Subscribed. On the
    shared lock connection an ack's checkpoint is written by the hub, batched with the
    others', and was forgotten by the subscription as soon as it was handed over: when that
    write died with the connection, the lock was taken again after the older stored
    checkpoint. Here the lock connection freezes (so the hub's write waits), the subscriber
    acks events delivered within the lease, then the connection is cut: the acked events
    must not come again, and the stored checkpoint reaches them."""
    with Proxy.for_dsn(dsn) as proxy:
        a = make_store(session_dsn=proxy.dsn(dsn), health_timeout=1.0, io_timeout=2.0)
        writer = make_store()
        got = Recorder()
        a.subscribe_to_all_streams("s", got)
        wait_until(lambda: got.subscribed, what="subscribed")
        writer.append_to_stream("x", ANY_VERSION, events(1))
        wait_until(lambda: got.seen() == [1], what="the first event")
        wait_until(lambda: checkpoint(dsn, schema, "$all", "s") == 1, what="its ack stored")

        (pid,) = lock_backends(dsn, lock_key(schema, "$all", "s"))
        assert proxy.freeze(client_ports(dsn, [pid])) == 1
        writer.append_to_stream("x", ANY_VERSION, events(3, start=1))
        wait_until(lambda: got.seen() == [1, 2, 3, 4], what="events 2-4 within the lease")
        assert checkpoint(dsn, schema, "$all", "s") == 1  # their write waits on the frozen link
        assert proxy.cut() >= 1
        proxy.thaw()
        wait_until(
            lambda: checkpoint(dsn, schema, "$all", "s") == 4,
            timeout=15.0,
            what="the acked checkpoint stored after the lock is taken again",
        )
        writer.append_to_stream("x", ANY_VERSION, events(1, start=4))
        wait_until(lambda: 5 in got.seen(), timeout=15.0, what="the next event")
        assert got.seen() == [1, 2, 3, 4, 5], "acked events were delivered again"
        assert got.subscribed == 1
