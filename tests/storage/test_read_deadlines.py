"""Item 6 of issue 17: every database call of the pool has a deadline (part 3, "Deadlines
everywhere"): reads, streaming pages, stream_info, streams, deletes, links, snapshots,
subscriptions() return or raise StoreUnavailableError within io_timeout + 1 s when the network
path freezes (packets dropped, no reset), and a call made inside the caller's transaction
never waits on a lock held by that same transaction.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from support import events
from support.proxy import Proxy

from eventstore_actors import EventStore, SnapshotData, StoreUnavailableError

IO_TIMEOUT = 2.0
FAST = {
    "health_interval": 1.0,
    "health_timeout": 1.0,
    "connect_timeout": 2.0,
    "io_timeout": IO_TIMEOUT,
    "pool_size": 2,
    "enable_hard_deletes": True,
}
#: The contract's bound (io_timeout + 1 s), and how long a hung call is waited for.
BOUND = IO_TIMEOUT + 1.0


@pytest.fixture
def frozen_store(proxy: Proxy, dsn: str, schema: str) -> Iterator[EventStore]:
    store = EventStore.start(proxy.dsn(dsn), schema=schema, **FAST)  # type: ignore[arg-type]
    try:
        yield store
    finally:
        proxy.blackhole(False)
        proxy.thaw()
        proxy.cut()
        store.stop()


def bounded(call: Callable[[], Any], limit: float) -> tuple[float, BaseException | None]:
    """Run `call` in a thread: (elapsed, what it raised); fails if it is still running after
    `limit` + 2 s (a hung call is left behind in its daemon thread)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    began = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit + 2.0)
    elapsed = time.monotonic() - began
    assert outcome, f"the call was still running after {elapsed:.1f} s"
    return elapsed, outcome[0]


def calls(store: EventStore) -> dict[str, Callable[[], Any]]:
    return {
        "read_stream_forward": lambda: store.read_stream_forward("s-1"),
        "read_stream_backward": lambda: store.read_stream_backward("s-1"),
        "read_all_streams_forward": lambda: store.read_all_streams_forward(),
        "read_all_streams_backward": lambda: store.read_all_streams_backward(),
        "stream_forward": lambda: list(store.stream_forward("s-1")),
        "stream_all_forward": lambda: list(store.stream_all_forward()),
        "stream_all_backward": lambda: list(store.stream_all_backward()),
        "stream_info": lambda: store.stream_info("s-1"),
        "stream_info $all": lambda: store.stream_info("$all"),
        "paginate_streams": lambda: store.paginate_streams(),
        "delete_stream": lambda: store.delete_stream("s-2", 1),
        "hard delete_stream": lambda: store.delete_stream("s-2", 1, hard=True),
        "link_to_stream": lambda: store.link_to_stream("links", 0, [1]),
        "record_snapshot": lambda: store.record_snapshot(SnapshotData("a-1", 2, "A", {"n": 2})),
        "read_snapshot": lambda: store.read_snapshot("a-1"),
        "delete_snapshot": lambda: store.delete_snapshot("a-1"),
        "subscriptions": lambda: store.subscriptions(),
        "subscription_info": lambda: store.subscription_info("nobody"),
        "parked_events": lambda: store.parked_events("nobody"),
    }


@pytest.mark.parametrize("name", list(calls(None)))  # type: ignore[arg-type]
def test_a_pool_call_ends_within_io_timeout_when_the_path_freezes(
    frozen_store: EventStore, proxy: Proxy, name: str
) -> None:
    store = frozen_store
    store.append_to_stream("s-1", 0, events(3))
    store.append_to_stream("s-2", 0, events(1))
    store.record_snapshot(SnapshotData("a-1", 1, "A", {"n": 1}))
    assert store.read_stream_forward("s-1")  # the pool's connections are in use and fine

    proxy.blackhole(True)  # a replacement connection is never answered either
    assert proxy.freeze() >= 1
    elapsed, raised = bounded(calls(store)[name], BOUND)
    assert isinstance(raised, StoreUnavailableError), f"{name}: {raised!r}"
    assert elapsed < BOUND, f"{name} took {elapsed:.1f} s"


def test_the_pool_serves_again_once_the_path_thaws(frozen_store: EventStore, proxy: Proxy) -> None:
    store = frozen_store
    store.append_to_stream("s-1", 0, events(2))
    proxy.freeze()
    elapsed, raised = bounded(lambda: store.read_stream_forward("s-1"), BOUND)
    assert elapsed < BOUND
    assert raised is None or isinstance(raised, StoreUnavailableError)
    # New connections pass (only the old ones are frozen): the next calls are served.
    deadline = time.monotonic() + 10.0
    while True:
        try:
            assert [e.stream_version for e in store.read_stream_forward("s-1")] == [1, 2]
            break
        except StoreUnavailableError:
            assert time.monotonic() < deadline, "reads did not recover"
            time.sleep(0.2)


def test_link_while_this_thread_holds_the_counter_lock_in_its_transaction(
    make_store: Callable[..., EventStore], dsn: str
) -> None:
    """The caller's transaction appended with conn= (it holds the counter row lock until it
    commits); a link, delete or append from the same thread must not wait for that lock."""
    store = make_store(io_timeout=IO_TIMEOUT)
    store.append_to_stream("s-1", 0, events(1))
    other = psycopg.connect(dsn)
    attempts = {
        "link_to_stream": lambda: store.link_to_stream("links", 0, [1]),
        "delete_stream": lambda: store.delete_stream("s-1", 1),
        "append": lambda: store.append_to_stream("s-3", 0, events(1)),
        "append on another conn": lambda: store.append_to_stream("s-4", 0, events(1), conn=other),
    }
    with psycopg.connect(dsn) as conn:
        raised: dict[str, BaseException | None] = {}

        def scenario() -> None:  # one thread: the caller's transaction and the calls
            store.append_to_stream("s-2", 0, events(1, start=2), conn=conn)
            for name, call in attempts.items():
                try:
                    call()
                except BaseException as exc:
                    raised[name] = exc
                else:
                    raised[name] = None

        elapsed, error = bounded(scenario, len(attempts) * BOUND)
        assert error is None, repr(error)
        assert elapsed < len(attempts) * BOUND
        for name, exc in raised.items():
            assert isinstance(exc, StoreUnavailableError), f"{name}: {exc!r}"
            assert "transaction" in str(exc) and not exc.outcome_unknown, f"{name}: {exc}"
        conn.commit()
    other.rollback()
    other.close()
    # Once it committed, the same calls go through; nothing was written by the refused ones.
    assert store.link_to_stream("links", 0, [1]).last_version == 1
    store.delete_stream("s-1", 1)
    assert [e.stream_uuid for e in store.read_all_streams_forward()] == ["s-1", "s-2"]


def test_link_to_stream_with_conn_in_the_transaction_that_appended(
    make_store: Callable[..., EventStore], dsn: str
) -> None:
    """link_to_stream(..., conn=) runs in the caller's transaction: after an append of that
    same transaction (which holds the counter row lock) it links at once, visible only once
    the caller commits; a refused link leaves the transaction usable."""
    store = make_store(io_timeout=IO_TIMEOUT)
    store.append_to_stream("s-1", 0, events(1))
    with psycopg.connect(dsn) as conn:
        outcome: dict[str, Any] = {}

        def scenario() -> None:
            appended = store.append_to_stream("s-2", 0, events(1, start=2), conn=conn)
            assert appended is not None
            outcome["link"] = store.link_to_stream(
                "links", 0, [1, appended.last_event_id], conn=conn
            )
            try:
                store.link_to_stream("links", 0, [1], conn=conn)  # wrong expected version
            except Exception as exc:
                outcome["refused"] = exc

        _, error = bounded(scenario, BOUND)
        assert error is None, repr(error)
        assert outcome["link"].first_version == 1 and outcome["link"].last_version == 2
        assert type(outcome["refused"]).__name__ == "WrongExpectedVersionError"
        with pytest.raises(Exception, match="links"):
            store.read_stream_forward("links")  # not committed yet
        conn.commit()
    assert [e.event_id for e in store.read_stream_forward("links")] == [1, 2]
