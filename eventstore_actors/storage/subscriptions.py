"""What the subscriptions table says about the store's durable subscriptions, beyond one
checkpoint (`checkpoints`): every row with the head of what it follows and its parked count
(for `status` and `subscription_info`), the store at a glance, and the rows whose names start
with a prefix (a consumer group's partitions).
"""

from __future__ import annotations

from typing import Any

import psycopg

from ..sql import statement

__all__ = ["delete_with_prefix", "info_rows", "names_with_prefix", "summary"]

#: (stream_uuid, subscription_name, last_seen, holder, head, parked)
InfoRow = tuple[Any, ...]


def info_rows(
    conn: psycopg.Connection[Any], name: str | None = None, stream_uuid: str = "$all"
) -> list[InfoRow]:
    """Every subscription row (or only `name` on `stream_uuid`) as (stream_uuid,
    subscription_name, last_seen, holder, head, parked), in the database's order."""
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
