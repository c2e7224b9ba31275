"""Appending events: many callers' appends committed in one transaction (group commit).

Each append still succeeds or fails on its own expected version. The event_counter row lock,
taken first and held to commit, serialises appenders across processes, so global ids are
gap-free and handed out in commit order; the unique (stream_id, stream_version) constraint is
the last word on which of two racing appends wins.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import psycopg
from psycopg.rows import tuple_row

from ..errors import EventStoreError, StoreUnavailableError
from ..events import AppendResult, ExpectedVersion
from ..sql import statement
from . import expected as exp
from .connection import reset_to_idle
from .errors import (
    FORGOTTEN_SQLSTATE,
    database_error,
    is_connection_loss,
    is_transient,
    unavailable,
)

__all__ = [
    "AppendRequest",
    "Appender",
    "NewEvent",
    "Outcome",
    "StoredRow",
    "StreamWrite",
    "Written",
    "compare_replays",
    "group_outcomes",
    "group_params",
]

#: Batches up to this many events go through append_events_v4() in one round trip; larger
#: ones through COPY, which costs two more round trips but less per row.
SMALL_BATCH_EVENTS = 64

#: The unique index that makes event_uuid unique in the store (the idempotency backstop).
UUID_CONSTRAINT = "events_event_uuid_key"


#: The check of the events' data subjects in the one-statement append (append_one.sql).
_SUBJECTS_CHECK = "\n    WHERE (SELECT refuse_forgotten_subjects(%(subjects)s) FROM c)"


def _one(stream: str, check: str = "") -> str:
    return (
        statement("append/append_one")
        .replace("{stream}", statement(f"append/{stream}"))
        .replace("{check}", check)
    )


#: The one-statement append, by the kind of expected version.
_APPEND_NEW = _one("stream_new")
_APPEND_EXISTING = _one("stream_existing")
_APPEND_EXISTS = _one("stream_exists")
_APPEND_ANY = _one("stream_any")
#: The same for events with a data subject: refused when one is forgotten (SQLSTATE EAF01).
_SEALED = {
    query: _one(stream, _SUBJECTS_CHECK)
    for query, stream in (
        (_APPEND_NEW, "stream_new"),
        (_APPEND_EXISTING, "stream_existing"),
        (_APPEND_EXISTS, "stream_exists"),
        (_APPEND_ANY, "stream_any"),
    )
}

_COPY_TYPES = [
    "int8",
    "int8",
    "int8",
    "text",
    "text",
    "text",
    "bytea",
    "bytea",
    "timestamptz",
    "uuid",
    "text",
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


class Appender:
    """Writes batches of append requests on one dedicated autocommit connection.

    Database errors never escape `append`: each request gets its outcome or a contract error.
    `connection_lost` tells the owner afterwards that the connection must be replaced.
    """

    def __init__(self, conn: psycopg.Connection[Any], channel: str, origin: str) -> None:
        conn.prepare_threshold = None  # nothing is prepared behind our back (see _run_alone)
        self._conn = conn
        self._channel = channel
        self._origin = origin  # lets this store's own listener skip its own notifications
        #: Set when a commit was sent (COMMIT, or an autocommit statement that commits):
        #: only then may a lost connection leave the outcome unknown.
        self._committing = False
        self.connection_lost = False

    def append(self, requests: list[AppendRequest]) -> list[Outcome]:
        """Commit every request that matches its expected versions, in one transaction.

        When that transaction fails because of one request's data (a constraint, a trigger, a
        limit), every request is retried in a transaction of its own so that only the bad one
        fails. A lost connection or a cancelled statement fails the whole group at once.
        A request found already stored (a retry) is compared with what is stored: another
        event under one of its UUIDs makes it a DuplicateEventError (see `compare_replays`).
        """
        outcomes = self._decide(requests)
        if self.connection_lost:
            return outcomes
        try:
            return compare_replays(self._conn, requests, outcomes)
        except psycopg.Error as exc:
            self._rollback()
            if is_connection_loss(exc, self._conn):
                self.connection_lost = True
            failed = database_error(exc, "append")
            return [
                failed if _replay(req, out) else out
                for req, out in zip(requests, outcomes, strict=True)
            ]

    def _decide(self, requests: list[AppendRequest]) -> list[Outcome]:
        try:
            return self._append(requests)
        except psycopg.Error as exc:
            self._rollback()
            # A lost connection or a reason of the moment fails every request (an error each).
            failed: list[Outcome] = [e for e in (self._failed(exc) for _ in requests) if e]
            if failed:
                return failed
            if len(requests) == 1:
                return [self._rejected(requests[0], exc)]
        return self._one_by_one(requests)

    def _failed(self, exc: psycopg.Error) -> EventStoreError | None:
        """The error of a statement that failed every request it carried whatever their data
        (a lost connection: `connection_lost` is set; a reason of the moment), or None when
        the requests' own data may be the cause (see `_rejected`)."""
        if is_connection_loss(exc, self._conn):
            self.connection_lost = True
            return unavailable(exc, outcome_unknown=self._committing)
        if is_transient(exc):
            return database_error(exc, "append")
        return None

    def _one_by_one(self, requests: list[AppendRequest]) -> list[Outcome]:
        """Each request in its own transaction; what committed stays committed whatever
        happens to the requests after it."""
        outcomes: list[Outcome] = []
        for req in requests:
            if self.connection_lost:
                outcomes.append(
                    StoreUnavailableError(
                        "database unavailable: the connection was lost before this append "
                        "was sent; nothing was stored"
                    )
                )
                continue
            try:
                outcomes.extend(self._append([req]))
            except psycopg.Error as exc:
                self._rollback()
                outcomes.append(self._failed(exc) or self._rejected(req, exc))
        return outcomes

    def _rejected(self, req: AppendRequest, exc: psycopg.Error) -> EventStoreError:
        """The error for one request whose own transaction failed (nothing was stored)."""
        if exc.sqlstate == FORGOTTEN_SQLSTATE:
            return database_error(exc, "append")  # SubjectForgottenError
        if not isinstance(exc, psycopg.errors.IntegrityError):
            return database_error(exc, "append")
        if exc.diag.constraint_name == UUID_CONSTRAINT:
            # Only reachable when a UUID was stored meanwhile by a writer that does not look
            # UUIDs up (or collided): the unique index is the backstop.
            return exp.duplicate(req.writes[0].stream_uuid)
        # Usually a concurrent append won the (stream, version) race: say so if a stream
        # no longer matches; otherwise the database refused the events themselves.
        try:
            for write in req.writes:
                version, deleted = self._stream_state(write.stream_uuid)
                error = exp.check(write.stream_uuid, write.expected_version, version, deleted)
                if error is not None:
                    return error
        except psycopg.Error as lookup:
            if is_connection_loss(lookup, self._conn):
                self.connection_lost = True
            self._rollback()
        return database_error(exc, "append")

    def _stream_state(self, stream_uuid: str) -> tuple[int, bool]:
        """The stream's version (0: missing) and whether it is soft-deleted."""
        row = self._conn.execute(
            statement("append/stream_state"), {"stream_uuid": stream_uuid}
        ).fetchone()
        return (int(row[0]), bool(row[1])) if row else (0, False)

    def _append(self, requests: list[AppendRequest]) -> list[Outcome]:
        self._committing = False
        count = sum(req.size for req in requests)
        if count > SMALL_BATCH_EVENTS:
            return self._append_copy(requests)
        if len(requests) == 1 and len(requests[0].writes) == 1 and not requests[0].given_uuids:
            return [self._append_one(requests[0].writes[0])]
        return self._append_group(requests)

    def _run_alone(self, query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """One statement in autocommit mode: its own transaction, one round trip.

        The counter row lock it takes is held until the statement commits, and its NOTIFY is
        sent at that commit. Only these statements are prepared: a statement prepared inside
        a pipeline that then fails leaves psycopg's prepared-statement cache out of step.
        """
        self._committing = True  # the statement and its commit are one
        return self._conn.execute(query, params, prepare=True).fetchall()

    def _append_one(self, write: StreamWrite) -> Outcome:
        """One stream, store-assigned UUIDs: one statement (append/append_one.sql)."""
        expected = write.expected_version
        if expected is ExpectedVersion.ANY_VERSION:
            query = _APPEND_ANY
        elif expected is ExpectedVersion.STREAM_EXISTS:
            query = _APPEND_EXISTS
        elif expected == 0 or expected is ExpectedVersion.NO_STREAM:
            query = _APPEND_NEW
        else:
            query = _APPEND_EXISTING
        if _has_subjects(write.events):
            query = _SEALED[query]
        params = {
            "n": len(write.events),
            "stream_uuid": write.stream_uuid,
            "expected": exp.encode(expected),
            **_event_columns(write.events),
            "channel": self._channel,
            "origin": self._origin,
        }
        try:
            ((first_id, created_at, version, _),) = self._run_alone(query, params)
        except psycopg.errors.NotNullViolation:
            self._committing = False  # the statement failed: nothing was committed
            version, deleted = self._stream_state(write.stream_uuid)
            return exp.failure(write.stream_uuid, expected, version, deleted)
        rows = _stored(write, first_id, version, created_at)
        return Written([_result(write.stream_uuid, rows)], rows)

    def _append_group(self, requests: list[AppendRequest]) -> list[Outcome]:
        """Several requests (or caller-given UUIDs), one call of append_events_v4()."""
        params = group_params(requests, self._channel, self._origin)
        return group_outcomes(requests, self._run_alone(statement("append/append_events"), params))

    def _rollback(self) -> None:
        """End any transaction a failure left open (best effort: a connection that cannot
        roll back is not IDLE afterwards, and its owner replaces it)."""
        reset_to_idle(self._conn)

    def _append_copy(self, requests: list[AppendRequest]) -> list[Outcome]:
        """Large batches, three round trips: lock, create and look up streams (and stored
        UUIDs when callers gave some); binary COPY; advance streams and counter, notify and
        COMMIT together. Any error rolls back (see append)."""
        conn = self._conn
        writes = [write for req in requests for write in req.writes]
        uuids = list({write.stream_uuid for write in writes})
        new_uuids = list(
            {
                write.stream_uuid
                for write in writes
                if write.expected_version == 0
                or write.expected_version is ExpectedVersion.NO_STREAM
                or write.expected_version is ExpectedVersion.ANY_VERSION
            }
        )
        # A new stream is created at the version every write to it in the batch leads to.
        hoped: dict[str, int] = dict.fromkeys(new_uuids, 0)
        for write in writes:
            if write.stream_uuid in hoped:
                hoped[write.stream_uuid] += len(write.events)
        given = [
            ev.event_uuid
            for req in requests
            if req.given_uuids
            for write in req.writes
            for ev in write.events
        ]
        stored_cur = created_cur = None
        with conn.pipeline():
            conn.execute("BEGIN")
            counter = conn.execute(statement("append/lock_counter"))
            if new_uuids:
                created_cur = conn.execute(
                    statement("append/create_streams"),
                    {"stream_uuids": new_uuids, "stream_versions": list(hoped.values())},
                )
            found = conn.execute(statement("append/stream_versions"), {"stream_uuids": uuids})
            if given:
                stored_cur = conn.execute(statement("append/stored_events"), {"event_uuids": given})
            last_event_id, now = counter.fetchone()  # type: ignore[misc]
            # The row's stream_version now, by stream_id: for a stream created here, the
            # version it was created at; to the checks it is a new stream (version 0).
            in_row = {} if created_cur is None else dict(created_cur.fetchall())
            streams = {
                row[0]: (row[1], 0 if row[1] in in_row else row[2], row[3])
                for row in found.fetchall()
            }
            stored = {} if stored_cur is None else {r[0]: r[1:] for r in stored_cur.fetchall()}
        for sid, version, _ in streams.values():
            in_row.setdefault(sid, version)
        outcomes, rows, versions = _assign(requests, streams, stored, last_event_id, now)
        if not rows:
            conn.execute("ROLLBACK")
            return outcomes
        subjects = [row[-1] for row in rows if row[-1] is not None]
        if subjects:  # under the counter lock taken above (SQLSTATE EAF01: rolled back)
            conn.execute(statement("append/check_subjects"), {"subjects": subjects})
        with conn.cursor() as cur, cur.copy(statement("append/copy_events")) as copy:
            copy.set_types(_COPY_TYPES)
            for row in rows:
                copy.write_row(row)
        last = rows[-1][0]
        unused = [
            sid for sid, version, _ in streams.values() if version == 0 and sid not in versions
        ]
        # Rows not at their final version: streams appended to, but not those created at
        # it; streams created for appends that failed go back to 0 to be dropped.
        moved = {sid: v for sid, v in versions.items() if in_row.get(sid) != v}
        moved.update((sid, 0) for sid in unused if in_row.get(sid) != 0)
        with conn.pipeline():
            if moved:
                conn.execute(
                    statement("append/update_streams"),
                    {"stream_ids": list(moved), "stream_versions": list(moved.values())},
                )
            if unused:
                conn.execute(statement("append/drop_unused_streams"), {"stream_ids": unused})
            conn.execute(statement("append/update_counter"), {"last_event_id": last})
            conn.execute(
                statement("append/notify"),
                {"channel": self._channel, "payload": f"{rows[0][0]},{last},{self._origin}"},
            )
            self._committing = True
            conn.execute("COMMIT")
        return outcomes


def _replay(req: AppendRequest, outcome: Outcome) -> bool:
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
        i for i, (req, out) in enumerate(zip(requests, outcomes, strict=True)) if _replay(req, out)
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


def _has_subjects(events: Sequence[NewEvent]) -> bool:
    return any(ev.subject is not None for ev in events)


def _bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


def _event_columns(events: Sequence[NewEvent]) -> dict[str, Any]:
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
        **_event_columns([ev for w in writes for ev in w.events]),
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
                rows = _stored(write, first_id, first_version - 1, created_at)
                stored.extend(rows)
                appended.append(_result(write.stream_uuid, rows))
            elif status == exp.STATUS_REPLAYED:
                appended.append(
                    AppendResult(write.stream_uuid, first_version, actual, first_id, last_id)
                )
            elif error is None and status != exp.STATUS_SKIPPED:
                error = exp.status_error(status, write.stream_uuid, write.expected_version, actual)
        outcomes.append(error if error is not None else Written(appended, stored))
    return outcomes


def _result(stream_uuid: str, rows: list[StoredRow]) -> AppendResult:
    return AppendResult(
        stream_uuid, rows[0].stream_version, rows[-1].stream_version, rows[0][0], rows[-1][0]
    )


def _stored(
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


def _assign(
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
            appended.append(_result(write.stream_uuid, batch))
            written.extend(batch)
        outcomes.append(Written(appended, written))
    return outcomes, rows, versions
