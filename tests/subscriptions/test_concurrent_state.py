"""The competing-consumers state machine (`ConcurrentState`), pure: no database, no threads.

Events are ints (their own positions). The scenarios follow commanded/eventstore's
concurrent_subscription_test.exs, subscription_partitioning_test.exs and
partition_key_test.exs, with per-event acks (the Elixir ack of an int is cumulative per
subscriber; here a subscriber acks the events it got, as the contract says).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable

import pytest

from eventstore_actors.subscriptions.concurrent import ConcurrentState, Deliver
from eventstore_actors.subscriptions.state import Read


def make(
    members: dict[int, int],
    key: Callable[[int], Hashable | None] | None = None,
    checkpoint: int = 0,
    max_size: int = 1000,
) -> ConcurrentState[int]:
    state: ConcurrentState[int] = ConcurrentState(checkpoint, max_size, lambda e: e, key)
    for member, buffer_size in members.items():
        state.add_member(member, buffer_size)
    state.read_done([], 1000, checkpoint)  # caught up: live
    return state


def deliver(state: ConcurrentState[int]) -> dict[int, list[int]]:
    action = state.next_action()
    if action is None:
        return {}
    assert isinstance(action, Deliver), action
    return dict(action.batches)


def append(state: ConcurrentState[int], first: int, last: int) -> None:
    state.notified(list(range(first, last + 1)), (first, last))


def test_events_shared_round_robin_among_subscribers() -> None:
    state = make({1: 1, 2: 1, 3: 1})
    append(state, 1, 3)
    assert deliver(state) == {1: [1], 2: [2], 3: [3]}
    assert deliver(state) == {}


def test_next_available_subscriber_after_ack() -> None:
    state = make({1: 1, 2: 1})
    append(state, 1, 6)
    assert deliver(state) == {1: [1], 2: [2]}
    for position in (2, 3, 4):
        state.acked(2, [position])
        assert deliver(state) == {2: [position + 1]}
    state.acked(1, [1])
    assert deliver(state) == {1: [6]}
    assert deliver(state) == {}


def test_checkpoint_is_highest_fully_acked_prefix() -> None:
    """Elixir: "should ack events in order"."""
    state = make({1: 1, 2: 1, 3: 1})
    append(state, 1, 8)
    assert deliver(state) == {1: [1], 2: [2], 3: [3]}
    assert state.acked(1, [1])[0] == 1
    assert deliver(state) == {1: [4]}
    assert state.acked(2, [2])[0] == 2
    assert deliver(state) == {2: [5]}
    assert state.acked(3, [3])[0] == 3
    assert deliver(state) == {3: [6]}
    assert state.acked(3, [6])[0] is None
    assert deliver(state) == {3: [7]}
    assert state.acked(2, [5])[0] is None
    assert deliver(state) == {2: [8]}
    assert state.acked(1, [4])[0] == 6
    assert deliver(state) == {}
    assert state.acked(3, [7])[0] == 7
    assert state.acked(2, [8])[0] == 8
    assert state.checkpoint == 8


def test_ack_from_another_member_is_ignored() -> None:
    state = make({1: 1, 2: 1})
    append(state, 1, 2)
    assert deliver(state) == {1: [1], 2: [2]}
    assert state.acked(2, [1]) == (None, [])
    assert state.in_flight(1) == [1]


def test_in_flight_events_of_a_member_that_leaves_go_to_another() -> None:
    state = make({1: 1, 2: 1})
    append(state, 1, 6)
    assert deliver(state) == {1: [1], 2: [2]}
    state.remove_member(1)
    assert state.checkpoint == 0
    assert state.acked(2, [2])[0] is None
    assert deliver(state) == {2: [1]}
    assert state.acked(2, [1])[0] == 2
    assert deliver(state) == {2: [3]}


def test_newcomers_get_pending_events() -> None:
    state = make({1: 1})
    append(state, 1, 6)
    assert deliver(state) == {1: [1]}
    state.acked(1, [1])
    assert deliver(state) == {1: [2]}
    state.add_member(2, 1)
    assert deliver(state) == {2: [3]}
    state.add_member(3, 1)
    assert deliver(state) == {3: [4]}
    state.acked(2, [3])
    assert deliver(state) == {2: [5]}
    state.acked(1, [2])
    assert deliver(state) == {1: [6]}


def test_filtered_positions_count_as_acked() -> None:
    """Elixir: "should exclude events filtered by selector function" (every third kept)."""
    state = make({1: 1, 2: 1})
    state.notified([3, 6, 9, 12], (1, 12))
    assert deliver(state) == {1: [3], 2: [6]}
    assert state.acked(1, [3])[0] == 5
    assert deliver(state) == {1: [9]}
    assert state.acked(1, [9])[0] is None
    assert deliver(state) == {1: [12]}
    assert state.acked(2, [6])[0] == 11
    assert state.acked(1, [12])[0] == 12


def test_buffer_size() -> None:
    state = make({1: 2})
    append(state, 1, 6)
    assert deliver(state) == {1: [1, 2]}
    state.acked(1, [1, 2])
    assert deliver(state) == {1: [3, 4]}


def test_round_robin_with_different_buffer_sizes() -> None:
    state = make({1: 2, 2: 3})
    append(state, 1, 12)
    assert deliver(state) == {1: [1, 3], 2: [2, 4, 5]}
    state.acked(1, [1])
    assert deliver(state) == {1: [6]}
    state.acked(2, [2, 4, 5])
    assert deliver(state) == {2: [7, 8, 9]}
    state.acked(1, [3, 6])
    assert deliver(state) == {1: [10, 11]}
    state.acked(2, [7])
    assert deliver(state) == {2: [12]}


def test_partition_by() -> None:
    state = make({1: 3, 2: 3, 3: 3}, key=lambda e: e % 2)
    append(state, 1, 9)
    assert deliver(state) == {1: [1, 3, 5], 2: [2, 4, 6]}
    assert deliver(state) == {}


def test_partition_sends_new_events_to_same_member_after_ack() -> None:
    state = make({1: 2, 2: 2, 3: 2}, key=lambda e: e % 3)
    append(state, 1, 9)
    assert deliver(state) == {1: [1, 4], 2: [2, 5], 3: [3, 6]}
    state.acked(1, [1, 4])
    assert deliver(state) == {1: [7]}
    state.acked(1, [7])
    assert deliver(state) == {}
    state.acked(2, [2, 5])
    assert deliver(state) == {2: [8]}
    state.acked(3, [3, 6])
    assert deliver(state) == {3: [9]}


def test_partitions_move_once_acked_and_another_member_is_free() -> None:
    state = make({1: 2, 2: 2}, key=lambda e: e % 4)
    append(state, 1, 16)
    assert deliver(state) == {1: [1, 5], 2: [2, 6]}
    state.acked(1, [1, 5])
    assert deliver(state) == {1: [3, 7]}
    state.add_member(3, 2)
    assert deliver(state) == {3: [4, 8]}
    state.acked(3, [4, 8])
    assert deliver(state) == {3: [9, 13]}
    state.acked(3, [9, 13])
    assert deliver(state) == {3: [12, 16]}
    state.acked(3, [12, 16])
    assert deliver(state) == {}
    state.acked(1, [3, 7])
    assert deliver(state) == {1: [11, 15]}
    state.acked(2, [2, 6])
    assert deliver(state) == {2: [10, 14]}


def test_partition_key_none_means_no_partition() -> None:
    """partition_key_test.exs: a key function returning None gives no partition (Elixir
    makes up a unique key: the event goes anywhere, alone)."""
    state = make({1: 2, 2: 2}, key=lambda e: None)
    append(state, 1, 4)
    assert deliver(state) == {1: [1, 3], 2: [2, 4]}


def test_a_key_moves_to_the_survivor_in_order_when_its_member_leaves() -> None:
    """subscription_partition_subscriber_down_test.exs: the Elixir test shows the survivor
    taking the dead member's partition while holding another one; here the survivor takes it
    only once its own key is done, and each key's events still come in order."""
    streams = {1: "a", 2: "a", 3: "a", 4: "a", 5: "b", 6: "b", 7: "b", 8: "b"}
    state = make({1: 2, 2: 2}, key=streams.__getitem__)
    append(state, 1, 8)
    assert deliver(state) == {1: [1, 2], 2: [5, 6]}
    state.remove_member(1)
    assert deliver(state) == {}  # member 2 holds "b"
    state.acked(2, [5, 6])
    assert deliver(state) == {2: [1, 2]}  # "a" again from its first unacked event
    state.acked(2, [1, 2])
    assert deliver(state) == {2: [3, 4]}
    state.acked(2, [3, 4])
    assert deliver(state) == {2: [7, 8]}
    assert state.acked(2, [7, 8])[0] == 8


def test_retry_blocks_its_key_and_takes_back_later_events_of_it() -> None:
    state = make({1: 3, 2: 3}, key=lambda e: e % 2)
    append(state, 1, 6)
    assert deliver(state) == {1: [1, 3, 5], 2: [2, 4, 6]}
    assert state.nacked(1, 3, resolved=False) is None
    assert state.in_flight(1) == [1]
    state.acked(1, [1])
    assert deliver(state) == {}  # key 1 waits for its retry
    state.resume(3)
    assert deliver(state) == {1: [3, 5]}
    state.acked(2, [2, 4, 6])
    assert state.acked(1, [3, 5])[0] == 6


def test_skip_counts_as_acked() -> None:
    state = make({1: 1, 2: 1})
    append(state, 1, 2)
    deliver(state)
    assert state.nacked(1, 1, resolved=True) == 1
    assert state.nacked(2, 2, resolved=True) == 2


def test_replayed_events_go_first_and_never_move_the_checkpoint() -> None:
    state = make({1: 1, 2: 1}, checkpoint=10)
    state.replay([3, 7])
    append(state, 11, 12)
    assert deliver(state) == {1: [3], 2: [7]}
    assert state.acked(1, [3]) == (None, [3])
    assert deliver(state) == {1: [11]}
    assert state.checkpoint == 10


def test_reads_only_while_behind_and_within_max_size() -> None:
    state: ConcurrentState[int] = ConcurrentState(0, 4, lambda e: e)
    state.add_member(1, 1)
    assert state.next_action() == Read(1, 4)
    state.read_done([1, 2, 3, 4], 4, 4)
    assert deliver(state) == {1: [1]}
    assert state.next_action() is None  # full
    state.acked(1, [1])
    assert deliver(state) == {1: [2]}
    assert state.next_action() is None  # events queued and no member has room
    state.acked(1, [2])
    state.add_member(2, 1)
    assert deliver(state) == {2: [3], 1: [4]}  # the newcomer first
    state.add_member(3, 1)
    assert state.next_action() == Read(5, 2)  # room at member 3, nothing queued


def test_no_members_nothing_to_do() -> None:
    state: ConcurrentState[int] = ConcurrentState(0, 10, lambda e: e)
    assert state.next_action() is None


@pytest.mark.parametrize("seed", range(40))
def test_random_acks_deaths_partitions(seed: int) -> None:
    """Whatever the acks, nacks, deaths and arrivals: the checkpoint never passes an event
    not done, each key is in flight at one member at a time and goes out in order (after a
    redelivery, from its first event not done), and every event is done in the end."""
    rng = random.Random(seed)
    keyed = rng.random() < 0.7
    keys = rng.randint(1, 5)
    total = rng.randint(20, 200)
    state: ConcurrentState[int] = ConcurrentState(
        0,
        rng.randint(3, 50),
        lambda e: e,
        (lambda e: e % keys) if keyed else None,
        read_batch_size=rng.randint(1, 20),
    )
    next_member = 0

    def join() -> None:
        nonlocal next_member
        next_member += 1
        state.add_member(next_member, rng.randint(1, 4))

    for _ in range(rng.randint(1, 4)):
        join()
    done: set[int] = set()
    in_flight: dict[int, set[int]] = {}  # member -> positions
    waiting: set[int] = set()
    last_sent: dict[int, int] = {}  # key -> last position sent of it
    appended = 0
    for _ in range(20_000):
        if len(done) == total:
            break
        action = state.next_action()
        if isinstance(action, Read):
            # Storage: everything appended so far, from the read's start.
            events = list(range(action.start, min(appended, action.start + action.limit - 1) + 1))
            state.read_done(events, action.limit, events[-1] if events else appended)
        elif isinstance(action, Deliver):
            seen: dict[int, int] = {}  # key -> member, across this delivery
            for member, events in action.batches:
                assert events == sorted(events)
                for e in events:
                    assert e not in done and e not in waiting
                    assert all(e not in s for s in in_flight.values())
                    in_flight.setdefault(member, set()).add(e)
                    if keyed:
                        k = e % keys
                        holders = {m for m, s in in_flight.items() if any(p % keys == k for p in s)}
                        assert holders == {member}, (e, holders)
                        assert seen.setdefault(k, member) == member
                        # In order: every earlier event of the key is done or in flight here.
                        assert all(
                            p in done or p in in_flight[member] for p in range(k or keys, e, keys)
                        ), e
                        last_sent[k] = e
        roll = rng.random()
        if roll < 0.15 and appended < total:
            more = rng.randint(1, 10)
            first, appended = appended + 1, min(total, appended + more)
            if rng.random() < 0.8:
                state.notified(list(range(first, appended + 1)), (first, appended))
            else:
                state.must_recheck()
        elif roll < 0.75:
            member = rng.choice(list(in_flight)) if in_flight else None
            if member is not None and in_flight[member]:
                mine = sorted(in_flight[member])
                chosen = rng.sample(mine, rng.randint(1, len(mine)))
                state.acked(member, chosen)
                done.update(chosen)
                in_flight[member] -= set(chosen)
        elif roll < 0.85:
            member = rng.choice(list(in_flight)) if in_flight else None
            if member is not None and in_flight[member]:
                p = rng.choice(sorted(in_flight[member]))
                resolved = rng.random() < 0.5
                state.nacked(member, p, resolved)
                in_flight[member].discard(p)
                if resolved:
                    done.add(p)
                else:
                    waiting.add(p)
                    if keyed:  # later events of its key there go back
                        back = {q for q in in_flight[member] if q > p and q % keys == p % keys}
                        in_flight[member] -= back
        elif roll < 0.9 and waiting:
            p = rng.choice(sorted(waiting))
            waiting.discard(p)
            state.resume(p)
        elif roll < 0.95 and state.members:
            member = rng.choice(state.members)
            state.remove_member(member)
            in_flight.pop(member, None)
            if not state.members:
                join()
        elif roll < 1 and len(state.members) < 5:
            join()
        # The checkpoint never passes an event that is not done.
        assert all(p in done for p in range(1, state.checkpoint + 1))
        assert state.checkpoint <= appended
    else:
        pytest.fail(f"not done: {sorted(set(range(1, total + 1)) - done)[:10]}")
    assert done == set(range(1, total + 1))
    assert state.checkpoint == total
    assert state.held == 0
