"""eventstore-actors: a CQRS event store for Python on PostgreSQL, built as supervised actors."""

from __future__ import annotations

from . import admin
from .errors import (
    CannotAppendToAllStreamError,
    CannotDeleteAllStreamError,
    CheckpointConflictError,
    ConfigError,
    DuplicateEventError,
    EventNotFoundError,
    EventStoreError,
    HardDeletesDisabledError,
    InvalidStartFromError,
    SerializationError,
    SnapshotNotFoundError,
    StoreUnavailableError,
    StreamDeletedError,
    StreamExistsError,
    StreamNotFoundError,
    SubjectForgottenError,
    SubscriptionAlreadyExistsError,
    SubscriptionNotFoundError,
    WrongExpectedVersionError,
)
from .events import (
    ANY_VERSION,
    FORGOTTEN,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    EventData,
    ExpectedVersion,
    RecordedEvent,
    SnapshotData,
    StreamAppend,
)
from .lifecycle.archive import ArchiveResult
from .lifecycle.encryption import Encryption, KeyStore
from .serialization import JsonSerializer, Serializer
from .store import EventStore
from .streams import Page, StreamInfo
from .subscriptions.info import SubscriptionInfo
from .subscriptions.messages import (
    Events,
    ParkedEvent,
    Subscribed,
    Subscriber,
    Subscription,
    SubscriptionMessage,
    SubscriptionStopped,
    TransientSubscription,
)
from .subscriptions.options import AllStreamsSubscribeOptions, SubscribeOptions

__all__ = [
    "ANY_VERSION",
    "FORGOTTEN",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AllStreamsSubscribeOptions",
    "AppendResult",
    "ArchiveResult",
    "CannotAppendToAllStreamError",
    "CannotDeleteAllStreamError",
    "CheckpointConflictError",
    "ConfigError",
    "DuplicateEventError",
    "Encryption",
    "EventData",
    "EventNotFoundError",
    "EventStore",
    "EventStoreError",
    "Events",
    "ExpectedVersion",
    "HardDeletesDisabledError",
    "InvalidStartFromError",
    "JsonSerializer",
    "KeyStore",
    "Page",
    "ParkedEvent",
    "RecordedEvent",
    "SerializationError",
    "Serializer",
    "SnapshotData",
    "SnapshotNotFoundError",
    "StoreUnavailableError",
    "StreamAppend",
    "StreamDeletedError",
    "StreamExistsError",
    "StreamInfo",
    "StreamNotFoundError",
    "SubjectForgottenError",
    "SubscribeOptions",
    "Subscribed",
    "Subscriber",
    "Subscription",
    "SubscriptionAlreadyExistsError",
    "SubscriptionInfo",
    "SubscriptionMessage",
    "SubscriptionNotFoundError",
    "SubscriptionStopped",
    "TransientSubscription",
    "WrongExpectedVersionError",
    "admin",
]

__version__ = "0.1.0"
