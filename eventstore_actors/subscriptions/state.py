"""The subscription state machine: pure, no threads, no I/O.

It decides what to deliver next and when to read from storage; the actor performs the reads,
the sends and the checkpoint writes it asks for. Positions are in the subscription's own space
(event_id for all streams, stream_version for one stream), and both are gap-free, so a gap in
what the publisher hands over is exact evidence of missed events.

Invariants (each guards a trap from the Elixir project's history):
- `cursor` is the highest position received (sent or buffered); it only moves by contiguous
  extension, from the publisher or from a storage read starting at cursor + 1. So nothing is
  delivered twice within one run and nothing is skipped.
- At most one batch is in flight; the next is sent only when everything sent is acked.
- `held` (in flight + buffered) never exceeds `max_size`: the excess is dropped and the
  subscription is marked `behind`; it reads from storage again only when its buffer is empty.
- It stops reading (goes live) only when a read came back short *and* no notification has
  shown a position beyond the cursor.
- Acks only move the checkpoint forward and never past what was sent.
- A batch holds at most `max_batch` events, of one stream unless `mixed` (all-streams
  subscriptions whose subscriber commits once per batch).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Read", "Send", "SubscriptionState"]

E = TypeVar("E")


@dataclass(frozen=True)
class Send(Generic[E]):
    """Deliver these events (contiguous; one stream unless mixed batches) as one batch."""

    events: list[E]


@dataclass(frozen=True)
class Read:
    """Read up to `limit` events from storage starting at position `start` (inclusive)."""

    start: int
    limit: int


class SubscriptionState(Generic[E]):
    def __init__(
        self,
        checkpoint: int,
        max_size: int,
        position: Callable[[E], int],
        stream_key: Callable[[E], str],
        read_batch_size: int = 1000,
        *,
        max_batch: int = 1000,
        mixed: bool = False,
    ) -> None:
        self.checkpoint = checkpoint  # last acked position (persisted)
        self.cursor = checkpoint  # last position received
        self.last_sent = checkpoint
        self.max_size = max_size
        self.behind = True  # storage may hold events beyond the cursor
        self.max_notified = 0
        self._position = position
        self._stream_key = stream_key
        self._read_batch_size = read_batch_size
        self._max_batch = max(1, max_batch)
        self._mixed = mixed
        self._buffer: deque[E] = deque()

    @property
    def in_flight(self) -> int:
        """How many positions were sent but not acked."""
        return self.last_sent - self.checkpoint

    @property
    def held(self) -> int:
        return len(self._buffer) + self.in_flight

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    # Inputs -----------------------------------------------------------------------------------
    def notified(self, events: Sequence[E]) -> None:
        """Committed events from the publisher, in position order (already filtered)."""
        if not events:
            return
        self.max_notified = max(self.max_notified, self._position(events[-1]))
        fresh = [e for e in events if self._position(e) > self.cursor]
        if not fresh:
            return  # duplicates or the past
        if self.behind or self._position(fresh[0]) != self.cursor + 1:
            self.behind = True  # a gap, or storage is being read: storage will supply them
            return
        self._extend(fresh)

    def must_recheck(self) -> None:
        """Something may have been missed (publisher restart, reconnect): re-read storage."""
        self.behind = True

    def read_done(self, events: Sequence[E], limit: int) -> None:
        """The result of a `Read` the actor performed."""
        fresh = [e for e in events if self._position(e) > self.cursor]
        if fresh and self._position(fresh[0]) != self.cursor + 1:
            raise AssertionError(f"storage read skipped from {self.cursor} to {fresh[0]}")
        self._extend(fresh)
        if not events or (len(events) < limit and self.cursor >= self.max_notified):
            self.behind = False

    def acked(self, position: int) -> int | None:
        """A cumulative ack; returns the new checkpoint to persist, or None if nothing moved."""
        position = min(position, self.last_sent)
        if position <= self.checkpoint:
            return None
        self.checkpoint = position
        return position

    # Output -----------------------------------------------------------------------------------
    def next_action(self) -> Send[E] | Read | None:
        """What to do now: send a batch, read from storage, or wait."""
        if self.in_flight == 0 and self._buffer:
            return Send(self._take_batch())
        if self.behind and not self._buffer and self.held < self.max_size:
            limit = min(self._read_batch_size, self.max_size - self.held)
            return Read(self.cursor + 1, limit)
        return None

    def _extend(self, events: list[E]) -> None:
        room = self.max_size - self.held
        if len(events) > room:
            events = events[:room]
            self.behind = True  # the rest is dropped; read from storage once there is room
        self._buffer.extend(events)
        if events:
            self.cursor = self._position(events[-1])

    def _take_batch(self) -> list[E]:
        first = self._buffer.popleft()
        batch = [first]
        key = self._stream_key(first)
        while (
            self._buffer
            and len(batch) < self._max_batch
            and (self._mixed or self._stream_key(self._buffer[0]) == key)
        ):
            batch.append(self._buffer.popleft())
        self.last_sent = self._position(batch[-1])
        return batch
