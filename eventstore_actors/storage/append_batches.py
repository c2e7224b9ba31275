"""The append requests of a group commit and what each came to.

The types the writer, the outbox and the appender share (`NewEvent`, `AppendRequest`,
`StoredRow`, `Written`, `Outcome`), and the bookkeeping of a batch that needs no connection
of its own: which event_ids and versions each request gets (`assign`), whether a request
with caller-given UUIDs is a retry of a stored append (`_replayed`, `compare_replays`), and
the group statement's parameters and outcomes. `appender` runs the statements.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import psycopg
from psycopg.rows import tuple_row

from ..errors import EventStoreError
from ..events import AppendResult, ExpectedVersion
from ..sql import statement
from . import expected as exp

__all__ = [
    "AppendRequest",
    "NewEvent",
    "Outcome",
    "StoredRow",
    "StreamWrite",
    "Written",
    "compare_replays",
    "group_outcomes",
    "group_params",
]


class NewEvent(NamedTuple):
    """An event already serialized by the caller, ready to store."""

    event_type: str
    correlation_id: str | None
    causation_id: str | None
    data: bytes
    metadata: bytes | None
    event_uuid: uuid.UUID
    #: The data subject; `data` is then encrypted (lifecycle/encryption.py).
    subject: str | None = None


class StoredRow(NamedTuple):
    """A committed event as the reader returns it, before deserialization."""

    event_id: int
    stream_uuid: str
    stream_version: int
    event_type: str
    correlation_id: str | None
    causation_id: str | None
    data: bytes
    metadata: bytes | None
    created_at: datetime
    event_uuid: uuid.UUID
    #: The position in the all-streams log (the publisher's view): event_id.
    event_number: int
    #: The data subject (`data` encrypted), and whether it is forgotten (as reads return it).
    subject: str | None = None
    forgotten: bool = False


@dataclass(frozen=True, slots=True)
class StreamWrite:
    """One stream's part of an append."""

    stream_uuid: str
    expected_version: int | ExpectedVersion
    events: list[NewEvent]


@dataclass(frozen=True, slots=True)
class AppendRequest:
    """One caller's append: one or more streams, written all or nothing (never the same
    stream twice). `given_uuids`: some event_uuid came from the caller, so earlier copies of
    the events are looked up (idempotent retries); store-assigned UUIDs are fresh and skip
    that lookup. `same_metadata(stored, sent)`: whether an earlier copy's metadata is the
    one sent when their bytes differ (None: only equal bytes are)."""

    writes: list[StreamWrite]
    given_uuids: bool = False
    same_metadata: Callable[[bytes | None, bytes | None], bool] | None = None
    size: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", sum(len(w.events) for w in self.writes))

    @classmethod
    def single(
        cls,
        stream_uuid: str,
        expected_version: int | ExpectedVersion,
        events: list[NewEvent],
        given_uuids: bool = False,
    ) -> AppendRequest:
        return cls([StreamWrite(stream_uuid, expected_version, events)], given_uuids)


@dataclass(frozen=True, slots=True)
class Written:
    """A decided append: where its events are (one result per stream, in the request's
    order), and the rows it committed (none when it was a retry of a stored append)."""

    results: list[AppendResult]
    rows: list[StoredRow]


#: What one append came to: written (or found already written), or the error its caller gets.
Outcome = Written | EventStoreError


def is_replay(req: AppendRequest, outcome: Outcome) -> bool:
    """Whether `outcome` found `req` already stored (a retry): written, nothing committed."""
    return req.given_uuids and isinstance(outcome, Written) and not outcome.rows


def compare_replays(
    conn: psycopg.Connection[Any],
    requests: list[AppendRequest],
    outcomes: list[Outcome],
    query: str | None = None,
) -> list[Outcome]:
    """`outcomes`, where a request found already stored is a DuplicateEventError unless each
    stored event has the event_type, data and metadata (as serialized) of the one sent.

    A retry writes nothing, so reading what is stored afterwards (events never change; the
    read is one round trip, only when a retry was found) decides it. `query`: the statement,
    when `conn` needs it schema-qualified (the caller's own connection)."""
    replays = [
        i
        for i, (req, out) in enumerate(zip(requests, outcomes, strict=True))
        if is_replay(req, out)
    ]
    if not replays:
        return outcomes
    sent = {
        ev.event_uuid: (write.stream_uuid, ev, requests[i].same_metadata)
        for i in replays
        for write in requests[i].writes
        for ev in write.events
    }
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            query or statement("append/stored_content"), {"event_uuids": list(sent)}
        ).fetchall()
    different: dict[uuid.UUID, str] = {}
    for event_uuid, event_type, data, metadata in rows:
        stream_uuid, ev, same_metadata = sent[event_uuid]
        stored = (event_type, _bytes(data), _bytes(metadata))
        if stored != (ev.event_type, _bytes(ev.data), _bytes(ev.metadata)) and not (
            same_metadata is not None
            and stored[:2] == (ev.event_type, _bytes(ev.data))
            and same_metadata(stored[2], _bytes(ev.metadata))
        ):
            different[event_uuid] = stream_uuid
    if not different:
        return outcomes
    result = list(outcomes)
    for i in replays:
        for write in requests[i].writes:
            found = next((ev.event_uuid for ev in write.events if ev.event_uuid in different), None)
            if found is not None:
                result[i] = exp.different_event(write.stream_uuid, found)
                break
    return result


def has_subjects(events: Sequence[NewEvent]) -> bool:
    return any(ev.subject is not None for ev in events)


def _bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


def event_columns(events: Sequence[NewEvent]) -> dict[str, Any]:
    """The events as one array per column."""
    return {
        "event_types": [ev.event_type for ev in events],
        "correlation_ids": [ev.correlation_id for ev in events],
        "causation_ids": [ev.causation_id for ev in events],
        "data": [ev.data for ev in events],
        "metadata": [ev.metadata for ev in events],
        "event_uuids": [ev.event_uuid for ev in events],
        "subjects": [ev.subject for ev in events],
    }


def group_params(requests: list[AppendRequest], channel: str, origin: str) -> dict[str, Any]:
    """The arguments of append_events_v4 (append/append_events.sql) for these requests."""
    writes: list[StreamWrite] = []
    units: list[int] = []
    check: list[bool] = []
    for unit, req in enumerate(requests, start=1):
        writes.extend(req.writes)
        units.extend([unit] * len(req.writes))
        check.extend([req.given_uuids] * len(req.writes))
    return {
        "stream_uuids": [w.stream_uuid for w in writes],
        "expected": [exp.encode(w.expected_version) for w in writes],
        "counts": [len(w.events) for w in writes],
        "units": units,
        "check": check,
        **event_columns([ev for w in writes for ev in w.events]),
        "channel": channel,
        "origin": origin,
    }


def group_outcomes(requests: list[AppendRequest], results: list[tuple[Any, ...]]) -> list[Outcome]:
    """Each request's outcome from append_events_v2's rows (one per stream write, in order)."""
    outcomes: list[Outcome] = []
    rows_of = iter(results)
    for req in requests:
        error: EventStoreError | None = None
        appended: list[AppendResult] = []
        stored: list[StoredRow] = []
        for write in req.writes:
            _, status, first_id, last_id, first_version, actual, created_at = next(rows_of)
            if status == exp.STATUS_OK:
                rows = stored_rows(write, first_id, first_version - 1, created_at)
                stored.extend(rows)
                appended.append(result_of(write.stream_uuid, rows))
            elif status == exp.STATUS_REPLAYED:
                appended.append(
                    AppendResult(write.stream_uuid, first_version, actual, first_id, last_id)
                )
            elif error is None and status != exp.STATUS_SKIPPED:
                error = exp.status_error(status, write.stream_uuid, write.expected_version, actual)
        outcomes.append(error if error is not None else Written(appended, stored))
    return outcomes


def result_of(stream_uuid: str, rows: list[StoredRow]) -> AppendResult:
    return AppendResult(
        stream_uuid, rows[0].stream_version, rows[-1].stream_version, rows[0][0], rows[-1][0]
    )


def stored_rows(
    write: StreamWrite, first_id: int, version: int, created_at: datetime
) -> list[StoredRow]:
    """The rows of a committed write whose stream was at `version` before it."""
    stream_uuid = write.stream_uuid
    return [
        StoredRow(
            first_id + i,
            stream_uuid,
            version + i + 1,
            ev.event_type,
            ev.correlation_id,
            ev.causation_id,
            ev.data,
            ev.metadata,
            created_at,
            ev.event_uuid,
            first_id + i,
            ev.subject,
        )
        for i, ev in enumerate(write.events)
    ]


def _replayed(
    req: AppendRequest,
    streams: dict[str, tuple[int, int, bool]],
    stored: dict[uuid.UUID, tuple[int, int, int]],
) -> list[AppendResult] | EventStoreError | None:
    """For a request with caller-given UUIDs: the stored results when every event is already
    stored as this very append (a retry), None when none is, else DuplicateEventError."""
    found = 0
    results: list[AppendResult] | None = []
    for write in req.writes:
        hits = [stored.get(ev.event_uuid) for ev in write.events]
        present = [h for h in hits if h is not None]
        found += len(present)
        sid = streams.get(write.stream_uuid, (None, 0, False))[0]
        if results is None or len(present) != len(hits):
            results = None
            continue
        offsets = {version - i for i, (_, version, _) in enumerate(present)}
        if len(offsets) != 1 or any(h_sid != sid for h_sid, _, _ in present):
            results = None
            continue
        results.append(
            AppendResult(
                write.stream_uuid, present[0][1], present[-1][1], present[0][2], present[-1][2]
            )
        )
    if found == 0:
        return None
    return results if results is not None else exp.duplicate(req.writes[0].stream_uuid)


def assign(
    requests: list[AppendRequest],
    streams: dict[str, tuple[int, int, bool]],
    stored: dict[uuid.UUID, tuple[int, int, int]],
    last_event_id: int,
    now: datetime,
) -> tuple[list[Outcome], list[tuple[Any, ...]], dict[int, int]]:
    """Check each request against the locked state (the same rules as append_events_v2);
    number the events of those that hold. `streams`: stream_uuid -> (stream_id, version,
    deleted), every stream of the batch that exists (a new stream's row was just created at
    version 0); `stored`: event_uuid -> (stream_id, stream_version, event_id) of events
    already stored under the UUIDs callers gave."""
    outcomes: list[Outcome] = []
    rows: list[tuple[Any, ...]] = []
    versions: dict[int, int] = {}
    next_id = last_event_id + 1
    for req in requests:
        error: EventStoreError | None = None
        for write in req.writes:
            sid, version, deleted = streams.get(write.stream_uuid, (0, 0, False))
            if deleted:
                error = exp.check(write.stream_uuid, write.expected_version, version, deleted)
                break
        if error is None and req.given_uuids:
            replay = _replayed(req, streams, stored)
            if isinstance(replay, list):
                outcomes.append(Written(replay, []))
                continue
            error = replay
        if error is None:
            for write in req.writes:
                sid, version, deleted = streams.get(write.stream_uuid, (0, 0, False))
                error = exp.check(write.stream_uuid, write.expected_version, version, deleted)
                if error is None and write.stream_uuid not in streams:
                    # Only expected versions that may create a stream had it created.
                    error = exp.failure(write.stream_uuid, write.expected_version, 0, False)
                if error is not None:
                    break
        if error is not None:
            outcomes.append(error)
            continue
        appended: list[AppendResult] = []
        written: list[StoredRow] = []
        for write in req.writes:
            sid, version, deleted = streams[write.stream_uuid]
            batch: list[StoredRow] = []
            for offset, ev in enumerate(write.events, start=1):
                row = StoredRow(
                    next_id,
                    write.stream_uuid,
                    version + offset,
                    ev.event_type,
                    ev.correlation_id,
                    ev.causation_id,
                    ev.data,
                    ev.metadata,
                    now,
                    ev.event_uuid,
                    next_id,
                    ev.subject,
                )
                batch.append(row)
                rows.append((next_id, sid, *row[2:10], ev.subject))
                if req.given_uuids:
                    stored[ev.event_uuid] = (sid, version + offset, next_id)
                next_id += 1
            version += len(write.events)
            streams[write.stream_uuid] = (sid, version, deleted)
            versions[sid] = version
            appended.append(result_of(write.stream_uuid, batch))
            written.extend(batch)
        outcomes.append(Written(appended, written))
    return outcomes, rows, versions
