"""Deleting streams, softly or for good (see delete_stream() in sql/migrations/v2.sql).

One statement in autocommit mode, so one transaction under the counter row lock: deletes
serialise with appends and links of every process, exactly as appends do with each other. A
hard delete in a store with archived events adds, in that transaction, what the function's
joins through the events table cannot find: the links and parked entries naming the stream's
archived events (the files say which those are).
"""

from __future__ import annotations

from typing import Any

import psycopg

from ..errors import (
    HardDeletesDisabledError,
    StreamDeletedError,
    StreamNotFoundError,
    WrongExpectedVersionError,
)
from ..events import ExpectedVersion
from ..sql import statement
from . import archive
from . import expected as exp
from .errors import translate
from .locks import lock_key

__all__ = ["delete_stream", "older_holders", "watch"]

Conn = psycopg.Connection[Any]

_DELETED, _WRONG, _NOT_FOUND, _SOFT_DELETED = 0, 2, 4, 5


def delete_stream(
    conn: Conn,
    stream_uuid: str,
    expected: int | ExpectedVersion,
    hard: bool,
    channel: str,
    origin: str,
    schema: str | None = None,
) -> None:
    """Delete the stream or raise the contract's error (nothing changed then). With `schema`,
    a hard delete is refused while a process of an earlier release holds a subscription of
    that schema's store (see `older_holders`)."""
    if hard and schema is not None:
        older = older_holders(conn, schema)
        if older:
            stream, name = older[0]
            raise HardDeletesDisabledError(
                f"hard deletes are refused while processes of an earlier release hold "
                f"subscriptions ({len(older)}, e.g. {name!r} on {stream!r}): their "
                "subscriptions cannot read past the gap a hard delete leaves; upgrade or stop "
                "them first (soft deletes work meanwhile); nothing was deleted"
            )
    params = {
        "stream_uuid": stream_uuid,
        "expected": exp.encode(expected),
        "hard": hard,
        "channel": channel,
        "origin": origin,
    }
    hook = archive.overlay() if hard else None
    if hook is None:
        ((status, actual),) = run_once(conn, statement("delete/delete_stream"), params)
    else:
        status, actual = _hard_delete_archived(conn, hook, stream_uuid, params)
    if status == _DELETED:
        return
    if status == _NOT_FOUND:
        raise StreamNotFoundError(stream_uuid)
    if status == _SOFT_DELETED:
        raise StreamDeletedError(stream_uuid)
    if status == _WRONG:
        raise WrongExpectedVersionError(stream_uuid, expected, actual)
    raise AssertionError(f"unexpected delete status {status}")


def _hard_delete_archived(
    conn: Conn, hook: archive.Overlay, stream_uuid: str, params: dict[str, Any]
) -> tuple[int, int | None]:
    """A hard delete where events may be archived: the links of other streams to the stream's
    archived events, and parked entries naming them, go in the same transaction. The files
    say which of the archived events that rows name are the stream's: asked before the
    transaction, and again under the counter row lock for references made in between
    (normally none), so none is left behind. A failure (a file unreadable) deletes nothing."""
    try:
        found = _archived_references(conn)
        streams = {} if found is None else hook.archived_streams(conn, found)
    except psycopg.Error as exc:  # nothing was written yet
        raise translate(exc, conn) from None
    if found is None:  # nothing archived: the plain delete
        ((status, actual),) = run_once(conn, statement("delete/delete_stream"), params)
        return status, actual
    try:
        with conn.transaction():
            ((status, actual),) = conn.execute(statement("delete/delete_stream"), params).fetchall()
            if status != _DELETED:
                return status, actual
            found = _archived_references(conn) or []  # under the counter row lock now
            unknown = [i for i in found if i not in streams]
            if unknown:
                streams.update(hook.archived_streams(conn, unknown))
            gone = [i for i in found if streams.get(i) == stream_uuid]
            if gone:
                allow = statement("delete/allow_deletes")
                conn.execute(allow, {"on": "on"})
                conn.execute(statement("delete/archived_unlink"), {"ids": gone})
                conn.execute(allow, {"on": "off"})
                conn.execute(statement("delete/archived_unpark"), {"ids": gone})
        return status, actual
    except psycopg.Error as exc:
        raise translate(exc, conn, committing=True) from None


def _archived_references(conn: Conn) -> list[int] | None:
    """The event_ids in the archived ranges that links or parked entries name and the events
    table does not hold; None when nothing is archived."""
    rows = conn.execute(statement("delete/archived_references")).fetchall()
    if not rows or rows[0][0] is None:
        return None
    return [int(r[1]) for r in rows if r[1] is not None]


def older_holders(conn: Conn, schema: str) -> list[tuple[str, str]]:
    """The subscriptions (stream, name) held now by a session of an earlier release: one that
    holds the subscription's advisory lock without the mark this release's subscriptions take
    beside it (sql/subscriptions/lock.sql). Release 1 cannot read past a gap in $all: a hard
    delete while it runs would stop its subscriptions (a rolling upgrade's window)."""
    rows = conn.execute("SELECT stream_uuid, subscription_name FROM subscriptions").fetchall()
    if not rows:
        return []
    names = [(str(stream), str(name)) for stream, name in rows]
    keys = [lock_key(schema, stream, name) for stream, name in names]
    held = conn.execute(statement("delete/older_holders"), {"keys": keys}).fetchall()
    return [names[int(r[0]) - 1] for r in held]


def run_once(conn: Conn, query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """One autocommit statement that writes, never retried: a connection lost while it ran
    leaves its outcome unknown (StoreUnavailableError saying so), since it may have
    committed; another database error means it did not happen (storage/errors.py)."""
    try:
        return conn.execute(query, params).fetchall()
    except psycopg.Error as exc:
        raise translate(exc, conn, committing=True) from None


def watch(conn: Conn, stream_uuid: str, subscription_name: str) -> tuple[int, bool, bool]:
    """A stream subscription's health check: (stream version, soft-deleted, checkpoint row
    still there)."""
    row = conn.execute(
        statement("delete/watch"),
        {"stream_uuid": stream_uuid, "subscription_name": subscription_name},
    ).fetchone()
    assert row is not None
    return int(row[0]), bool(row[1]), bool(row[2])
