"""What `EventStore.archive` returns."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ArchiveResult"]


@dataclass(frozen=True)
class ArchiveResult:
    """The events one archive moved: event_ids first..last (gaps of hard-deleted events
    included), how many events that was, and the Parquet files written (URLs or absolute
    paths, as listed in the manifest). Nothing to move: events == 0, no files."""

    first_event_id: int
    last_event_id: int
    events: int
    files: list[str] = field(default_factory=list)
