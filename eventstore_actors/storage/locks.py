"""The advisory locks that keep one holder per subscription name (and per consumer-group
member slot or group), and the setting of the session that holds them.

A key is a text (`lock_key`), hashed by the database; session-level locks live and die with
their connection, so take them on a `Session` (never on a connection a pooler shares).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import psycopg

from ..sql import statement

__all__ = ["held", "lock_for_transaction", "lock_key", "relax_commits", "try_lock", "unlock"]


def lock_key(schema: str, stream_uuid: str, name: str) -> str:
    """The text whose hash is the subscription's advisory lock key."""
    return json.dumps(["eventstore_actors", schema, stream_uuid, name])


def try_lock(conn: psycopg.Connection[Any], key: str) -> bool:
    """Take the session-level lock of `key` if nobody holds it (and the shared lock that marks
    the session as reading past gaps, see sql/subscriptions/lock.sql); whether it was taken."""
    row = conn.execute(statement("subscriptions/lock"), {"key": key}).fetchone()
    return bool(row and row[0])


def unlock(conn: psycopg.Connection[Any], key: str) -> None:
    """Release the session-level lock of `key` (before closing: see unlock.sql)."""
    conn.execute(statement("subscriptions/unlock"), {"key": key})


def held(conn: psycopg.Connection[Any], keys: Sequence[str]) -> list[int]:
    """Which of `keys` some session of this database holds now, from pg_locks: their
    1-based positions."""
    rows = conn.execute(statement("subscriptions/held"), {"keys": list(keys)}).fetchall()
    return [int(r[0]) for r in rows]


def lock_for_transaction(conn: psycopg.Connection[Any], key: str) -> None:
    """Wait for, then take, the lock of `key` until the current transaction ends."""
    conn.execute(statement("subscriptions/lock_xact"), {"key": key})


def relax_commits(conn: psycopg.Connection[Any]) -> None:
    """Commit without waiting for the WAL flush on this session: losing its last acks in a
    server crash only means re-delivery (at least once)."""
    conn.execute(statement("subscriptions/relax_commits"))
