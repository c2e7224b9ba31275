"""Appending events: many callers' appends committed in one transaction (group commit).

Each append still succeeds or fails on its own expected version. The event_counter row lock,
taken first and held to commit, serialises appenders across processes, so global ids are
gap-free and handed out in commit order; the unique (stream_id, stream_version) constraint is
the last word on which of two racing appends wins.
"""

from __future__ import annotations

from typing import Any

import psycopg

from ..errors import EventStoreError, StoreUnavailableError
from ..events import ExpectedVersion
from ..sql import statement
from . import expected as exp
from .append_batches import (
    AppendRequest,
    NewEvent,
    Outcome,
    StoredRow,
    StreamWrite,
    Written,
    assign,
    compare_replays,
    event_columns,
    group_outcomes,
    group_params,
    has_subjects,
    is_replay,
    result_of,
    stored_rows,
)
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

#: The writer connection's prepare_threshold: statements are prepared only when asked to.
_EXPLICIT_ONLY = 2**31 - 1

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


class Appender:
    """Writes batches of append requests on one dedicated autocommit connection.

    Database errors never escape `append`: each request gets its outcome or a contract error.
    `connection_lost` tells the owner afterwards that the connection must be replaced.
    """

    def __init__(self, conn: psycopg.Connection[Any], channel: str, origin: str) -> None:
        if conn.prepare_threshold is not None:  # None: a pooler's connection, nothing prepared
            # Never reached: only what _run_alone asks for is prepared (prepare=True outranks
            # the threshold; None would also ignore prepare=True), nothing behind our back.
            conn.prepare_threshold = _EXPLICIT_ONLY
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
                failed if is_replay(req, out) else out
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
        sent at that commit. Prepared, like the COPY path's statements (on a pooler's
        connection, whose prepare_threshold is None, psycopg prepares nothing). A pipeline
        that fails makes psycopg deallocate every prepared statement of the connection and
        forget them (psycopg 3.1.10 on; tests/runtime/test_writer_leader.py): they are
        prepared again on their next use.
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
        if has_subjects(write.events):
            query = _SEALED[query]
        params = {
            "n": len(write.events),
            "stream_uuid": write.stream_uuid,
            "expected": exp.encode(expected),
            **event_columns(write.events),
            "channel": self._channel,
            "origin": self._origin,
        }
        try:
            ((first_id, created_at, version, _),) = self._run_alone(query, params)
        except psycopg.errors.NotNullViolation:
            self._committing = False  # the statement failed: nothing was committed
            version, deleted = self._stream_state(write.stream_uuid)
            return exp.failure(write.stream_uuid, expected, version, deleted)
        rows = stored_rows(write, first_id, version, created_at)
        return Written([result_of(write.stream_uuid, rows)], rows)

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
            counter = conn.execute(statement("append/lock_counter"), prepare=True)
            if new_uuids:
                created_cur = conn.execute(
                    statement("append/create_streams"),
                    {"stream_uuids": new_uuids, "stream_versions": list(hoped.values())},
                    prepare=True,
                )
            found = conn.execute(
                statement("append/stream_versions"), {"stream_uuids": uuids}, prepare=True
            )
            if given:
                stored_cur = conn.execute(
                    statement("append/stored_events"), {"event_uuids": given}, prepare=True
                )
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
        outcomes, rows, versions = assign(requests, streams, stored, last_event_id, now)
        if not rows:
            conn.execute("ROLLBACK")
            return outcomes
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
        subjects = [row[-1] for row in rows if row[-1] is not None]
        with conn.pipeline():
            if subjects:  # under the counter lock taken above, before anything else here:
                # refused (SQLSTATE EAF01), the pipeline raises it and nothing commits.
                conn.execute(
                    statement("append/check_subjects"), {"subjects": subjects}, prepare=True
                )
            if moved:
                conn.execute(
                    statement("append/update_streams"),
                    {"stream_ids": list(moved), "stream_versions": list(moved.values())},
                    prepare=True,
                )
            if unused:
                conn.execute(
                    statement("append/drop_unused_streams"), {"stream_ids": unused}, prepare=True
                )
            conn.execute(statement("append/update_counter"), {"last_event_id": last}, prepare=True)
            conn.execute(
                statement("append/notify"),
                {"channel": self._channel, "payload": f"{rows[0][0]},{last},{self._origin}"},
                prepare=True,
            )
            self._committing = True
            conn.execute("COMMIT")
        return outcomes
