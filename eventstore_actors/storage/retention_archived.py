"""Retention of archived events: the rows naming them that the scavenger deletes.

An archived event (moved to a Parquet file, its row gone from `events`) that its stream's
retention hides has no row for the scavenger's batches (retention/purge.sql) to delete, and
so none to delete the links and parked entries naming it with. The scavenger sweeps those
references instead, a bounded batch at a time in event_id order: the event_ids that links or
parked entries name in the archived ranges (`archived_references`), the files say which of
them reads no longer return (`Overlay.hidden_archived`), and those rows go (`purge_references`)
as a hard delete removes the rows naming its stream's archived events (storage/deletes.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from ..sql import statement

__all__ = ["archived_references", "purge_references"]

Conn = psycopg.Connection[Any]


def archived_references(conn: Conn, after: int, limit: int) -> list[int]:
    """Up to `limit` distinct event_ids above `after`, in order, that links or parked entries
    name and that are archived (in the manifest's ranges, no longer in the events table)."""
    rows = conn.execute(
        statement("retention/archived_references"), {"after": after, "limit": limit}
    ).fetchall()
    return [int(r[0]) for r in rows]  # type: ignore[call-overload]


def purge_references(conn: Conn, lock: str, ids: Sequence[int]) -> tuple[int, bool]:
    """Delete the links and parked entries naming `ids` (archived events reads no longer
    return) in one short transaction, if the scavenger's lock `lock` is free: (rows deleted,
    whether it was free)."""
    with conn.transaction():
        conn.execute(statement("retention/begin_purge"))
        row = conn.execute(
            statement("retention/purge_references"), {"key": lock, "ids": list(ids)}
        ).fetchone()
    if row is None or not row[0]:
        return 0, False
    return int(row[1]), True
