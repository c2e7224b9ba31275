"""The input side of a subscription's state machine (pure, no I/O): the cursor, and how far
storage reads and notifications covered.

Both state machines (`state.SubscriptionState`, one subscriber; `concurrent.ConcurrentState`,
competing consumers) take events the same way and differ only in how they hand them out, so
the rules below live here once (see state.py's docstring for the traps they guard against):
- `cursor` is the highest position received (buffered or beyond) or covered; it only moves by
  contiguous extension, from the publisher or from a storage read starting at cursor + 1.
- An input says how far it *covered*: every position from the cursor up to `covered` is among
  the events given, or gone for good. Inputs without a cover are trusted only as contiguous
  runs. A position above what was covered is never assumed deleted.
- `held` never exceeds `max_size`: the excess is dropped and the subscription is marked
  `behind` (storage is read again once there is room).
- It stops reading (`behind` False) only when a read came back short and no notification
  has shown a position beyond the cursor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["Intake"]

E = TypeVar("E")


class Intake(Generic[E]):
    """The cursor rules; subclasses keep what is taken (`_keep`), count what they hold
    (`held`) and move the checkpoint (`_settle`)."""

    def __init__(self, checkpoint: int, max_size: int, position: Callable[[E], int]) -> None:
        self.checkpoint = checkpoint  # last acked position (persisted)
        self.cursor = checkpoint  # last position received or covered
        self.max_size = max_size
        self.behind = True  # storage may hold events beyond the cursor
        self.max_notified = 0
        self._position = position

    @property
    def held(self) -> int:
        """Events received and not acked (buffered or in flight)."""
        raise NotImplementedError

    def _keep(self, events: list[E]) -> None:
        """Buffer `events` (fresh, in position order, room checked)."""
        raise NotImplementedError

    def _settle(self) -> int | None:
        """Move the checkpoint as far as what is done allows; the new one, or None."""
        raise NotImplementedError

    # Inputs -----------------------------------------------------------------------------------
    def notified(self, events: Sequence[E], covered: tuple[int, int] | None = None) -> int | None:
        """Committed events from the publisher, in position order (already filtered).

        `covered` = (first, last): every committed position from first to last is among
        `events` (the others were deleted, or are not this subscription's). Without it only
        a run that starts right after the cursor is taken. Returns a new checkpoint to store
        when covered empty positions let it move, else None.
        """
        if covered is not None:
            first, last = covered
            self.max_notified = max(self.max_notified, last)
            if last <= self.cursor:
                return None  # duplicates or the past
            if self.behind or first > self.cursor + 1:
                self.behind = True  # a gap, or storage is being read: storage will supply them
                return None
            self._extend([e for e in events if self._position(e) > self.cursor], last)
            return self._settle()
        if not events:
            return None
        self.max_notified = max(self.max_notified, self._position(events[-1]))
        fresh = [e for e in events if self._position(e) > self.cursor]
        if not fresh:
            return None  # duplicates or the past
        if self.behind or self._position(fresh[0]) != self.cursor + 1:
            self.behind = True  # a gap, or storage is being read: storage will supply them
            return None
        self._extend(fresh, None)
        return None

    def must_recheck(self) -> None:
        """Something may have been missed (publisher restart, reconnect): re-read storage."""
        self.behind = True

    def read_done(self, events: Sequence[E], limit: int, covered: int | None = None) -> int | None:
        """The result of a `Read` the actor performed.

        `covered`: every position from the read's start up to it is among `events` or gone for
        good (a full read covers up to its last event only). Without it, the events must
        continue the cursor without a gap. Returns a new checkpoint to store, as `notified`.
        """
        fresh = [e for e in events if self._position(e) > self.cursor]
        if covered is None:
            if fresh and self._position(fresh[0]) != self.cursor + 1:
                raise AssertionError(f"storage read skipped from {self.cursor} to {fresh[0]}")
            self._extend(fresh, None)
            if not events or (len(events) < limit and self.cursor >= self.max_notified):
                self.behind = False
            return None
        if fresh and self._position(fresh[-1]) > covered:
            raise AssertionError(f"storage read returned {fresh[-1]} beyond its cover {covered}")
        if self._extend(fresh, covered) and len(events) < limit:
            # Short: it covered everything committed when it ran, which includes whatever
            # was notified before it.
            self.behind = False
        return self._settle()

    def _extend(self, events: list[E], covered: int | None) -> bool:
        """Keep `events` (fresh, in order) and move the cursor over them, and up to `covered`
        unless some had to be dropped for room; whether all were kept."""
        room = self.max_size - self.held
        kept = len(events) <= room
        if not kept:
            events = events[: max(0, room)]
            self.behind = True  # the rest is dropped; read from storage once there is room
        self._keep(events)
        if events:
            self.cursor = self._position(events[-1])
        if kept and covered is not None and covered > self.cursor:
            self.cursor = covered
        return kept
