"""Catch-up reading for a subscription's actor: what it reads from storage (on its lock
connection, the read pool or a standby), decodes, and keeps after its selector.

The actor owns one `Reads` per instance; it says how far each read covered (see
`intake.Intake`) and stops right before the first event that cannot be decoded or that the
selector (or, for competing consumers, `partition_by`) fails on: `fatal` then says why, and
the actor ends the subscription once everything before that event was delivered.

Positions: event_id for all streams; event_number for one stream (its own events' stream
version, or a link's position in it). Catch-up reads say how far they covered, so gaps left by
hard deletes are stepped over (see `SubscriptionState`). A stream subscription learns that its
stream was deleted from `StreamDeleted` (told by the deleting store, or by the publisher on
another process's notification), from its reads, or on its health check (`head`: the stream
is soft-deleted, or its checkpoint row is gone: a hard delete removes it).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from ..config import Settings
from ..errors import InvalidStartFromError
from ..events import RecordedEvent
from ..notifications.messages import Published
from ..storage import checkpoints, deletes, reader
from ..storage.replica import current_lsn
from .hub import SharedLockSession
from .intake import Intake
from .lock import LockSession
from .prefetch import Ahead, Page, Work
from .spec import SubscriptionSpec
from .state import Read

__all__ = ["Reads", "deleted", "position", "start_position"]

_R = TypeVar("_R", bound=tuple[Any, ...])

#: The most a catch-up read asks for (the state machines' `read_batch_size`): a page ahead.
READ_PAGE = 1000


def position(event: RecordedEvent, all_streams: bool) -> int:
    """An event's position in a subscription: event_id for all streams, else event_number."""
    return event.event_id if all_streams else event.event_number


def deleted(stream_uuid: str) -> str:
    """Why a subscription to a deleted stream ends."""
    return f"the stream {stream_uuid!r} was deleted"


def start_position(lock: LockSession | SharedLockSession, spec: SubscriptionSpec) -> int:
    """Where a subscription without a stored checkpoint starts (`start_from`)."""
    start = spec.start_from
    if start == "origin":
        return 0
    if start == "current":
        if spec.stream_uuid == checkpoints.ALL_STREAMS:
            return lock.run(reader.last_event_id)
        stream = spec.stream_uuid
        return lock.run(lambda c: reader.stream_version(c, stream)) or 0
    if isinstance(start, int) and not isinstance(start, bool) and start >= 0:
        return start
    raise InvalidStartFromError(f"invalid start_from {start!r}")


class Reads:
    """The catch-up reads of one actor instance, and the failures they met."""

    def __init__(
        self,
        spec: SubscriptionSpec,
        settings: Settings,
        lock: LockSession | SharedLockSession,
        partition_by: Callable[[RecordedEvent], Any] | None,
    ) -> None:
        self._spec = spec
        self._settings = settings
        self._lock = lock
        self._partition_by = partition_by  # competing consumers only (see delivery.py)
        self.all = spec.stream_uuid == checkpoints.ALL_STREAMS
        self.fatal: str | None = None  # why the subscription must end after what was read
        self.seen_head = 0  # the head the last health check found (replica reads)
        # A CatchUp was told (replica reads): the next short read must cover what was
        # committed by then, as of the primary's WAL position taken for it (None: not yet).
        self.catch_up_due = False
        self.catch_up_lsn: int | None = None
        self.keys: dict[int, Hashable] = {}  # position -> partition key (computed on intake)
        # Catch-up pages read ahead on the read pool while the subscriber works (not with
        # `replica_dsn`: a standby's reads wait for WAL positions, see `_covered`).
        pool = spec.pool
        self._ahead = (
            None
            if pool is None or spec.replica is not None
            else Ahead(
                pool,
                settings.pool_size,
                min(spec.max_size, READ_PAGE),
                lock.read,
                settings.io_timeout,
            )
        )

    def read(
        self, action: Read, intake: Intake[RecordedEvent] | None
    ) -> tuple[list[RecordedEvent], int] | None:
        """The events from `action.start` on and how far the read covered (see
        `reader.read_all_covered`); an undecodable event cuts both short. None: the stream
        subscribed to was deleted."""
        start, limit = action.start, action.limit
        ahead = self._ahead
        if ahead is not None:
            rows, covered, deleted = ahead.take(intake, start, limit, self._query)
        else:
            rows, covered, deleted = self._covered(self._query(start, limit), limit, intake)
        if deleted:
            return None
        events = self.decode(rows)
        if len(events) < len(rows):  # stop right before the bad event
            covered = events[-1].event_number if events else start - 1
        events, failed = self.select(events, intake)
        if failed is not None:  # stop right before the event the selector failed on
            covered = failed.event_number - 1
        return events, covered

    def _query(self, start: int, limit: int) -> Work:
        """The covered read of `limit` rows from `start`, as (rows, covered, deleted)."""
        types, prefix = self._spec.event_types, self._spec.stream_prefix
        if self.all:
            part = self._spec.partition

            def read_all(conn: Any) -> Page:
                rows, covered = reader.read_all_covered(
                    conn, start, limit, event_types=types, stream_prefix=prefix, partition=part
                )
                return rows, covered, False

            return read_all
        stream = self._spec.stream_uuid
        return lambda c: reader.read_stream_covered(c, stream, start, limit, event_types=types)

    def discard(self) -> None:
        """Forget what was read ahead (the state machine starts over, or the lock was lost)."""
        if self._ahead is not None:
            self._ahead.discard()

    def close(self) -> None:
        """The actor stops: nothing read ahead stays, and no read-ahead thread outlives it."""
        if self._ahead is not None:
            self._ahead.close()

    def _covered(
        self, work: Callable[[Any], _R], limit: int, intake: Intake[RecordedEvent] | None
    ) -> _R:
        """A covered read on the lock connection, or on the standby with `replica_dsn`.

        A standby's snapshot covers less while it lags: a short read whose cover stops
        before a position already notified (or seen as the head) would let the state machine
        go live too early, so the read is done again once the standby has replayed the
        primary's WAL position of now (that notification's commit is before it), waiting at
        most replica_max_lag, else on the primary: no busy loop, nothing missed.

        A `CatchUp` stands for events committed and not told (the publisher's flow control
        coalesced them, or a resync): their positions are not known here, but their commits
        are before the primary's WAL position of the first read after it, so the reads wait
        for that position until one is short (the one that would go live).
        """
        replica = self._spec.replica
        if replica is None:
            return self._lock.read(work)  # with shared_lock_session: from the read pool
        if self.catch_up_due:
            if self.catch_up_lsn is None:
                self.catch_up_lsn = self._lock.run(current_lsn)
            found = replica.run_at_least(work, self.catch_up_lsn, self._lock.run)
            if len(found[0]) < limit:
                self.catch_up_due, self.catch_up_lsn = False, None
            return found
        found = replica.run_at_least(work, 0, self._lock.run)
        want = self.seen_head
        if intake is not None:
            want = max(want, intake.max_notified)
        rows, covered = found[0], found[1]
        if len(rows) >= limit or covered >= want:
            return found
        lsn = self._lock.run(current_lsn)
        return replica.run_at_least(work, lsn, self._lock.run)

    def published(
        self, state: Intake[RecordedEvent], message: Published
    ) -> tuple[bool, int | None]:
        """Events from the publisher (already committed), filtered as the reads are, given to
        `state`: whether it took some, and a checkpoint that covered empty positions moved."""
        spec, settled = self._spec, None
        if self.all:
            covered = message.covered
            events = [e for e in message.events if spec.matches(e)]
            events, failed = self.select_published(events, state)
            if failed is not None and covered is not None:
                covered = (covered[0], failed.event_id - 1)
            settled = state.notified(events, covered)
        else:  # the publisher's view is $all's: event_number = event_id
            stream = spec.stream_uuid
            own = [_own(e) for e in message.events if e.stream_uuid == stream]
            # Filtered out: a gap, so the next matching event is read from storage.
            events, failed = self.select_published([e for e in own if spec.matches(e)], state)
            state.notified(events)
        if failed is not None:
            state.must_recheck()  # the end comes right after the last batch
        return bool(events), settled

    def head(self) -> tuple[int, str | None]:
        """The last position in storage (kept as `seen_head`), and why the subscription must
        end: for a stream subscription, its stream is soft-deleted, or a hard delete removed
        its checkpoint row."""
        if self.all:
            self.seen_head = self._lock.head(None)
            return self.seen_head, None
        stream, name = self._spec.stream_uuid, self._spec.name
        version, gone, kept = self._lock.read(lambda c: deletes.watch(c, stream, name))
        self.seen_head = version
        if gone or (not kept and version == 0):
            return version, deleted(stream)
        if not kept:
            return version, (
                "the subscription's checkpoint was deleted (its stream was deleted, or "
                "delete_subscription was called by another store)"
            )
        return version, None

    def select_published(
        self, events: list[RecordedEvent], intake: Intake[RecordedEvent] | None
    ) -> tuple[list[RecordedEvent], RecordedEvent | None]:
        """`select` for events from the publisher, where a failure is not final yet
        (`fatal` is left as it was): the storage read that follows meets it again right
        after the events before it (a subscription catching up may not have taken those
        from the publisher: it reads them from storage), and ends the subscription then."""
        fatal = self.fatal
        try:
            return self.select(events, intake)
        finally:
            self.fatal = fatal

    def select(
        self, events: list[RecordedEvent], intake: Intake[RecordedEvent] | None
    ) -> tuple[list[RecordedEvent], RecordedEvent | None]:
        """The events the selector keeps, up to the first it fails on (returned second;
        `fatal` then says why). The others count as acked: their positions are covered.
        With `partition_by`, their partition keys too (a failing `partition_by` cuts the
        events there, as a failing selector does)."""
        kept, failed = self._selected(events)
        partition_by = self._partition_by
        if partition_by is None:
            return kept, failed
        keys = self.keys
        if len(keys) > 2 * self._spec.max_size and intake is not None:
            cursor = intake.cursor
            for stale in [p for p in keys if p <= cursor]:
                del keys[stale]
        for index, event in enumerate(kept):
            try:
                key = partition_by(event)
                hash(key)
            except Exception as exc:
                self.fatal = f"partition_by failed on event {event.event_id}: {exc!r}"
                return kept[:index], event
            if key is not None:
                keys[position(event, self.all)] = key
        return kept, failed

    def _selected(
        self, events: list[RecordedEvent]
    ) -> tuple[list[RecordedEvent], RecordedEvent | None]:
        selector = self._spec.selector
        if selector is None:
            return events, None
        kept: list[RecordedEvent] = []
        for event in events:
            try:
                if selector(event):
                    kept.append(event)
            except Exception as exc:
                self.fatal = f"the selector failed on event {event.event_id}: {exc!r}"
                return kept, event
        return kept, None

    def key_of(self, event: RecordedEvent) -> Hashable | None:
        """The partition key `select` computed for `event` (taken: asked once, on intake)."""
        return self.keys.pop(position(event, self.all), None)

    def decode(self, rows: list[reader.Row]) -> list[RecordedEvent]:
        """The events before the first undecodable one (then `fatal` says which)."""
        serializer = self._settings.serializer
        try:
            return reader.decode(rows, serializer)
        except Exception:
            good: list[RecordedEvent] = []
            for row in rows:
                try:
                    good.extend(reader.decode([row], serializer))
                except Exception as exc:
                    self.fatal = f"event {row[0]} of type {row[3]!r} cannot be decoded: {exc}"
                    break
            return good


def _own(event: RecordedEvent) -> RecordedEvent:
    """A published event as its own stream reads it: event_number = stream_version."""
    if event.event_number == event.stream_version:
        return event
    copy = object.__new__(RecordedEvent)
    copy.__dict__.update(event.__dict__, event_number=event.stream_version)
    return copy
