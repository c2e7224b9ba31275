"""Data keys of data subjects and forgotten subjects: the rows behind crypto-shredding.

Keys are stored wrapped by the master key (the unwrapping is done by the caller, see
lifecycle/encryption.py); forgetting deletes a subject's key and marks the subject forgotten
in one transaction under the counter row lock (the lock every append takes first).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from ..sql import statement
from .pooler import qualify

__all__ = [
    "answer",
    "create",
    "forget",
    "forgotten_count",
    "get",
    "is_forgotten",
    "listen",
    "listeners",
    "rewrap_all",
    "sample_wrapped",
    "take_listener_lock",
]

Conn = psycopg.Connection[Any]


def get(conn: Conn, subject: str) -> tuple[bytes | None, bool, int]:
    """The subject's wrapped data key (None: none), whether it is forgotten, and the forget
    generation, from one snapshot."""
    row = conn.execute(statement("keys/get"), {"subject": subject}).fetchone()
    assert row is not None
    wrapped = None if row[0] is None else bytes(row[0])
    return wrapped, bool(row[1]), int(row[2])


def create(conn: Conn, subject: str, wrapped_key: bytes) -> tuple[bytes | None, bool, int]:
    """Store `wrapped_key` for `subject` unless it has one or is forgotten; the key stored
    afterwards (this one or the one a concurrent first use stored), whether forgotten, and
    the forget generation of that last read."""
    with conn.transaction():
        wrapped, forgotten, generation = get(conn, subject)
        if wrapped is None and not forgotten:
            conn.execute(statement("keys/create"), {"subject": subject, "wrapped_key": wrapped_key})
            wrapped, forgotten, generation = get(conn, subject)
    return wrapped, forgotten, generation


def is_forgotten(conn: Conn, subject: str) -> bool:
    row = conn.execute(statement("keys/is_forgotten"), {"subject": subject}).fetchone()
    return bool(row and row[0])


def forget(
    conn: Conn,
    subject: str,
    channel: str,
    origin: str,
    archived: Callable[[Conn, int], int] | None = None,
    token: str = "",
) -> tuple[bool, int]:
    """Forget `subject` in one transaction: whether it is newly forgotten, and then the
    number of its readable events (0 when it already was). `archived(conn, upto)` counts
    those in the archive files (the ranges up to event_id `upto`; not called when nothing is
    archived); it runs inside the transaction, so a file that cannot be read forgets
    nothing. The notice carries `token`, which the listeners answer once they evicted their
    cached keys (lifecycle/eviction.py)."""
    with conn.transaction():
        conn.execute(statement("append/lock_counter"))
        row = conn.execute(statement("keys/forget"), {"subject": subject}).fetchone()
        assert row is not None
        newly, count, upto = bool(row[0]), int(row[1]), int(row[2])
        if newly and upto > 0 and archived is not None:
            count += archived(conn, upto)
        conn.execute(
            statement("keys/notify"), {"channel": channel, "origin": origin, "token": token}
        )
    return newly, count if newly else 0


def forgotten_among(conn: Conn, subjects: list[str]) -> set[str]:
    """Those of `subjects` that are forgotten."""
    rows = conn.execute(statement("keys/forgotten_among"), {"subjects": subjects}).fetchall()
    return {str(r[0]) for r in rows}


def forgotten_count(conn: Conn) -> int:
    """How many subjects are forgotten."""
    row = conn.execute(statement("keys/forgotten_count")).fetchone()
    return int(row[0]) if row else 0


def sample_wrapped(conn: Conn, schema: str, count: int) -> list[bytes]:
    """The wrapped data keys of the first and the last `count` subjects (one statement,
    schema-qualified; empty when no key is stored)."""
    rows = conn.execute(qualify(schema, statement("keys/sample")), {"count": count}).fetchall()
    return [bytes(row[0]) for row in rows]


def rewrap_all(conn: Conn, schema: str, rewrap: Callable[[bytes], bytes | None]) -> int:
    """Re-wrap every stored data key with `rewrap` (old wrapped key -> new wrapped key, None:
    leave it) in one transaction, on a connection whose search_path is not assumed
    (schema-qualified); how many were re-wrapped. An exception from `rewrap` changes
    nothing."""
    count = 0
    with conn.transaction():
        conn.execute(qualify(schema, statement("keys/lock")))
        rows = conn.execute(qualify(schema, statement("keys/all_wrapped"))).fetchall()
        update = qualify(schema, statement("keys/rewrap"))
        for subject, wrapped in rows:
            fresh = rewrap(bytes(wrapped))
            if fresh is not None:
                conn.execute(update, {"subject": subject, "wrapped_key": fresh})
                count += 1
    return count


# The listeners of stores with a key cache (lifecycle/eviction.py) -----------------------------
def take_listener_lock(conn: Conn, key: str) -> None:
    """The shared advisory lock that names this session a listener with a key cache (held
    until the session ends)."""
    conn.execute(statement("keys/listen_lock"), {"key": key})


def listeners(conn: Conn, key: str) -> set[int]:
    """The backend pids of the sessions holding the listeners' lock `key` now."""
    return {int(r[0]) for r in conn.execute(statement("keys/listeners"), {"key": key})}


def listen(conn: Conn, channel: str) -> None:
    """LISTEN on `channel` (an autocommit session connection)."""
    conn.execute(f'LISTEN "{channel}"')


def answer(conn: Conn, channel: str, payload: str, listening: str) -> None:
    """NOTIFY `channel` with `payload`, now (autocommit), in one round trip with a LISTEN on
    `listening` (a no-op: the session keeps a LISTEN as its last query in pg_stat_activity,
    where operators and tests recognise a store's listener)."""
    conn.execute(
        sql.SQL("LISTEN {}; SELECT pg_notify({}, {})").format(
            sql.Identifier(listening), sql.Literal(channel), sql.Literal(payload)
        )
    )
