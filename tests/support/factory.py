"""Event factories for the storage tests (like the Elixir suite's EventFactory)."""

from __future__ import annotations

import uuid

from eventstore_actors import EventData, RecordedEvent

__all__ = ["event_ids", "make_events", "new_stream", "versions"]


def new_stream() -> str:
    return str(uuid.uuid4())


def make_events(count: int, start: int = 1) -> list[EventData]:
    """Events with data, metadata and correlation/causation ids set, numbered from `start`."""
    return [
        EventData(
            data={"event": f"event {n}", "n": n},
            event_type="tests.Event",
            metadata={"user": "user@example.com"},
            correlation_id=str(uuid.uuid4()),
            causation_id=str(uuid.uuid4()),
        )
        for n in range(start, start + count)
    ]


def event_ids(events: list[RecordedEvent]) -> list[int]:
    return [e.event_id for e in events]


def versions(events: list[RecordedEvent]) -> list[int]:
    return [e.stream_version for e in events]
