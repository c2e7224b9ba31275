"""The leader hand-off's idle check (`WriterActor.idle`) counts the messages in the writer's
inbox with `qsize()`, which pykka's `ActorInbox` protocol does not promise: its threading
inbox happens to be a `queue.Queue`. These tests pin both: the inbox type, and that `idle()`
says busy while an append waits in the inbox of a parked writer (a caller that led then would
commit ahead of it, and appends that queued would no longer commit together)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from support import events, wait_until

from eventstore_actors import AppendResult, EventStore
from eventstore_actors.writer import Leader, WriterActor

MakeStore = Callable[..., EventStore]


def _leader_and_writer(store: EventStore) -> tuple[Leader, WriterActor]:
    leader: Leader = store._runtime.leader
    assert store._writes._leader is leader  # the hand-off is on (call_timeout >= io_timeout)
    writer = wait_until(lambda: leader.writer, what="the writer to set up")
    return leader, writer


def test_pykkas_threading_inbox_is_a_queue_with_qsize(make_store: MakeStore) -> None:
    _, writer = _leader_and_writer(make_store())
    assert isinstance(writer.actor_inbox, queue.Queue)
    assert writer.actor_inbox.qsize() == 0


def test_idle_is_false_while_an_append_waits_in_the_parked_writers_inbox(
    make_store: MakeStore,
) -> None:
    store = make_store()
    leader, writer = _leader_and_writer(store)
    store.append_to_stream("s", 0, events(1))  # connected, and idle again afterwards
    outcome: list[object] = []

    def append() -> None:
        try:
            outcome.append(store.append_to_stream("s", 1, events(1, start=2)))
        except Exception as exc:  # asserted below
            outcome.append(exc)

    thread = threading.Thread(target=append)
    # Lead as a caller does (`Leader.append`): hold the lock, park the actor.
    assert leader.lock.acquire(timeout=10.0)
    try:
        assert writer.idle()
        leader.free.clear()
        writer._park()
        wait_until(
            lambda: writer._parks_seen == writer._parks_told, what="the writer to take its park"
        )
        assert writer.idle(), "only a park was told, and taken: the writer is idle"
        thread.start()  # finds the lock taken: asks the parked actor
        wait_until(lambda: writer.actor_inbox.qsize() == 1, what="the append in the inbox")
        assert not writer.idle(), "an append waits in the inbox: the writer is not idle"
    finally:
        leader.free.set()
        leader.lock.release()
    thread.join(timeout=30.0)
    assert not thread.is_alive()
    [result] = outcome
    assert isinstance(result, AppendResult), result
    assert (result.first_version, result.last_version) == (2, 2)

    def idle_again() -> bool:
        with leader.lock:
            return writer.idle()

    wait_until(idle_again, what="the writer to be idle again")
