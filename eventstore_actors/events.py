"""The values users write and read: events to append, recorded events, snapshots."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "ANY_VERSION",
    "FORGOTTEN",
    "NIL_UUID",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AppendResult",
    "EventData",
    "ExpectedVersion",
    "RecordedEvent",
    "SnapshotData",
    "StreamAppend",
    "type_name",
]

#: The all-zero UUID: the default of `RecordedEvent.event_uuid` when built by hand.
NIL_UUID = uuid.UUID(int=0)


class ExpectedVersion(enum.Enum):
    """What an append expects of its stream besides an exact version (an int >= 0)."""

    ANY_VERSION = "any_version"  # whatever the stream's state (but not soft-deleted)
    NO_STREAM = "no_stream"  # the stream must not exist
    STREAM_EXISTS = "stream_exists"  # the stream must exist, at any version

    def __repr__(self) -> str:
        return self.name


class _Forgotten:
    """The data of an event or snapshot whose subject was forgotten (one instance)."""

    _instance: _Forgotten | None = None

    def __new__(cls) -> _Forgotten:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "FORGOTTEN"

    def __reduce__(self) -> str:
        return "FORGOTTEN"


#: What `RecordedEvent.data` (and a snapshot's data) holds once its subject is forgotten.
FORGOTTEN: Any = _Forgotten()

ANY_VERSION = ExpectedVersion.ANY_VERSION
NO_STREAM = ExpectedVersion.NO_STREAM
STREAM_EXISTS = ExpectedVersion.STREAM_EXISTS


def type_name(value: Any) -> str:
    """The name a value's class is stored and registered under: ``module.qualname``."""
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"


@dataclass(frozen=True)
class EventData:
    """An event to append.

    `event_type` None means: the name the store's serializer registered the class of `data`
    under (a `JsonSerializer(types={name: cls})` mapping), else that class's
    ``f"{module}.{qualname}"`` (a dict: ``"builtins.dict"``), as `type_name` gives it.
    """

    data: Any
    event_type: str | None = None
    metadata: Mapping[str, Any] | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    #: Unique in the whole store; None: the store assigns a fresh one. A retried append with
    #: the same UUIDs is recognised and writes nothing (see `append_to_stream`).
    event_uuid: uuid.UUID | None = None
    #: The data subject (a person, a customer) whose personal data the event carries: its
    #: `data` is stored encrypted under that subject's key (needs `encryption=`).
    subject: str | None = None


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
    event_uuid: uuid.UUID = NIL_UUID
    #: Position in the stream it was read from: stream_version for its own stream, the link's
    #: position in a linking stream, event_id for $all. Not compared: an event read from its
    #: stream and the same event read from $all are equal.
    event_number: int = field(default=0, compare=False)
    subject: str | None = None
    forgotten: bool = False


@dataclass(frozen=True)
class StreamAppend:
    """One stream's part of `append_to_streams`."""

    stream_uuid: str
    expected_version: int | ExpectedVersion
    events: Sequence[EventData]


@dataclass(frozen=True)
class AppendResult:
    """Where an append (or a link) put its events."""

    stream_uuid: str
    first_version: int
    last_version: int
    first_event_id: int
    last_event_id: int


@dataclass(frozen=True)
class SnapshotData:
    """The state of one source (an aggregate) at `source_version`; one per `source_uuid`."""

    source_uuid: str
    source_version: int
    source_type: str
    data: Any
    metadata: Mapping[str, Any] | None = None
    created_at: datetime | None = None
    #: The data subject whose personal data the snapshot carries (see `EventData.subject`).
    subject: str | None = None
