"""The values users write and read: events to append, recorded events, snapshots."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["EventData", "RecordedEvent", "SnapshotData", "type_name"]


def type_name(value: Any) -> str:
    """The name a value's class is stored and registered under: ``module.qualname``."""
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"


@dataclass(frozen=True)
class EventData:
    """An event to append. `event_type` defaults to the class name of `data`."""

    data: Any
    event_type: str | None = None
    metadata: Mapping[str, Any] | None = None
    correlation_id: str | None = None
    causation_id: str | None = None


@dataclass(frozen=True)
class RecordedEvent:
    """An event as stored: its global position (`event_id`) and its stream position."""

    event_id: int
    stream_uuid: str
    stream_version: int
    event_type: str
    data: Any
    metadata: Mapping[str, Any] | None
    correlation_id: str | None
    causation_id: str | None
    created_at: datetime


@dataclass(frozen=True)
class SnapshotData:
    """The state of one source (an aggregate) at `source_version`; one per `source_uuid`."""

    source_uuid: str
    source_version: int
    source_type: str
    data: Any
    metadata: Mapping[str, Any] | None = None
    created_at: datetime | None = None
