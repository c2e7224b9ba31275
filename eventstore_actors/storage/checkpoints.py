"""Subscription rows: the last acked position of each named subscription."""

from __future__ import annotations

from typing import Any

import psycopg

from ..sql import statement

__all__ = ["ALL_STREAMS", "advance", "delete", "load_or_create"]

#: The stream_uuid under which all-streams subscriptions are stored.
ALL_STREAMS = "$all"

Conn = psycopg.Connection[Any]


def load_or_create(conn: Conn, stream_uuid: str, name: str, start_from: int) -> int:
    """The stored checkpoint; a new subscription starts at `start_from`."""
    key = {"stream_uuid": stream_uuid, "subscription_name": name, "last_seen": start_from}
    with conn.pipeline():
        conn.execute(statement("subscriptions/create"), key)
        cur = conn.execute(statement("subscriptions/read"), key)
    row = cur.fetchone()
    return int(row[0]) if row else start_from


def advance(conn: Conn, stream_uuid: str, name: str, position: int) -> None:
    """Move the checkpoint forward to `position` (never backwards)."""
    conn.execute(
        statement("subscriptions/ack"),
        {"stream_uuid": stream_uuid, "subscription_name": name, "last_seen": position},
    )


def delete(conn: Conn, stream_uuid: str, name: str) -> bool:
    cur = conn.execute(
        statement("subscriptions/delete"), {"stream_uuid": stream_uuid, "subscription_name": name}
    )
    return cur.rowcount > 0
