"""Which archived events reads return: of their stream's current life and kept by its
retention (the rule every path over the files applies), with their subject's forgotten flag
read now (the files cannot hold it). Apart from reader.py so that forgetting can count
archived events without the reader."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ...storage import archive as store
from ...storage import keys
from .groups import Archived

__all__ = ["count_live", "flagged", "kept"]

Conn = Any
_SUBJECT = 11


def kept(life: store.StreamLife | None, event_id: int, version: int, created_at: datetime) -> bool:
    """Whether an archived event (its stream's `stream_created` entry, its event_id, version
    and created_at) is live: the rule of `ArchiveReader._live` (`StreamLife.keeps`: of the
    stream's current life by the tombstone of its last hard delete, not by timestamps)."""
    return life is not None and life.keeps(event_id, version, created_at)


def count_live(conn: Conn, events: Sequence[Archived]) -> int:
    """How many of `events` (archived) are live now, by the rule reads apply to archived rows
    (`ArchiveReader._live`): their stream exists, they are of its current life (not
    hard-deleted, not of a life before the stream was deleted and created again), and its
    retention keeps them."""
    if not events:
        return 0
    streams = store.stream_created(conn, sorted({stream for _, stream, _, _ in events}))
    return sum(1 for i, stream, v, created in events if kept(streams.get(stream), i, v, created))


def flagged(conn: Conn, rows: list[Any]) -> list[Any]:
    """Archived rows with their subject's forgotten flag read now (the files cannot hold it):
    a forgotten subject's events are FORGOTTEN whatever a key cache still holds."""
    subjects = sorted({r[_SUBJECT] for r in rows if r[_SUBJECT] is not None})
    if not subjects:
        return rows
    gone = keys.forgotten_among(conn, subjects)
    return [
        r if r[_SUBJECT] is None else (*r[:_SUBJECT], r[_SUBJECT], r[_SUBJECT] in gone)
        for r in rows
    ]
