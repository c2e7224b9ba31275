"""The subscription state machine: pure, no threads, no I/O.

It decides what to deliver next and when to read from storage; the actor performs the reads,
the sends and the checkpoint writes it asks for. Positions are in the subscription's own space
(event_id for all streams, event_number for one stream).

Positions have gaps where events were hard-deleted (and, in a linking stream, where linked
events were), so a missing position proves nothing by itself: it may be deleted, or committed
and not visible to the reader yet. Inputs therefore say how far they *covered*: every
position from the cursor up to `covered` is among the events given, or gone for good. The
cursor moves to the covered position, stepping over gaps, and never past it: a position
above what was covered is never assumed deleted (the Elixir project's issue 238, checkpoints
that stopped advancing after hard deletes, is the opposite trap, and is avoided too: with
nothing in flight or buffered, the checkpoint follows the cursor over deleted positions).
Inputs without a covered position are trusted only as contiguous runs, as in version 1.

Invariants (each guards a trap from the Elixir project's history):
- `cursor` is the highest position received (sent or buffered) or covered; it only moves by
  contiguous extension, from the publisher or from a storage read starting at cursor + 1. So
  nothing is delivered twice within one run and nothing is skipped.
- At most one batch is in flight; the next is sent only when everything sent is acked.
- `held` (in flight + buffered) never exceeds `max_size`: the excess is dropped and the
  subscription is marked `behind`; it reads from storage again only when its buffer is empty.
- It stops reading (goes live) only when a read came back short *and* no notification has
  shown a position beyond the cursor.
- Acks only move the checkpoint forward and never past what was sent, except over positions
  covered and empty (deleted) once everything sent is acked and nothing is buffered.
- A batch holds at most `max_batch` events, of one stream unless `mixed` (all-streams
  subscriptions whose subscriber commits once per batch).
- A nack acks the events before the nacked one in its batch; the nacked one (unless skipped
  or parked: then it counts as acked) and those after it go back to the front of the buffer,
  and while a retry is pending nothing is sent, so order holds. A retried event is sent alone.
- Replayed parked events (positions at or below the checkpoint) go out one per batch, ahead of
  everything else; they never move the checkpoint.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from .intake import Intake

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


class SubscriptionState(Intake[E]):
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
        super().__init__(checkpoint, max_size, position)
        self.last_sent = checkpoint
        self._sent: list[int] = []  # positions of the last batch sent, ascending
        self._stream_key = stream_key
        self._read_batch_size = read_batch_size
        self._max_batch = max(1, max_batch)
        self._mixed = mixed
        self._buffer: deque[E] = deque()
        self._sent_events: list[E] = []  # the last batch sent (for nacks)
        self.paused = False  # a retry is pending: nothing is sent until `resume`
        self._single = False  # the next batch is one event (a retry)
        self._replay: deque[E] = deque()  # parked events to deliver again, first
        self.replaying: E | None = None  # the replayed event in flight

    @property
    def in_flight(self) -> int:
        """How many events were sent but not acked."""
        if self.last_sent <= self.checkpoint:
            return 0
        return len(self._sent) - bisect_right(self._sent, self.checkpoint)

    def nacked(self, position: int, resolved: bool) -> int | None:
        """A nack of `position`, sent in the batch in flight: the events before it count as
        acked; `resolved` (skipped or parked): it counts as acked too, else it is sent again
        (alone) after `resume`. Those after it are sent again. Returns a new checkpoint to
        store, or None (also when `position` is not in flight)."""
        if self.in_flight == 0 or position <= self.checkpoint or position not in self._sent:
            return None
        before = self.checkpoint
        index = self._sent.index(position)
        again = self._sent_events[index + (1 if resolved else 0) :]
        self.checkpoint = position if resolved else position - 1
        self.last_sent = self.checkpoint
        self._sent, self._sent_events = [], []
        self._buffer.extendleft(reversed(again))
        if not resolved:
            self.paused = self._single = True
        return self.checkpoint if self.checkpoint > before else None

    def sent_event(self, position: int) -> E | None:
        """The event at `position` in the batch in flight, if it is there and not acked."""
        if position <= self.checkpoint or position not in self._sent:
            return None
        return self._sent_events[self._sent.index(position)]

    def resume(self, position: int | None = None) -> None:
        """The retry delay passed: the retried event may go out (one at a time: `position`
        is not needed, as for `ConcurrentState.resume`)."""
        self.paused = False

    def replay(self, events: Sequence[E]) -> None:
        """Parked events to deliver again (in their order) before anything newer."""
        self._replay.extend(events)

    def replay_done(self, retry: bool = False) -> E | None:
        """The replayed event in flight was acked, or nacked (`retry`: sent again after
        `resume`); returns it."""
        event, self.replaying = self.replaying, None
        if retry and event is not None:
            self._replay.appendleft(event)
            self.paused = True
        return event

    @property
    def held(self) -> int:
        return len(self._buffer) + self.in_flight

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def queued(self) -> int:
        """Events received and not sent yet (as `ConcurrentState.queued`): the buffer."""
        return len(self._buffer)

    def level_at(self, first: int, count: int) -> bool:
        """Whether `count` new events from position `first` would go out at once, alone,
        with nothing else to do: live (not behind), nothing in flight, buffered, replayed or
        paused, `first` right after the cursor and room for them (see `direct.py`)."""
        return (
            first == self.cursor + 1
            and not self.behind
            and not self._buffer
            and self.in_flight == 0
            and self.replaying is None
            and not self.paused
            and not self._replay
            and count <= self.max_size
        )

    @property
    def settles_on_ack(self) -> bool:
        """Whether an ack leaves nothing to do but wait: nothing buffered, replayed or
        paused, and not behind (no storage read follows)."""
        return (
            not self.behind
            and not self._buffer
            and self.replaying is None
            and not self.paused
            and not self._replay
        )

    # Inputs (notified, must_recheck, read_done: see Intake) ------------------------------
    def acked(self, position: int) -> int | None:
        """A cumulative ack; returns the new checkpoint to persist, or None if nothing moved.

        Once everything sent is acked and nothing is buffered, the checkpoint moves on to the
        cursor: the positions in between were covered and held nothing to deliver.
        """
        position = min(position, self.last_sent)
        if position <= self.checkpoint:
            return None
        self.checkpoint = position
        settled = self._settle()
        return position if settled is None else settled

    # Output -----------------------------------------------------------------------------------
    def next_action(self) -> Send[E] | Read | None:
        """What to do now: send a batch, read from storage, or wait."""
        if self.in_flight == 0 and self.replaying is None and not self.paused and self._replay:
            self.replaying = self._replay.popleft()
            return Send([self.replaying])
        if self.replaying is not None or self.paused:
            return None
        if self.in_flight == 0 and self._buffer:
            return Send(self._take_batch())
        if self.behind and not self._buffer and self.held < self.max_size:
            limit = min(self._read_batch_size, self.max_size - self.held)
            return Read(self.cursor + 1, limit)
        return None

    def _keep(self, events: list[E]) -> None:
        self._buffer.extend(events)

    def _settle(self) -> int | None:
        """With nothing in flight or buffered, every position up to the cursor is done
        (delivered and acked, or covered and empty): the checkpoint moves there."""
        if self.cursor > self.checkpoint and not self._buffer and self.in_flight == 0:
            self.checkpoint = self.last_sent = self.cursor
            self._sent, self._sent_events = [], []
            return self.checkpoint
        return None

    def _take_batch(self) -> list[E]:
        first = self._buffer.popleft()
        batch = [first]
        key = self._stream_key(first)
        while (
            self._buffer
            and not self._single
            and len(batch) < self._max_batch
            and (self._mixed or self._stream_key(self._buffer[0]) == key)
        ):
            batch.append(self._buffer.popleft())
        self._single = False
        self._sent = [self._position(e) for e in batch]
        self._sent_events = batch
        self.last_sent = self._sent[-1]
        return batch
