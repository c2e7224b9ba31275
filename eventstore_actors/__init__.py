"""eventstore-actors: a CQRS event store for Python on PostgreSQL, built as supervised actors."""

from __future__ import annotations

from . import admin
from .errors import (
    CannotAppendToAllStreamError,
    ConfigError,
    EventStoreError,
    InvalidStartFromError,
    SerializationError,
    SnapshotNotFoundError,
    StoreUnavailableError,
    StreamNotFoundError,
    SubscriptionAlreadyExistsError,
    WrongExpectedVersionError,
)
from .events import EventData, RecordedEvent, SnapshotData
from .serialization import JsonSerializer, Serializer
from .store import EventStore
from .subscriptions.messages import Events, Subscribed, Subscription, SubscriptionStopped

__all__ = [
    "CannotAppendToAllStreamError",
    "ConfigError",
    "EventData",
    "EventStore",
    "EventStoreError",
    "Events",
    "InvalidStartFromError",
    "JsonSerializer",
    "RecordedEvent",
    "SerializationError",
    "Serializer",
    "SnapshotData",
    "SnapshotNotFoundError",
    "StoreUnavailableError",
    "StreamNotFoundError",
    "Subscribed",
    "Subscription",
    "SubscriptionAlreadyExistsError",
    "SubscriptionStopped",
    "WrongExpectedVersionError",
    "admin",
]

__version__ = "0.1.0"
