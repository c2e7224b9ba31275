"""The subscription state machine with gaps: hard-deleted events leave positions that never
come, and a gap proves nothing by itself (the next event may be committed and not visible
yet). Reads and notifications say how far they covered; the cursor and the checkpoint move
over covered gaps, and never past what was covered (pure: no database, no threads).
"""

from __future__ import annotations

import pytest
from support.state_machine import Ev, at, new
from support.state_machine import positions as sent

from eventstore_actors.subscriptions.state import Read, Send


def test_catch_up_steps_over_a_deleted_range() -> None:
    state = new()
    assert state.next_action() == Read(1, 100)
    assert state.read_done(at(1, 2, 6, 7), 100, covered=7) is None  # 3-5 deleted
    assert state.cursor == 7 and not state.behind
    assert sent(state.next_action()) == [1, 2, 6, 7]
    assert state.acked(7) == 7
    assert state.next_action() is None


def test_a_full_read_covers_only_up_to_its_last_event() -> None:
    state = new(read_batch_size=2)
    assert state.next_action() == Read(1, 2)
    state.read_done(at(1, 5), 2, covered=5)
    assert state.behind, "a full read may have more right after it"
    assert sent(state.next_action()) == [1, 5]
    assert state.next_action() == Read(6, 2)


def test_the_checkpoint_moves_past_a_deleted_tail() -> None:
    """Elixir issue 238: with the last events deleted, the checkpoint stopped for good."""
    state = new(checkpoint=2)
    assert state.next_action() == Read(3, 100)
    assert state.read_done([], 100, covered=5) == 5, "3-5 deleted: the checkpoint moves"
    assert (state.cursor, state.checkpoint, state.behind) == (5, 5, False)
    assert state.next_action() is None


def test_the_checkpoint_follows_the_cover_once_the_last_batch_is_acked() -> None:
    state = new()
    state.read_done(at(1, 2), 100, covered=2)
    assert sent(state.next_action()) == [1, 2]
    assert state.read_done([], 100, covered=9) is None, "1-2 are not acked yet"
    assert state.checkpoint == 0
    assert state.acked(1) == 1
    assert state.acked(2) == 9, "3-9 were deleted: nothing to wait for"
    assert state.checkpoint == state.last_sent == 9


def test_a_position_above_the_cover_is_never_assumed_deleted() -> None:
    """Event 4 is committing (not visible) while 3 was deleted: the read covers 3 only."""
    state = new()
    state.read_done(at(1, 2), 100, covered=3)
    assert sent(state.next_action()) == [1, 2]
    state.acked(2)
    assert state.cursor == 3 and state.checkpoint == 3
    state.notified(at(4), (4, 4))
    assert sent(state.next_action()) == [4]


def test_live_notifications_with_empty_covered_ranges_move_on() -> None:
    state = new()
    state.read_done([], 100, covered=0)
    assert not state.behind
    assert state.notified([], (1, 3)) == 3, "a fully deleted range: nothing to deliver"
    assert (state.cursor, state.checkpoint) == (3, 3)
    state.notified(at(5), (4, 5))
    assert sent(state.next_action()) == [5]
    assert state.acked(5) == 5


def test_a_covered_notification_after_a_gap_reads_storage() -> None:
    state = new()
    state.read_done(at(1), 100, covered=1)
    assert sent(state.next_action()) == [1]
    state.notified(at(7), (7, 7))  # 2-6 not covered by anything yet
    assert state.behind
    state.acked(1)
    assert state.next_action() == Read(2, 100)
    state.read_done(at(4, 7), 100, covered=7)
    assert sent(state.next_action()) == [4, 7]


def test_past_and_duplicate_covered_notifications_are_ignored() -> None:
    state = new()
    state.read_done(at(1, 2, 3), 100, covered=3)
    assert sent(state.next_action()) == [1, 2, 3]
    state.notified(at(1, 2), (1, 2))
    state.notified(at(2, 3), (2, 3))
    assert state.next_action() is None
    state.notified(at(3, 4), (3, 4))  # overlaps: only the new part is taken
    state.acked(3)
    assert sent(state.next_action()) == [4]


def test_dropped_events_are_not_covered() -> None:
    """Overflow keeps the cursor on the last event kept, not on the cover."""
    state = new(max_size=2)
    state.read_done([], 2, covered=0)
    state.notified(at(1, 2, 4), (1, 5))
    assert state.cursor == 2 and state.behind
    assert sent(state.next_action()) == [1, 2]
    state.acked(2)
    assert state.next_action() == Read(3, 2)
    state.read_done(at(4), 2, covered=5)
    assert sent(state.next_action()) == [4]
    assert state.acked(4) == 5


def test_a_read_beyond_its_cover_is_refused() -> None:
    state = new()
    with pytest.raises(AssertionError):
        state.read_done(at(1, 5), 100, covered=4)


def test_in_flight_counts_events_not_positions() -> None:
    state = new(max_size=3)
    state.read_done(at(1, 50, 99), 3, covered=99)
    assert sent(state.next_action()) == [1, 50, 99]
    assert state.in_flight == 3 and state.held == 3
    state.acked(50)
    assert state.in_flight == 1
    assert state.next_action() == Read(100, 2)


# Property: with deletes and commits not yet visible, every surviving event once, in order --
hypothesis = pytest.importorskip("hypothesis")
st = pytest.importorskip("hypothesis.strategies")

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 5), st.sampled_from("abc")),
        st.tuples(st.just("begin"), st.integers(1, 4), st.sampled_from("abc")),
        st.tuples(st.just("commit")),
        st.tuples(st.just("delete"), st.sampled_from("abc")),
        st.tuples(st.just("notify"), st.integers(0, 30), st.integers(0, 8)),
        st.tuples(st.just("recheck")),
        st.tuples(st.just("ack"), st.integers(-3, 40)),
        st.tuples(st.just("step"), st.integers(1, 4)),
    ),
    max_size=60,
)


class Store:
    """Positions handed out under a lock held to commit: at most one transaction pending
    (its positions above `head`, invisible); deletes remove committed events of a stream."""

    def __init__(self) -> None:
        self.events: dict[int, Ev] = {}  # committed and not deleted
        self.head = 0  # the counter: last committed position
        self.pending: list[Ev] = []

    def append(self, count: int, stream: str) -> None:
        if self.pending:
            return  # the lock is taken: it waits (modelled as not happening)
        self.pending = [Ev(self.head + i, stream) for i in range(1, count + 1)]
        self.commit()

    def begin(self, count: int, stream: str) -> None:
        if not self.pending:
            self.pending = [Ev(self.head + i, stream) for i in range(1, count + 1)]

    def commit(self) -> None:
        for ev in self.pending:
            self.events[ev.pos] = ev
        if self.pending:
            self.head = self.pending[-1].pos
        self.pending = []

    def delete(self, stream: str) -> None:
        for pos in [p for p, e in self.events.items() if e.stream == stream]:
            del self.events[pos]

    def read(self, start: int, limit: int) -> tuple[list[Ev], int]:
        found = [self.events[p] for p in sorted(self.events) if p >= start][:limit]
        covered = found[-1].pos if len(found) == limit else max(start - 1, self.head)
        return found, covered

    def published(self, first: int, length: int) -> tuple[list[Ev], tuple[int, int]] | None:
        """A run the publisher may hand over: committed positions first..last, whatever is
        left of them."""
        if self.head == 0:
            return None
        first = min(max(first, 1), self.head)
        last = min(first + length, self.head)
        return [self.events[p] for p in sorted(self.events) if first <= p <= last], (first, last)


class GapChecker:
    def __init__(self, checkpoint: int, max_size: int, read_batch_size: int) -> None:
        self.store = Store()
        self.store.append(checkpoint, "a") if checkpoint else None
        self.state = new(checkpoint, max_size, read_batch_size)
        self.max_size = max_size
        self.start = checkpoint
        self.delivered: list[int] = []
        self.acked_up_to = checkpoint

    def notify(self, first: int, length: int) -> None:
        run = self.store.published(first, length)
        if run is not None:
            self.settled(self.state.notified(run[0], run[1]))

    def ack(self, position: int) -> None:
        before = self.state.checkpoint
        moved = self.state.acked(max(position, 0))
        if moved is not None:
            assert moved > before
            self.acked_up_to = max(self.acked_up_to, min(position, self.state.last_sent))
        self.invariants()

    def settled(self, moved: int | None) -> None:
        if moved is not None:
            assert moved == self.state.checkpoint
        self.invariants()

    def step(self) -> bool:
        state = self.state
        in_flight, buffered, cursor = state.in_flight, state.buffered, state.cursor
        action = state.next_action()
        if action is None:
            return False
        if isinstance(action, Send):
            assert in_flight == 0 and action.events
            assert len({e.stream for e in action.events}) == 1
            got = [e.pos for e in action.events]
            last = self.delivered[-1] if self.delivered else self.start
            assert got == sorted(set(got)) and got[0] > last, f"{got} after {last}"
            for pos in got:
                assert pos <= self.store.head, "delivered a position never committed"
            self.delivered.extend(got)
        else:
            assert buffered == 0 and action.start == cursor + 1 and action.limit >= 1
            events, covered = self.store.read(action.start, action.limit)
            self.settled(state.read_done(events, action.limit, covered))
        self.invariants()
        return True

    def invariants(self) -> None:
        state = self.state
        assert state.held <= self.max_size
        assert state.checkpoint <= state.last_sent <= state.cursor <= self.store.head, (
            "the cursor went past what was committed"
        )
        unacked = [p for p in self.delivered if p > self.acked_up_to]
        assert not unacked or state.checkpoint < unacked[0], "checkpoint passed an unacked event"

    def drain(self) -> None:
        self.store.commit()
        for _ in range(10_000):
            if self.state.in_flight:
                self.ack(self.state.last_sent)
            elif not self.step():
                if self.state.cursor < self.store.head:
                    self.state.must_recheck()  # the actor's health check: head > cursor
                    continue
                break
        surviving = [p for p in sorted(self.store.events) if p > self.start]
        assert set(surviving) <= set(self.delivered), "an event that was never deleted is missing"
        assert self.delivered == sorted(set(self.delivered))
        assert self.state.checkpoint == self.store.head, "the checkpoint stalled on a gap"
        assert self.state.next_action() is None


@hypothesis.settings(max_examples=400, deadline=None, derandomize=True)
@hypothesis.given(
    ops=_ops,
    checkpoint=st.integers(0, 5),
    max_size=st.integers(1, 8),
    read_batch_size=st.integers(1, 6),
)
def test_property_gaps_every_surviving_event_once_in_order(
    ops: list[tuple[object, ...]], checkpoint: int, max_size: int, read_batch_size: int
) -> None:
    checker = GapChecker(checkpoint, max_size, read_batch_size)
    store = checker.store
    for op in ops:
        kind = op[0]
        if kind == "append":
            store.append(int(op[1]), str(op[2]))  # type: ignore[call-overload]
        elif kind == "begin":
            store.begin(int(op[1]), str(op[2]))  # type: ignore[call-overload]
        elif kind == "commit":
            store.commit()
        elif kind == "delete":
            store.delete(str(op[1]))
        elif kind == "notify":
            checker.notify(int(op[1]), int(op[2]))  # type: ignore[call-overload]
        elif kind == "recheck":
            checker.state.must_recheck()
        elif kind == "ack":
            checker.ack(checker.state.checkpoint + int(op[1]))  # type: ignore[call-overload]
        else:
            for _ in range(int(op[1])):  # type: ignore[call-overload]
                checker.step()
    checker.drain()
