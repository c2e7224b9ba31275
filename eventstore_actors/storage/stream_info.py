"""Stream info and pages of streams, straight from the streams table and its v2 indexes."""

from __future__ import annotations

from functools import cache
from typing import Any

import psycopg

from ..sql import statement
from ..streams import SORT_FIELDS
from .reader import StreamRow, archived_first, first_version_sql, like_escape, stream_row

__all__ = ["page"]

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
