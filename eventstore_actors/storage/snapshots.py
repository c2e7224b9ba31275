"""Snapshot rows: one per source_uuid, replaced on every record."""

from __future__ import annotations

from typing import Any

import psycopg

from ..sql import statement

__all__ = ["delete", "read", "upsert"]

Conn = psycopg.Connection[Any]


def upsert(conn: Conn, row: dict[str, Any]) -> None:
    conn.execute(statement("snapshots/upsert"), row)


def read(conn: Conn, source_uuid: str) -> tuple[Any, ...] | None:
    cur = conn.cursor(binary=True)
    cur.execute(statement("snapshots/read"), {"source_uuid": source_uuid})
    return cur.fetchone()


def delete(conn: Conn, source_uuid: str) -> None:
    conn.execute(statement("snapshots/delete"), {"source_uuid": source_uuid})
