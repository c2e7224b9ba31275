"""Stream info and pages of streams, straight from the streams table and its v2 indexes."""

from __future__ import annotations

from functools import cache
from typing import Any

import psycopg

from ..sql import statement
from ..streams import SORT_FIELDS
from . import archive
from .reader import StreamRow, first_version_sql, like_escape, stream_row, stream_state

__all__ = ["archived_first", "page", "readable_state"]

Conn = psycopg.Connection[Any]

_MAX_BIGINT = 2**63 - 1

#: The ORDER BY of each sort field: the sort key, then stream_id so that pages are stable.
#: Each matches an index of schema v2 (or the primary key, or the unique stream_uuid index),
#: so the page is read in index order. status sorts "created" before "deleted" as false
#: before true.
_ORDER = {
    "stream_uuid": ("stream_uuid",),
    "stream_id": ("stream_id",),
    "stream_version": ("stream_version", "stream_id"),
    "created_at": ("created_at", "stream_id"),
    "deleted_at": ("deleted_at", "stream_id"),
    "status": ("(deleted_at IS NOT NULL)", "stream_id"),
}
assert tuple(_ORDER) == SORT_FIELDS


@cache
def page_query(sort_by: str, descending: bool, search: bool) -> str:
    """The text of a page query; only fixed texts go into it (also for EXPLAIN in tests)."""
    direction = " DESC" if descending else " ASC"
    keys = _ORDER[sort_by]
    where = "\nWHERE stream_uuid ILIKE %(pattern)s ESCAPE '\\'" if search else ""
    order = ", ".join(k + direction for k in keys)
    # The same order again over the page's rows, qualified: the page is joined to the total.
    page_order = ", ".join(
        ("(page.deleted_at IS NOT NULL)" if k.startswith("(") else f"page.{k}") + direction
        for k in keys
    )
    return (
        statement("read/stream_page")
        .replace("{where}", where)
        .replace("{order}", order)
        .replace("{page_order}", page_order)
    )


def page(
    conn: Conn,
    *,
    page_size: int,
    page_number: int,
    search: str | None,
    sort_by: str,
    descending: bool,
) -> tuple[int, list[StreamRow]]:
    """(number of matching streams, the streams of that page), arguments already checked."""
    # Beyond bigint the page is empty anyway: clamp rather than overflow in the database.
    offset = min((page_number - 1) * page_size, _MAX_BIGINT)
    params: dict[str, Any] = {"limit": page_size, "offset": offset}
    if search is not None:
        params["pattern"] = "%" + like_escape(search) + "%"
    rows = conn.execute(page_query(sort_by, descending, search is not None), params).fetchall()
    total = int(rows[0][0]) if rows else 0  # type: ignore[call-overload]
    entries: list[StreamRow] = [stream_row(r[1:]) for r in rows if r[1] is not None]
    aged = [e[0] for e in entries if e[6] is not None]
    if aged:  # the age limit's part of first_version: a look-up per entry, so not in the page
        query = statement("retention/first_versions").replace(
            "{first_version}", first_version_sql()
        )
        firsts = {str(r[0]): int(r[1]) for r in conn.execute(query, {"streams": aged})}  # type: ignore[call-overload]
        entries = [(*e[:4], firsts.get(e[0], e[4]), *e[5:]) for e in entries]  # type: ignore[misc]
        entries = [archived_first(conn, e) if e[6] is not None else e for e in entries]
    return total, entries


def readable_state(conn: Conn, stream_uuid: str) -> StreamRow | None:
    """`stream_state` with the first readable position of a stream with a max_age counting
    its own archived events (`archived_first`): what stream_info reports."""
    row = stream_state(conn, stream_uuid)
    return None if row is None else archived_first(conn, row)


def archived_first(conn: Conn, row: StreamRow) -> StreamRow:
    """`row` with its first readable position lowered to its first own archived event that
    reads return, when the stream has a max_age (retention/first_version.sql looks for the
    first event not older than it in the events table only: archived events are not
    there). Nothing more to ask without a max_age, or without archives."""
    hook = archive.overlay()
    if hook is None or row[6] is None:
        return row
    first = hook.first_readable(conn, row[0], row[4])
    return row if first == row[4] else (*row[:4], first, *row[5:])
