"""How event and snapshot data becomes bytes and back.

Nothing is ever imported or executed by name: a stored type name only selects a class the
application registered itself.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from ..errors import SerializationError
from ..events import type_name
from .jsonserializer import JsonSerializer, Upcaster

__all__ = [
    "EventDecodeError",
    "JsonSerializer",
    "Serializer",
    "Upcaster",
    "inferred_type_name",
]


@runtime_checkable
class Serializer(Protocol):
    """Turns terms into bytes for storage and back; `type` is the stored event/source type.

    A serializer may also have `type_name_of(value) -> str | None`: the name to store an
    EventData without `event_type` under (None: the default `module.qualname`).
    """

    def serialize(self, term: Any) -> bytes:
        """The bytes to store for `term` (an event's data or metadata, a snapshot's data)."""
        ...

    def deserialize(self, data: bytes, type: str | None = None) -> Any:
        """The value stored as `data`; `type` is the event_type or source_type (None for
        metadata)."""
        ...


class EventDecodeError(SerializationError):
    """A stored event that cannot be rebuilt; says which (`event_id`, `event_type`)."""

    def __init__(self, event_id: int, event_type: str, stream_uuid: str, cause: Exception) -> None:
        reason = str(cause)
        if not isinstance(cause, SerializationError):
            reason = f"{type(cause).__name__}: {reason}"
        super().__init__(
            f"cannot read event {event_id} (type {event_type!r}, stream {stream_uuid!r}): {reason}"
        )
        self.event_id = event_id
        self.event_type = event_type
        self.stream_uuid = stream_uuid


def inferred_type_name(serializer: Serializer, value: Any) -> str:
    """The event_type of an EventData without one: the serializer's name for the class of
    `value` when it has one, else `module.qualname`."""
    name_of = getattr(serializer, "type_name_of", None)
    name = name_of(value) if name_of is not None else None
    return name if isinstance(name, str) else type_name(value)
