"""What the store tells about streams: their state, and pages of them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic, TypeVar

__all__ = ["SORT_FIELDS", "Page", "StreamInfo"]

T = TypeVar("T")

#: The fields `paginate_streams` can sort by.
SORT_FIELDS = ("stream_uuid", "stream_id", "stream_version", "created_at", "deleted_at", "status")


@dataclass(frozen=True)
class StreamInfo:
    """A stream's state. For "$all", `stream_version` is the highest event_id ever assigned."""

    stream_uuid: str
    stream_version: int
    created_at: datetime | None
    deleted_at: datetime | None
    status: str  # "created" or "deleted"
    #: Retention (see docs/retention.md): the first position still readable (the stream's
    #: version + 1 once every event is hidden), and the limits in force (None: no limit).
    first_version: int = 1
    max_count: int | None = None
    max_age: timedelta | None = None


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a longer list; `total_pages` is 0 when nothing matches."""

    entries: list[T]
    page_number: int
    page_size: int
    total_entries: int
    total_pages: int
