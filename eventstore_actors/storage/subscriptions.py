"""What the subscriptions table says about the store's durable subscriptions, beyond one
checkpoint (`checkpoints`): every row with the head of what it follows and its parked count
(for `status` and `subscription_info`), the store at a glance, and the rows whose names start
with a prefix (a consumer group's partitions).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from ..sql import statement

__all__ = [
    "delete_with_prefix",
    "info_rows",
    "names_with_prefix",
    "summary",
    "write_health",
    "write_stopped",
]

#: (stream_uuid, subscription_name, last_seen, holder, head, parked, lag_seconds, last_ack_at,
#: health, health_reason, first_held, archived_upto, read_at, stall_after, unvouched_for):
#: lag_seconds counts the tables only; first_held, archived_upto and read_at say whether the
#: first unacked position may be archived; the last two are for readers' stall rule (info.sql).
InfoRow = tuple[Any, ...]


def info_rows(
    conn: psycopg.Connection[Any], name: str | None = None, stream_uuid: str = "$all"
) -> list[InfoRow]:
    """Every subscription row (or only `name` on `stream_uuid`) as `InfoRow`s, in the
    database's order."""
    return conn.execute(
        statement("subscriptions/info"), {"name": name, "stream_uuid": stream_uuid}
    ).fetchall()


def summary(conn: psycopg.Connection[Any]) -> tuple[int, int, int]:
    """(schema version, head event_id, number of streams)."""
    row = conn.execute(statement("subscriptions/summary")).fetchone()
    assert row is not None
    return int(row[0] or 0), int(row[1] or 0), int(row[2] or 0)


def _prefixed(stream_uuid: str, prefix: str) -> dict[str, Any]:
    return {"stream_uuid": stream_uuid, "n": len(prefix), "prefix": prefix}


def names_with_prefix(conn: psycopg.Connection[Any], stream_uuid: str, prefix: str) -> list[str]:
    """The names of `stream_uuid`'s subscription rows that start with `prefix`, sorted."""
    rows = conn.execute(
        statement("subscriptions/names_with_prefix"), _prefixed(stream_uuid, prefix)
    ).fetchall()
    return [str(raw) for (raw,) in rows]


def delete_with_prefix(conn: psycopg.Connection[Any], stream_uuid: str, prefix: str) -> None:
    """Delete `stream_uuid`'s subscription rows whose names start with `prefix`, and their
    parked events, in one transaction."""
    params = _prefixed(stream_uuid, prefix)
    with conn.transaction():
        conn.execute(statement("subscriptions/delete_parked_with_prefix"), params)
        conn.execute(statement("subscriptions/delete_with_prefix"), params)


def write_health(
    conn: psycopg.Connection[Any],
    holder: str,
    rows: Sequence[tuple[str, str, str | None, str | None, float]],
) -> set[tuple[str, str]]:
    """Subscription health as its holder sees it: `rows` of (stream_uuid, subscription_name,
    health, reason, vouched: the seconds from now it vouches that nothing stalls), each
    written only while the row names `holder` and no other transaction holds it (one
    statement). The (stream_uuid, subscription_name) of the rows written."""
    written = conn.execute(
        statement("subscriptions/health"),
        {
            "holder": holder,
            "stream_uuids": [r[0] for r in rows],
            "subscription_names": [r[1] for r in rows],
            "healths": [r[2] for r in rows],
            "reasons": [r[3] for r in rows],
            "remaining": [r[4] for r in rows],
        },
    ).fetchall()
    return {(str(stream), str(name)) for stream, name in written}


def write_stopped(
    conn: psycopg.Connection[Any], stream_uuid: str, name: str, reason: str, key: str
) -> bool:
    """Mark the subscription 'stopped' (it gave up on an error) iff nobody holds its lock
    (`key`; taken for this transaction only, waiting up to a second for a holder that is
    letting go). False: a subscriber holds it, nothing was written."""
    try:
        with conn.transaction():
            conn.execute(statement("subscriptions/lock_timeout"))
            conn.execute(statement("subscriptions/lock_xact"), {"key": key})
            conn.execute(
                statement("subscriptions/stopped"),
                {"stream_uuid": stream_uuid, "subscription_name": name, "reason": reason},
            )
    except psycopg.errors.LockNotAvailable:
        return False
    return True
