"""Competing consumers: the state of one subscription with several subscribers (pure, no I/O).

Used instead of `SubscriptionState` when `concurrency_limit > 1`; it takes events the same
way (`notified`, `read_done`, `must_recheck`: intake.Intake, which says what "covered"
means, holds them for both), but hands events out one by one to the subscribers ("members")
that have room, round robin (the one that was sent to least recently first), each holding at
most its `buffer_size` events in flight. Acks are per event.

Invariants:
- `outstanding` lists, ascending, every position received (buffered, in flight, waiting for
  a retry) and not done yet; positions between them were covered and hold nothing to deliver.
  The checkpoint is the position right before the first outstanding one (the cursor when
  none is), so it never passes an event that is not acked, skipped or parked.
- A partition key (`key(event)`, None: no key) is in flight at one member at a time; a member
  holds one key at a time (plus unkeyed events). A key's events go out in position order:
  those of a member that leaves, or after a retried one, go back to the queue, and a key
  with a retry pending sends nothing until it is resumed.
- A member that leaves gives its events in flight back to the queue, ahead of newer ones.
- Replayed parked events (at or below the checkpoint) go out first, to any member; they are
  never outstanding, so they never move the checkpoint.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .intake import Intake
from .state import Read

__all__ = ["ConcurrentState", "Deliver"]

E = TypeVar("E")


@dataclass(frozen=True)
class Deliver(Generic[E]):
    """Send each member its events (ascending), one batch per member."""

    batches: list[tuple[int, list[E]]]


@dataclass
class _Member(Generic[E]):
    buffer_size: int
    last: int  # when it was last sent to (round robin: the smallest first)
    in_flight: dict[int, E] = field(default_factory=dict)
    key: Hashable | None = None  # the partition it holds
    keyed: int = 0  # how many of its events in flight have that key

    @property
    def room(self) -> int:
        return self.buffer_size - len(self.in_flight)


class ConcurrentState(Intake[E]):
    def __init__(
        self,
        checkpoint: int,
        max_size: int,
        position: Callable[[E], int],
        key: Callable[[E], Hashable | None] | None = None,
        read_batch_size: int = 1000,
    ) -> None:
        super().__init__(checkpoint, max_size, position)
        self.paused = False  # retries are timed by the actor per event (see `resume`)
        self._key_of = key
        self._read_batch_size = read_batch_size
        self._queue: deque[E] = deque()  # received, not sent, ascending
        self._outstanding: deque[int] = deque()
        self._done: set[int] = set()
        self._keys: dict[int, Hashable] = {}  # position -> key (keyed, not done)
        self._owner: dict[Hashable, int] = {}  # key -> member holding it
        self._blocked: dict[Hashable, int] = {}  # key -> retries pending
        self._waiting: dict[int, E] = {}  # nacked for a retry, until `resume`
        self._members: dict[int, _Member[E]] = {}
        self._clock = 0
        self._replay: deque[E] = deque()
        self._replays: set[int] = set()  # positions of replayed events in flight or waiting

    # Members ------------------------------------------------------------------------------------
    def add_member(self, member: int, buffer_size: int) -> None:
        # A newcomer goes first (before every member that was sent to), in arrival order.
        self._clock += 1
        self._members[member] = _Member(buffer_size, self._clock - (1 << 62))

    def remove_member(self, member: int) -> None:
        """The member left (died, unsubscribed): its events in flight go to the others."""
        found = self._members.pop(member, None)
        if found is None:
            return
        if found.key is not None:
            self._owner.pop(found.key, None)
        back = [e for p, e in found.in_flight.items() if p not in self._replays]
        replayed = [e for p, e in found.in_flight.items() if p in self._replays]
        for e in replayed:
            self._replays.discard(self._position(e))
        self._replay.extendleft(reversed(replayed))
        self._requeue(back)

    @property
    def members(self) -> list[int]:
        return list(self._members)

    def in_flight(self, member: int) -> list[int]:
        found = self._members.get(member)
        return [] if found is None else list(found.in_flight)

    @property
    def held(self) -> int:
        """Events received and not done (queued, in flight, waiting for a retry)."""
        return len(self._outstanding) - len(self._done)

    @property
    def queued(self) -> int:
        """Events received and not sent yet (retries pending and replays included)."""
        return len(self._queue) + len(self._waiting) + len(self._replay)

    @property
    def buffered(self) -> int:
        """Events received and not sent yet, retries and replays left out."""
        return len(self._queue)

    @property
    def last_sent(self) -> int:
        return self.cursor

    # Inputs (notified, must_recheck, read_done: see Intake) ------------------------------
    def acked(self, member: int, positions: Sequence[int]) -> tuple[int | None, list[E]]:
        """Per-event acks from `member` (positions not in flight there are ignored). Returns
        the new checkpoint (or None) and the replayed events that were acked."""
        found = self._members.get(member)
        if found is None:
            return None, []
        replayed: list[E] = []
        for position in positions:
            event = self._take(found, position)
            if event is None:
                continue
            if position in self._replays:
                self._replays.discard(position)
                replayed.append(event)
            else:
                self._done.add(position)
        return self._settle(), replayed

    def sent_event(self, member: int, position: int) -> E | None:
        found = self._members.get(member)
        return None if found is None else found.in_flight.get(position)

    def is_replay(self, position: int) -> bool:
        return position in self._replays

    def nacked(self, member: int, position: int, resolved: bool) -> int | None:
        """A nack of one event in flight at `member`. `resolved` (skipped, parked): it counts
        as acked (a replayed one leaves the replay). Else it waits for `resume(position)`, its
        key sending nothing meanwhile, and the member's later events of that key go back to the
        queue. Returns a new checkpoint, or None."""
        found = self._members.get(member)
        if found is None:
            return None
        key = self._keys.get(position)
        event = self._take(found, position)
        if event is None:
            return None
        if resolved:
            if position in self._replays:
                self._replays.discard(position)
                return None
            self._done.add(position)
            return self._settle()
        self._waiting[position] = event
        if key is not None:
            self._blocked[key] = self._blocked.get(key, 0) + 1
            later = [p for p in found.in_flight if p > position and self._keys.get(p) == key]
            self._requeue([e for e in (self._take(found, p) for p in later) if e is not None])
        return None

    def resume(self, position: int | None = None) -> None:
        """The retry delay of the event at `position` passed: it may go out again."""
        if position is None:
            return
        event = self._waiting.pop(position, None)
        if event is None:
            return
        key = self._keys.get(position)
        if key is not None:
            left = self._blocked.get(key, 0) - 1
            if left > 0:
                self._blocked[key] = left
            else:
                self._blocked.pop(key, None)
        if position in self._replays:
            self._replays.discard(position)
            self._replay.appendleft(event)
        else:
            self._requeue([event])

    def replay(self, events: Sequence[E]) -> None:
        """Parked events to deliver again (in their order) before anything newer."""
        self._replay.extend(events)

    # Output -------------------------------------------------------------------------------------
    def next_action(self) -> Deliver[E] | Read | None:
        if not self._members:
            return None
        batches = self._dispatch()
        if batches:
            return Deliver(batches)
        if (
            self.behind
            and self.held < self.max_size
            and (not self._queue or any(m.room > 0 for m in self._members.values()))
        ):
            return Read(self.cursor + 1, min(self._read_batch_size, self.max_size - self.held))
        return None

    # Internals ----------------------------------------------------------------------------------
    def _dispatch(self) -> list[tuple[int, list[E]]]:
        members = self._members
        free = sum(1 for m in members.values() if m.room > 0)
        if free == 0:
            return []
        out: dict[int, list[E]] = {}
        while self._replay and free:
            event = self._replay.popleft()
            chosen = min((m for m in members.items() if m[1].room > 0), key=lambda m: m[1].last)
            free -= self._assign(chosen[0], chosen[1], event, None, out)
            self._replays.add(self._position(event))
        kept: list[E] = []
        queue = self._queue
        while queue and free:
            event = queue.popleft()
            position = self._position(event)
            key = self._keys.get(position)
            if key is None:
                candidates = [(i, m) for i, m in members.items() if m.room > 0]
            elif key in self._blocked:
                kept.append(event)
                continue
            elif (owner := self._owner.get(key)) is not None:
                holder = members[owner]
                if holder.room > 0:
                    free -= self._assign(owner, holder, event, key, out)
                else:
                    kept.append(event)
                continue
            else:
                candidates = [(i, m) for i, m in members.items() if m.room > 0 and m.key is None]
            if not candidates:
                kept.append(event)
                continue
            index, member = min(candidates, key=lambda m: m[1].last)
            free -= self._assign(index, member, event, key, out)
        if kept:
            queue.extendleft(reversed(kept))
        return list(out.items())

    def _assign(
        self,
        index: int,
        member: _Member[E],
        event: E,
        key: Hashable | None,
        out: dict[int, list[E]],
    ) -> int:
        """Put `event` in flight at `member`; 1 if that filled it, else 0."""
        self._clock += 1
        member.last = self._clock
        member.in_flight[self._position(event)] = event
        if key is not None:
            member.key = key
            member.keyed += 1
            self._owner[key] = index
        out.setdefault(index, []).append(event)
        return 1 if member.room == 0 else 0

    def _take(self, member: _Member[E], position: int) -> E | None:
        """Take `position` out of flight at `member`, letting go of its key when it was the
        last event of that key there."""
        event = member.in_flight.pop(position, None)
        if event is None:
            return None
        key = self._keys.get(position)
        if key is not None and key == member.key:
            member.keyed -= 1
            if member.keyed == 0:
                member.key = None
                self._owner.pop(key, None)
        return event

    def _requeue(self, events: list[E]) -> None:
        if not events:
            return
        merged = sorted([*events, *self._queue], key=self._position)
        self._queue = deque(merged)

    def _keep(self, events: list[E]) -> None:
        key_of = self._key_of
        for event in events:
            position = self._position(event)
            self._outstanding.append(position)
            if key_of is not None:
                key = key_of(event)
                if key is not None:
                    self._keys[position] = key
        self._queue.extend(events)

    def _settle(self) -> int | None:
        outstanding, done = self._outstanding, self._done
        while outstanding and outstanding[0] in done:
            position = outstanding.popleft()
            done.discard(position)
            self._keys.pop(position, None)
        new = outstanding[0] - 1 if outstanding else self.cursor
        if new > self.checkpoint:
            self.checkpoint = new
            return new
        return None
