"""Unit tests of the pure subscription state machine (no database, no threads).

Positions are the subscription's own gap-free space (event_id for all streams, stream_version
for one stream). Each test names the contract rule or LESSONS trap it guards.
"""

from __future__ import annotations

import pytest
from support.state_machine import Ev, evs, new, positions

from eventstore_actors.subscriptions.state import Read, Send, SubscriptionState


def go_live(state: SubscriptionState[Ev], storage: list[Ev] | None = None) -> list[int]:
    """Answer reads from `storage` (positions 1..n) until the state stops reading; returns the
    positions of the one batch it sent meanwhile (not acked), if any."""
    storage = storage or []
    sent: list[int] = []
    for _ in range(100):
        action = state.next_action()
        if isinstance(action, Send):
            assert not sent, "a second batch sent before the first was acked"
            sent = positions(action)
            continue
        if action is None:
            assert not state.behind, "waiting while behind"
            return sent
        chunk = storage[action.start - 1 : action.start - 1 + action.limit]
        state.read_done(chunk, action.limit)
    raise AssertionError("never went live")


# Catch-up then live --------------------------------------------------------------------------
def test_new_subscription_reads_from_after_its_checkpoint() -> None:
    assert new().next_action() == Read(1, 100)
    assert new(checkpoint=10, max_size=5).next_action() == Read(11, 5)
    assert new(read_batch_size=7).next_action() == Read(1, 7)


def test_catch_up_in_batches_then_live() -> None:
    storage = evs(1, 5)
    state = new(max_size=10, read_batch_size=3)
    assert state.next_action() == Read(1, 3)
    state.read_done(storage[0:3], 3)
    assert state.behind, "a full read may have more behind it"
    assert positions(state.next_action()) == [1, 2, 3]
    # Reading ahead while a batch is in flight is allowed (it is only buffered) ...
    assert state.next_action() == Read(4, 3)
    state.read_done(storage[3:5], 3)
    assert not state.behind, "a short read with nothing notified beyond it: live"
    # ... but nothing more is sent before the ack.
    assert state.next_action() is None
    assert state.acked(3) == 3
    assert positions(state.next_action()) == [4, 5]
    assert state.acked(5) == 5
    assert state.next_action() is None
    # Live: notifications are delivered directly, no read.
    state.notified(evs(6, 7))
    assert positions(state.next_action()) == [6, 7]


def test_empty_store_goes_live_at_once() -> None:
    state = new()
    state.read_done([], 100)
    assert not state.behind
    assert state.next_action() is None


def test_notifications_during_catch_up_come_from_storage_once() -> None:
    storage = evs(1, 6)
    state = new(read_batch_size=3)
    assert state.next_action() == Read(1, 3)
    state.notified(storage[3:6])  # arrives while reading: not taken directly
    assert state.behind
    state.read_done(storage[0:3], 3)
    sent = positions(state.next_action())
    assert state.next_action() == Read(4, 3)
    state.read_done(storage[3:6], 3)
    state.notified(storage[3:6])  # the same notification again: ignored
    state.acked(sent[-1])
    sent += positions(state.next_action())
    state.acked(sent[-1])
    assert state.next_action() == Read(7, 3)
    state.read_done([], 3)
    assert not state.behind
    assert state.next_action() is None
    assert sent == [1, 2, 3, 4, 5, 6]


# Duplicates, the past and gaps ---------------------------------------------------------------
def test_duplicate_and_past_notifications_are_ignored() -> None:
    state = new()
    assert go_live(state, evs(1, 3)) == [1, 2, 3]
    state.acked(3)
    state.notified(evs(1, 3))
    state.notified(evs(2, 2))
    assert state.next_action() is None
    assert not state.behind
    state.notified(evs(3, 5))  # overlaps: only the new part is taken
    assert positions(state.next_action()) == [4, 5]


def test_a_gap_triggers_a_read_from_storage() -> None:
    state = new()
    assert go_live(state, evs(1, 2)) == [1, 2]
    state.acked(2)
    state.notified([Ev(5)])  # 3 and 4 were missed
    assert state.behind
    assert state.next_action() == Read(3, 100)
    state.read_done(evs(3, 5), 100)
    assert positions(state.next_action()) == [3, 4, 5]
    assert not state.behind


def test_rechecks_storage_up_to_the_highest_notified_position_before_going_live() -> None:
    """LESSONS: events committed while moving from catch-up to live must not be missed."""
    state = new(read_batch_size=10)
    assert state.next_action() == Read(1, 10)
    # While the read of 1..2 was running, 3 and 4 were committed and notified.
    state.notified(evs(3, 4))
    state.read_done(evs(1, 2), 10)  # short read, but 4 was notified: not live yet
    assert state.behind
    assert positions(state.next_action()) == [1, 2]
    assert state.next_action() == Read(3, 10)
    state.read_done(evs(3, 4), 10)
    assert not state.behind
    state.acked(2)
    assert positions(state.next_action()) == [3, 4]


def test_must_recheck_reads_storage_again() -> None:
    """After a publisher restart or listener reconnect the subscription re-reads storage."""
    state = new()
    assert go_live(state, evs(1, 2)) == [1, 2]
    state.acked(2)
    state.must_recheck()
    assert state.next_action() == Read(3, 100)
    state.read_done(evs(3, 3), 100)
    assert positions(state.next_action()) == [3]


def test_advance_from_the_last_position_returned() -> None:
    """LESSONS: catch-up must not assume next = start + len(batch)."""
    state = new(read_batch_size=3)
    assert state.next_action() == Read(1, 3)
    state.read_done(evs(1, 3), 3)
    assert positions(state.next_action()) == [1, 2, 3]
    assert state.next_action() == Read(4, 3)
    state.read_done(evs(4, 5), 3)  # fewer than asked
    assert state.cursor == 5
    state.notified(evs(6, 6))
    state.acked(3)
    assert positions(state.next_action()) == [4, 5, 6]


def test_a_read_that_skips_positions_is_refused() -> None:
    state = new()
    assert state.next_action() == Read(1, 100)
    with pytest.raises(AssertionError):
        state.read_done(evs(2, 3), 100)


# max_size ------------------------------------------------------------------------------------
def test_overflow_drops_and_reads_only_once_the_buffer_is_empty() -> None:
    """LESSONS: at max capacity, catch-up waits for what the subscriber holds."""
    state = new(max_size=4)
    go_live(state)
    state.notified([Ev(1, "a"), Ev(2, "a"), Ev(3, "b"), Ev(4, "b"), Ev(5, "b"), Ev(6, "c")])
    assert state.held == 4 and state.behind, "5 and 6 dropped"
    assert positions(state.next_action()) == [1, 2]
    assert state.next_action() is None, "no read while events are buffered"
    state.notified([Ev(7, "c")])  # more while full: dropped too
    assert state.held == 4
    state.acked(2)
    assert positions(state.next_action()) == [3, 4]
    # Buffer empty: the read may start (results are only buffered behind the in-flight batch).
    assert state.next_action() == Read(5, 2)
    state.read_done([Ev(5, "b"), Ev(6, "c")], 2)
    assert state.next_action() is None
    state.acked(4)
    assert positions(state.next_action()) == [5]
    state.acked(5)
    assert positions(state.next_action()) == [6]
    state.acked(6)
    assert state.next_action() == Read(7, 4)
    state.read_done([Ev(7, "c")], 4)
    assert positions(state.next_action()) == [7]


def test_full_subscription_waits_for_acks_before_reading() -> None:
    state = new(max_size=3)
    go_live(state)
    state.notified(evs(1, 6))
    assert positions(state.next_action()) == [1, 2, 3]
    assert state.next_action() is None  # full: no read, no send
    state.acked(1)
    assert state.next_action() == Read(4, 1), "room for one after a partial ack"
    state.read_done(evs(4, 4), 1)
    assert state.next_action() is None, "still gated: 2 and 3 not acked"
    state.acked(3)
    assert positions(state.next_action()) == [4]


def test_held_never_exceeds_max_size_during_catch_up() -> None:
    state = new(max_size=5, read_batch_size=100)
    assert state.next_action() == Read(1, 5)


# Acks ------------------------------------------------------------------------------------------
def test_no_next_batch_until_everything_sent_is_acked() -> None:
    state = new()
    go_live(state)
    state.notified(evs(1, 3))
    assert positions(state.next_action()) == [1, 2, 3]
    state.notified(evs(4, 5))
    assert state.next_action() is None
    assert state.acked(1) == 1
    assert state.next_action() is None
    assert state.acked(2) == 2
    assert state.next_action() is None
    assert state.acked(3) == 3
    assert positions(state.next_action()) == [4, 5]


def test_acks_are_cumulative_and_never_move_backwards_nor_past_what_was_sent() -> None:
    state = new(checkpoint=10)
    assert state.acked(5) is None, "below the checkpoint"
    assert state.acked(50) is None, "nothing sent yet"
    assert go_live(state, [Ev(p) for p in range(1, 16)]) == [11, 12, 13, 14, 15]
    assert state.acked(12) == 12
    assert state.acked(11) is None
    assert state.acked(12) is None
    assert state.acked(1000) == 15, "clamped to the last position sent"
    assert state.checkpoint == 15
    assert state.acked(1000) is None


def test_acks_do_not_change_what_is_delivered_next() -> None:
    """LESSONS: a checkpoint must never make the subscription jump over undelivered events."""
    state = new(read_batch_size=2)
    assert state.next_action() == Read(1, 2)
    state.read_done(evs(1, 2), 2)
    assert positions(state.next_action()) == [1, 2]
    state.acked(10_000)
    assert state.checkpoint == 2
    assert state.next_action() == Read(3, 2)


# Batches -------------------------------------------------------------------------------------
def test_each_batch_holds_one_stream_only() -> None:
    state = new()
    go_live(state)
    state.notified([Ev(1, "a"), Ev(2, "a"), Ev(3, "b"), Ev(4, "a")])
    sent = []
    while (action := state.next_action()) is not None:
        assert isinstance(action, Send)
        assert len({e.stream for e in action.events}) == 1
        sent.append(positions(action))
        state.acked(sent[-1][-1])
    assert sent == [[1, 2], [3], [4]]


def test_never_sends_an_empty_batch() -> None:
    state = new()
    go_live(state)
    state.notified([])
    assert state.next_action() is None


# Property: whatever the interleaving, everything is delivered once, in order ------------------
# Mixed batches and max_batch ------------------------------------------------------------------
def interleaved(first: int, last: int, streams: str = "abc") -> list[Ev]:
    """Round-robin over `streams`: position p belongs to streams[(p - 1) % len(streams)]."""
    return [Ev(p, streams[(p - 1) % len(streams)]) for p in range(first, last + 1)]


def test_batches_hold_one_stream_by_default() -> None:
    state = new()
    state.read_done(interleaved(1, 6), 100)
    assert positions(state.next_action()) == [1]
    state.acked(1)
    assert positions(state.next_action()) == [2]


def test_mixed_batches_take_several_streams_up_to_max_batch() -> None:
    state = new(max_batch=4, mixed=True)
    state.read_done(interleaved(1, 10), 100)
    sent = state.next_action()
    assert positions(sent) == [1, 2, 3, 4]
    assert isinstance(sent, Send) and {e.stream for e in sent.events} == {"a", "b", "c"}
    assert state.next_action() is None, "one batch in flight at a time"
    state.acked(4)
    assert positions(state.next_action()) == [5, 6, 7, 8]
    state.acked(8)
    assert positions(state.next_action()) == [9, 10]


def test_max_batch_caps_single_stream_batches_too() -> None:
    state = new(max_batch=3)
    state.read_done(evs(1, 7), 100)
    assert positions(state.next_action()) == [1, 2, 3]
    state.acked(3)
    assert positions(state.next_action()) == [4, 5, 6]
    state.acked(6)
    assert positions(state.next_action()) == [7]


def test_a_mixed_batch_acked_in_part_resends_nothing_and_waits() -> None:
    """Acks are cumulative: a partial ack of a mixed batch keeps the rest in flight."""
    state = new(mixed=True)
    state.read_done(interleaved(1, 5), 100)
    assert positions(state.next_action()) == [1, 2, 3, 4, 5]
    assert state.acked(2) == 2
    assert state.next_action() is None
    state.notified(interleaved(6, 7))
    assert state.next_action() is None
    assert state.acked(5) == 5
    assert positions(state.next_action()) == [6, 7]


hypothesis = pytest.importorskip("hypothesis")
st = pytest.importorskip("hypothesis.strategies")

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 6), st.sampled_from("abc")),
        st.tuples(st.just("notify"), st.integers(0, 30), st.integers(0, 8)),
        st.tuples(st.just("recheck")),
        st.tuples(st.just("ack"), st.integers(-3, 40)),
        st.tuples(st.just("step"), st.integers(1, 4)),
    ),
    max_size=60,
)


class Checker:
    """Drives a SubscriptionState against an in-memory store and checks every invariant."""

    def __init__(
        self,
        checkpoint: int,
        max_size: int,
        read_batch_size: int,
        max_batch: int = 1000,
        mixed: bool = False,
    ) -> None:
        self.storage: list[Ev] = [Ev(p, "a") for p in range(1, checkpoint + 1)]
        self.state = new(checkpoint, max_size, read_batch_size, max_batch, mixed)
        self.max_size = max_size
        self.max_batch = max_batch
        self.mixed = mixed
        self.start = checkpoint
        self.delivered: list[int] = []
        self.checkpoints = [checkpoint]

    def append(self, count: int, stream: str) -> None:
        n = len(self.storage)
        self.storage.extend(Ev(p, stream) for p in range(n + 1, n + count + 1))

    def notify(self, start: int, length: int) -> None:
        """The publisher hands over any run of committed events: past, duplicate, or ahead."""
        if not self.storage:
            return
        first = min(start, len(self.storage) - 1)
        self.state.notified(self.storage[first : first + length])
        self.invariants()

    def ack(self, position: int) -> None:
        before = self.state.checkpoint
        moved = self.state.acked(max(position, 0))
        if moved is not None:
            assert moved > before, "an ack moved the checkpoint backwards"
            assert moved <= self.state.last_sent, "an ack moved the checkpoint past last sent"
            self.checkpoints.append(moved)
        self.invariants()

    def step(self) -> bool:
        state = self.state
        in_flight, buffered, cursor = state.in_flight, state.buffered, state.cursor
        action = state.next_action()
        if action is None:
            return False
        if isinstance(action, Send):
            assert in_flight == 0, "a batch sent while another was not acked"
            assert action.events, "an empty batch"
            assert self.mixed or len({e.stream for e in action.events}) == 1, (
                "a batch mixing streams"
            )
            assert len(action.events) <= self.max_batch, "a batch larger than max_batch"
            got = [e.pos for e in action.events]
            expected_first = (self.delivered[-1] if self.delivered else self.start) + 1
            assert got == list(range(expected_first, expected_first + len(got))), (
                f"delivered {got} after {self.delivered[-5:]}"
            )
            self.delivered.extend(got)
        else:
            assert isinstance(action, Read)
            assert buffered == 0, "read from storage while events were buffered"
            assert action.start == cursor + 1
            assert action.limit >= 1
            chunk = self.storage[action.start - 1 : action.start - 1 + action.limit]
            state.read_done(chunk, action.limit)
        self.invariants()
        return True

    def invariants(self) -> None:
        state = self.state
        assert state.held <= self.max_size, "more held than max_size"
        assert state.checkpoint <= state.last_sent <= state.cursor <= len(self.storage)

    def drain(self) -> None:
        """The publisher eventually hands over the last committed event; the subscriber acks."""
        if len(self.storage) > self.start:
            self.notify(len(self.storage) - 1, 1)
        for _ in range(10_000):
            if self.state.in_flight:
                self.ack(self.state.last_sent)
            elif not self.step():
                break
        assert self.delivered == list(range(self.start + 1, len(self.storage) + 1))
        assert self.state.checkpoint == len(self.storage)
        assert self.state.next_action() is None


@hypothesis.settings(max_examples=300, deadline=None, derandomize=True)
@hypothesis.given(
    ops=_ops,
    checkpoint=st.integers(0, 5),
    max_size=st.integers(1, 8),
    read_batch_size=st.integers(1, 6),
    max_batch=st.integers(1, 9),
    mixed=st.booleans(),
)
def test_property_everything_once_in_order(
    ops: list[tuple[object, ...]],
    checkpoint: int,
    max_size: int,
    read_batch_size: int,
    max_batch: int,
    mixed: bool,
) -> None:
    """Any interleaving of appends (several streams), notifications, rechecks, acks and steps,
    with or without mixed batches and any max_batch: everything once, in order."""
    checker = Checker(checkpoint, max_size, read_batch_size, max_batch, mixed)
    for op in ops:
        kind = op[0]
        if kind == "append":
            checker.append(int(op[1]), str(op[2]))  # type: ignore[call-overload]
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


# Checkpoint tuning (CheckpointPolicy: when the state's checkpoint is written) ------------------
from eventstore_actors.subscriptions.checkpointing import (  # noqa: E402
    CHECKPOINT_INTERVAL,
    CheckpointPolicy,
)


def test_untuned_policy_coalesces_acks_and_writes_on_ticks() -> None:
    policy = CheckpointPolicy(0)
    policy.moved(0.0)
    assert policy.due(3, 0.0, acking=True)  # nothing written yet
    policy.written(3, 0.0)
    policy.moved(0.01)
    assert not policy.due(5, 0.01, acking=True)  # within CHECKPOINT_INTERVAL
    assert policy.due(5, 0.01, acking=False)  # a tick or a read writes it
    assert policy.due(5, CHECKPOINT_INTERVAL, acking=True)
    assert not policy.due(None, 9.0, acking=False)
    assert not policy.due(3, 9.0, acking=False)  # already written


def test_threshold_alone_imposes_no_time_limit() -> None:
    policy = CheckpointPolicy(10, threshold=5)
    policy.moved(0.0)
    assert not policy.due(14, 1e9, acking=False)
    assert policy.due(15, 0.0, acking=True)
    policy.written(15, 0.0)
    assert not policy.due(19, 1e9, acking=False)


def test_after_alone_imposes_no_count_limit() -> None:
    policy = CheckpointPolicy(0, after=2.0)
    assert not policy.due(10**9, 100.0, acking=True)  # nothing pending: no timer started
    policy.moved(100.0)
    assert not policy.due(10**9, 101.9, acking=True)
    assert policy.due(10**9, 102.0, acking=False)
    policy.written(10**9, 102.0)
    policy.moved(150.0)  # the timer starts at the first move after a write
    assert not policy.due(10**9 + 1, 151.0, acking=False)
    assert policy.due(10**9 + 1, 152.0, acking=False)


def test_after_zero_writes_every_move_and_both_options_combine() -> None:
    zero = CheckpointPolicy(0, after=0.0)
    zero.moved(5.0)
    assert zero.due(1, 5.0, acking=True)
    both = CheckpointPolicy(0, threshold=100, after=1.0)
    both.moved(0.0)
    assert both.due(100, 0.1, acking=True)  # the threshold
    both.written(100, 0.1)
    both.moved(0.2)
    assert both.due(101, 1.2, acking=False)  # the timer


# Filtered positions (covered inputs) and checkpoint tuning: a property test --------------------
_filtered_ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 6), st.integers(0, 3)),
        st.tuples(st.just("publish"), st.integers(0, 8)),
        st.tuples(st.just("recheck")),
        st.tuples(st.just("ack"), st.integers(-2, 6)),
        st.tuples(st.just("step"), st.integers(1, 4)),
        st.tuples(st.just("tick"), st.floats(0.0, 3.0)),
    ),
    max_size=60,
)


class FilteredChecker:
    """Storage positions 1..n, each matching the subscription's filter or not; reads and
    notifications carry only matching events and say how far they covered (as the filtered
    covered reads and the actor's filtering of published events do). A CheckpointPolicy
    writes the state's checkpoint on acks, ticks and reads."""

    def __init__(
        self, max_size: int, read_batch_size: int, threshold: int | None, after: float | None
    ) -> None:
        self.matches: list[bool] = []
        self.state = new(0, max_size, read_batch_size)
        self.policy = CheckpointPolicy(0, threshold, after)
        self.now = 0.0
        self.unsaved: int | None = None
        self.written = 0
        self.published = 0  # the publisher's last_published
        self.delivered: list[int] = []
        self.acked = 0  # the subscriber's highest ack (a delivered position)

    def matching(self, low: int, high: int) -> list[Ev]:
        return [Ev(p) for p in range(low, high + 1) if self.matches[p - 1]]

    def moved(self, checkpoint: int | None) -> None:
        if checkpoint is not None:
            self.unsaved = checkpoint
            self.policy.moved(self.now)

    def flush_if_due(self, *, acking: bool) -> None:
        if self.policy.due(self.unsaved, self.now, acking=acking):
            assert self.unsaved is not None
            self.write(self.unsaved)

    def write(self, position: int) -> None:
        first_unacked = next((p for p in self.delivered if p > self.acked), None)
        if first_unacked is not None:
            assert position < first_unacked, f"wrote {position} past unacked {first_unacked}"
        assert position >= self.written
        self.written = position
        self.unsaved = None
        self.policy.written(position, self.now)

    def append(self, count: int, kind: int) -> None:
        # kind 0: none match, 1: all match, 2-3: every other one
        for i in range(count):
            self.matches.append(kind == 1 or (kind >= 2 and i % 2 == 0))

    def publish(self, length: int) -> None:
        """The publisher fans out the next committed run, filtered, with its cover."""
        last = min(len(self.matches), self.published + length)
        if last <= self.published:
            return
        first, self.published = self.published + 1, last
        self.moved(self.state.notified(self.matching(first, last), (first, last)))
        self.invariants()

    def ack(self, delta: int) -> None:
        target = self.acked + delta
        candidates = [p for p in self.delivered if p <= target]
        if not candidates or candidates[-1] <= self.acked:
            return
        self.acked = candidates[-1]
        self.moved(self.state.acked(self.acked))
        self.flush_if_due(acking=True)
        self.invariants()

    def tick(self, seconds: float) -> None:
        self.now += seconds
        self.flush_if_due(acking=False)

    def step(self) -> bool:
        state = self.state
        action = state.next_action()
        if action is None:
            return False
        if isinstance(action, Send):
            got = [e.pos for e in action.events]
            last = self.delivered[-1] if self.delivered else 0
            expected = [p for p in range(last + 1, got[-1] + 1) if self.matches[p - 1]]
            assert got == expected, f"delivered {got} after {last}, expected {expected}"
            self.delivered.extend(got)
        else:
            self.flush_if_due(acking=False)
            head = len(self.matches)
            found = self.matching(action.start, head)[: action.limit]
            covered = found[-1].pos if len(found) >= action.limit else max(action.start - 1, head)
            self.moved(state.read_done(found, action.limit, covered))
        self.invariants()
        return True

    def invariants(self) -> None:
        state = self.state
        first_unacked = next((p for p in self.delivered if p > self.acked), None)
        if first_unacked is not None:
            assert state.checkpoint < first_unacked, "the checkpoint passed an unacked event"
        assert state.checkpoint <= state.cursor <= len(self.matches)

    def drain(self) -> None:
        self.publish(len(self.matches))
        self.state.must_recheck()  # the health check's backstop
        for _ in range(10_000):
            if self.state.in_flight:
                self.ack(len(self.matches))
            elif not self.step():
                break
        assert self.delivered == [p for p in range(1, len(self.matches) + 1) if self.matches[p - 1]]
        assert self.state.checkpoint == len(self.matches), "filtered tail not counted as acked"
        self.write(self.state.checkpoint)  # the final write on stop


@hypothesis.settings(max_examples=300, deadline=None, derandomize=True)
@hypothesis.given(
    ops=_filtered_ops,
    max_size=st.integers(1, 8),
    read_batch_size=st.integers(1, 6),
    threshold=st.one_of(st.none(), st.integers(1, 10)),
    after=st.one_of(st.none(), st.floats(0.0, 2.0)),
)
def test_property_filtered_positions_and_tuned_checkpoints(
    ops: list[tuple[object, ...]],
    max_size: int,
    read_batch_size: int,
    threshold: int | None,
    after: float | None,
) -> None:
    """Any interleaving of appends (matching or not), filtered notifications, rechecks, acks,
    steps and clock ticks, under any tuning: exactly the matching events, once, in order; no
    checkpoint written past an unacked event; filtered positions end up acked."""
    checker = FilteredChecker(max_size, read_batch_size, threshold, after)
    for op in ops:
        kind = op[0]
        if kind == "append":
            checker.append(int(op[1]), int(op[2]))  # type: ignore[call-overload]
        elif kind == "publish":
            checker.publish(int(op[1]))  # type: ignore[call-overload]
        elif kind == "recheck":
            checker.state.must_recheck()
        elif kind == "ack":
            checker.ack(int(op[1]))  # type: ignore[call-overload]
        elif kind == "tick":
            checker.tick(float(op[1]))  # type: ignore[arg-type]
        else:
            for _ in range(int(op[1])):  # type: ignore[call-overload]
                checker.step()
    checker.drain()


# Nacks (retry, skip, park) and replayed parked events --------------------------------------------
def test_nack_retry_acks_before_and_resends_it_alone_after_resume() -> None:
    state = new()
    state.read_done(evs(1, 4), 1000, covered=4)
    assert positions(state.next_action()) == [1, 2, 3, 4]
    assert state.nacked(3, resolved=False) == 2
    assert state.next_action() is None  # paused: order holds
    state.notified(evs(5, 5), (5, 5))
    assert state.next_action() is None
    state.resume()
    assert positions(state.next_action()) == [3]
    assert state.acked(3) == 3
    assert positions(state.next_action()) == [4, 5]


def test_nack_skip_or_park_counts_as_acked_and_resends_the_rest() -> None:
    state = new()
    state.read_done(evs(1, 3), 1000, covered=3)
    assert positions(state.next_action()) == [1, 2, 3]
    assert state.nacked(2, resolved=True) == 2
    assert positions(state.next_action()) == [3]
    assert state.acked(3) == 3


def test_nack_of_what_is_not_in_flight_is_ignored() -> None:
    state = new()
    state.read_done(evs(1, 3), 1000, covered=3)
    state.next_action()
    state.acked(2)
    assert state.nacked(1, resolved=True) is None
    assert state.nacked(9, resolved=True) is None
    assert state.sent_event(3) == Ev(3)


def test_replayed_events_go_first_one_at_a_time_and_never_move_the_checkpoint() -> None:
    state = new()
    state.read_done(evs(1, 6), 1000, covered=6)
    assert positions(state.next_action()) == [1, 2, 3, 4, 5, 6]
    state.acked(3)
    state.replay([Ev(1), Ev(2)])
    assert state.next_action() is None  # 4..6 still in flight
    state.acked(6)
    state.notified(evs(7, 7), (7, 7))
    assert positions(state.next_action()) == [1]
    assert state.acked(1) is None and state.checkpoint == 6
    assert state.replay_done() == Ev(1)
    assert positions(state.next_action()) == [2]
    assert state.replay_done(retry=True) == Ev(2)
    assert state.next_action() is None
    state.resume()
    assert positions(state.next_action()) == [2]
    state.replay_done()
    assert positions(state.next_action()) == [7]
