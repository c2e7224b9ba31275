"""Deleting streams, softly or for good (see delete_stream() in sql/migrations/v2.sql).

One statement in autocommit mode, so one transaction under the counter row lock: deletes
serialise with appends and links of every process, exactly as appends do with each other.
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
    ((status, actual),) = run_once(conn, statement("delete/delete_stream"), params)
    if status == _DELETED:
        return
    if status == _NOT_FOUND:
        raise StreamNotFoundError(stream_uuid)
    if status == _SOFT_DELETED:
        raise StreamDeletedError(stream_uuid)
    if status == _WRONG:
        raise WrongExpectedVersionError(stream_uuid, expected, actual)
    raise AssertionError(f"unexpected delete status {status}")


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
