"""Appending events: many callers' appends committed in one transaction (group commit).

Each append still succeeds or fails on its own expected version. The event_counter row lock,
taken first and held to commit, serialises appenders across processes, so global ids are
gap-free and handed out in commit order; the unique (stream_id, stream_version) constraint is
the last word on which of two racing appends wins.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import psycopg

from ..errors import EventStoreError, StoreUnavailableError, WrongExpectedVersionError
from ..events import NIL_UUID
from ..sql import statement
from .connection import (
    database_error,
    is_connection_loss,
    is_transient,
    reset_to_idle,
    unavailable,
)

__all__ = ["AppendRequest", "Appender", "NewEvent", "StoredRow"]

#: Batches up to this many events go through append_events() in one round trip; larger ones
#: through COPY, which costs two more round trips but less per row.
SMALL_BATCH_EVENTS = 64

_APPEND_NEW = statement("append/append_one").replace("{stream}", statement("append/stream_new"))
_APPEND_EXISTING = statement("append/append_one").replace(
    "{stream}", statement("append/stream_existing")
)

_COPY_TYPES = ["int8", "int8", "int8", "text", "text", "text", "bytea", "bytea", "timestamptz"]


class NewEvent(NamedTuple):
    """An event already serialized by the caller, ready to store."""

    event_type: str
    correlation_id: str | None
    causation_id: str | None
    data: bytes
    metadata: bytes | None


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
    #: NIL_UUID until appends store the UUIDs they are given (streams v2).
    event_uuid: uuid.UUID
    #: The position in the all-streams log (the publisher's view): event_id.
    event_number: int


@dataclass(frozen=True, slots=True)
class AppendRequest:
    stream_uuid: str
    expected_version: int
    events: list[NewEvent]


#: What one append came to: its committed rows, or the error its caller gets.
Outcome = list[StoredRow] | EventStoreError


class Appender:
    """Writes batches of append requests on one dedicated autocommit connection.

    Database errors never escape `append`: each request gets its rows or a contract error.
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
        """Commit every request that matches its expected version, in one transaction.

        When that transaction fails because of one request's data (a constraint, a trigger, a
        limit), every request is retried in a transaction of its own so that only the bad one
        fails. A lost connection or a cancelled statement fails the whole group at once.
        """
        try:
            return self._append(requests)
        except psycopg.Error as exc:
            self._rollback()
            if is_connection_loss(exc, self._conn):
                self.connection_lost = True
                committing = self._committing
                return [unavailable(exc, outcome_unknown=committing) for _ in requests]
            if is_transient(exc):
                return [database_error(exc, "append") for _ in requests]
            if len(requests) == 1:
                return [self._rejected(requests[0], exc)]
        return self._one_by_one(requests)

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
                if is_connection_loss(exc, self._conn):
                    self.connection_lost = True
                    outcomes.append(unavailable(exc, outcome_unknown=self._committing))
                elif is_transient(exc):
                    outcomes.append(database_error(exc, "append"))
                else:
                    outcomes.append(self._rejected(req, exc))
        return outcomes

    def _rejected(self, req: AppendRequest, exc: psycopg.Error) -> EventStoreError:
        """The error for one request whose own transaction failed (nothing was stored)."""
        if isinstance(exc, psycopg.errors.IntegrityError):
            # Usually a concurrent append won the (stream, version) race: say so if the
            # stream moved; otherwise the database refused the events themselves.
            try:
                conflict = self._conflict(req)
            except psycopg.Error as lookup:
                if is_connection_loss(lookup, self._conn):
                    self.connection_lost = True
                self._rollback()
                return database_error(exc, "append")
            if conflict.actual_version != (req.expected_version or None):
                return conflict
        return database_error(exc, "append")

    def _conflict(self, req: AppendRequest) -> WrongExpectedVersionError:
        row = self._conn.execute(
            statement("read/stream_version"), {"stream_uuid": req.stream_uuid}
        ).fetchone()
        version = int(row[0]) if row and row[0] else None
        return WrongExpectedVersionError(req.stream_uuid, req.expected_version, version)

    def _append(self, requests: list[AppendRequest]) -> list[Outcome]:
        self._committing = False
        count = sum(len(req.events) for req in requests)
        if count > SMALL_BATCH_EVENTS:
            return self._append_copy(requests)
        if len(requests) == 1:
            return self._append_one(requests[0])
        return self._append_group(requests)

    def _run_alone(self, query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """One statement in autocommit mode: its own transaction, one round trip.

        The counter row lock it takes is held until the statement commits, and its NOTIFY is
        sent at that commit. Only these statements are prepared: a statement prepared inside
        a pipeline that then fails leaves psycopg's prepared-statement cache out of step.
        """
        self._committing = True  # the statement and its commit are one
        return self._conn.execute(query, params, prepare=True).fetchall()

    def _event_columns(self, events: list[NewEvent]) -> dict[str, Any]:
        """The events as one array per column, and the notification's channel and origin."""
        return {
            "event_types": [ev.event_type for ev in events],
            "correlation_ids": [ev.correlation_id for ev in events],
            "causation_ids": [ev.causation_id for ev in events],
            "data": [ev.data for ev in events],
            "metadata": [ev.metadata for ev in events],
            "channel": self._channel,
            "origin": self._origin,
        }

    def _append_one(self, req: AppendRequest) -> list[Outcome]:
        """One request, one statement (append/append_one.sql)."""
        params = {
            "n": len(req.events),
            "stream_uuid": req.stream_uuid,
            "expected": req.expected_version,
            **self._event_columns(req.events),
        }
        query = _APPEND_NEW if req.expected_version == 0 else _APPEND_EXISTING
        try:
            ((first_id, created_at, _),) = self._run_alone(query, params)
        except psycopg.errors.NotNullViolation:
            self._committing = False  # the statement failed: nothing was committed
            return [self._conflict(req)]  # the stream was not at the expected version
        return [_stored(req, first_id, req.expected_version, created_at)]

    def _append_group(self, requests: list[AppendRequest]) -> list[Outcome]:
        """Several requests, one call of append_events(), each checked on its own."""
        params = {
            "stream_uuids": [req.stream_uuid for req in requests],
            "expected": [req.expected_version for req in requests],
            "counts": [len(req.events) for req in requests],
            **self._event_columns([ev for req in requests for ev in req.events]),
        }
        results = self._run_alone(statement("append/append_events"), params)
        outcomes: list[Outcome] = []
        for req, (_, first_id, version, created_at) in zip(requests, results, strict=True):
            if first_id is None:
                outcomes.append(
                    WrongExpectedVersionError(req.stream_uuid, req.expected_version, version)
                )
            else:
                outcomes.append(_stored(req, first_id, version - len(req.events), created_at))
        return outcomes

    def _rollback(self) -> None:
        """End any transaction a failure left open (best effort: a connection that cannot
        roll back is not IDLE afterwards, and its owner replaces it)."""
        reset_to_idle(self._conn)

    def _append_copy(self, requests: list[AppendRequest]) -> list[Outcome]:
        """Large batches, three round trips: lock and look up streams; binary COPY; advance
        streams and counter, notify and COMMIT together. Any error rolls back (see append)."""
        conn = self._conn
        uuids = list({req.stream_uuid for req in requests})
        new_uuids = list({req.stream_uuid for req in requests if req.expected_version == 0})
        with conn.pipeline():
            conn.execute("BEGIN")
            counter = conn.execute(statement("append/lock_counter"))
            if new_uuids:
                conn.execute(statement("append/create_streams"), {"stream_uuids": new_uuids})
            found = conn.execute(statement("append/stream_versions"), {"stream_uuids": uuids})
            last_event_id, now = counter.fetchone()  # type: ignore[misc]
            streams = {row[0]: (row[1], row[2]) for row in found.fetchall()}
        outcomes, rows, versions = _assign(requests, streams, last_event_id, now)
        if not rows:
            conn.execute("ROLLBACK")
            return outcomes
        with conn.cursor() as cur, cur.copy(statement("append/copy_events")) as copy:
            copy.set_types(_COPY_TYPES)
            for row in rows:
                copy.write_row(row)
        last = rows[-1][0]
        with conn.pipeline():
            conn.execute(
                statement("append/update_streams"),
                {"stream_ids": list(versions), "stream_versions": list(versions.values())},
            )
            conn.execute(statement("append/update_counter"), {"last_event_id": last})
            conn.execute(
                statement("append/notify"),
                {"channel": self._channel, "payload": f"{rows[0][0]},{last},{self._origin}"},
            )
            self._committing = True
            conn.execute("COMMIT")
        return outcomes


def _stored(
    req: AppendRequest, first_id: int, version: int, created_at: datetime
) -> list[StoredRow]:
    """The rows of a committed request whose stream was at `version` before it."""
    return [
        StoredRow(
            first_id + i,
            req.stream_uuid,
            version + i + 1,
            ev.event_type,
            ev.correlation_id,
            ev.causation_id,
            ev.data,
            ev.metadata,
            created_at,
            NIL_UUID,
            first_id + i,
        )
        for i, ev in enumerate(req.events)
    ]


def _assign(
    requests: list[AppendRequest],
    streams: dict[str, tuple[int, int]],
    last_event_id: int,
    now: datetime,
) -> tuple[list[Outcome], list[tuple[Any, ...]], dict[int, int]]:
    """Check each request's expected version against the locked state; number its events."""
    outcomes: list[Outcome] = []
    rows: list[tuple[Any, ...]] = []
    versions: dict[int, int] = {}
    next_id = last_event_id + 1
    current = {uuid: version for uuid, (_, version) in streams.items()}
    for req in requests:
        version = current.get(req.stream_uuid, 0)
        if req.expected_version != version or req.stream_uuid not in streams:
            outcomes.append(
                WrongExpectedVersionError(req.stream_uuid, req.expected_version, version or None)
            )
            continue
        stream_id = streams[req.stream_uuid][0]
        stored: list[StoredRow] = []
        for offset, ev in enumerate(req.events, start=1):
            row = StoredRow(
                next_id,
                req.stream_uuid,
                version + offset,
                ev.event_type,
                ev.correlation_id,
                ev.causation_id,
                ev.data,
                ev.metadata,
                now,
                NIL_UUID,
                next_id,
            )
            stored.append(row)
            rows.append((next_id, stream_id, *row[2:9]))
            next_id += 1
        current[req.stream_uuid] = version + len(req.events)
        versions[stream_id] = current[req.stream_uuid]
        outcomes.append(stored)
    return outcomes, rows, versions
