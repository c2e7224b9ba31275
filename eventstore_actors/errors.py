"""The exception hierarchy of the public contract: every failure a caller sees is one of these."""

from __future__ import annotations

from typing import Any

__all__ = [
    "CannotAppendToAllStreamError",
    "CannotDeleteAllStreamError",
    "CheckpointConflictError",
    "ConfigError",
    "DuplicateEventError",
    "EventNotFoundError",
    "EventStoreError",
    "HardDeletesDisabledError",
    "InvalidStartFromError",
    "SerializationError",
    "SnapshotNotFoundError",
    "StoreUnavailableError",
    "StreamDeletedError",
    "StreamExistsError",
    "StreamNotFoundError",
    "SubjectForgottenError",
    "SubscriptionAlreadyExistsError",
    "SubscriptionNotFoundError",
    "WrongExpectedVersionError",
]


class EventStoreError(Exception):
    """Base class of every error raised by eventstore_actors."""


class ConfigError(EventStoreError):
    """The store cannot start: bad settings, unreachable database or uninitialised schema."""


class WrongExpectedVersionError(EventStoreError):
    """The stream's version is not the one the caller expected; nothing was written."""

    def __init__(self, stream_uuid: str, expected_version: Any, actual_version: int | None) -> None:
        self.stream_uuid = stream_uuid
        self.expected_version = expected_version
        self.actual_version = actual_version
        actual = "does not exist" if actual_version is None else f"is at version {actual_version}"
        super().__init__(
            f"wrong expected version for stream {stream_uuid!r}: expected {expected_version}, "
            f"stream {actual}"
        )


class StreamExistsError(WrongExpectedVersionError):
    """`NO_STREAM` was expected but the stream exists; nothing was written."""


class StreamDeletedError(EventStoreError):
    """The stream was soft-deleted: it can no longer be read, appended to or subscribed to."""

    def __init__(self, stream_uuid: str) -> None:
        self.stream_uuid = stream_uuid
        super().__init__(f"stream {stream_uuid!r} is deleted")


class CannotDeleteAllStreamError(EventStoreError):
    """`$all` is the log of every stream; it cannot be deleted."""

    def __init__(self) -> None:
        super().__init__("cannot delete the all-streams stream '$all'")


class HardDeletesDisabledError(EventStoreError):
    """Hard deletes erase events for good; a store allows them only when started with
    `enable_hard_deletes=True`, and only while no process of an earlier release (whose
    subscriptions cannot read past the gap a hard delete leaves) holds a subscription."""

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(
            reason or "hard deletes are disabled: start the store with enable_hard_deletes=True"
        )


class DuplicateEventError(EventStoreError):
    """An event (by event_uuid) is already stored, and not as a plain retry of this very
    append; or an event is linked into the same stream twice. Nothing was written."""


class EventNotFoundError(EventStoreError):
    """No event has that event_id (never existed, or hard-deleted)."""

    def __init__(self, event_id: int) -> None:
        self.event_id = event_id
        super().__init__(f"event {event_id} not found")


class StreamNotFoundError(EventStoreError):
    """The stream has no events."""

    def __init__(self, stream_uuid: str) -> None:
        self.stream_uuid = stream_uuid
        super().__init__(f"stream {stream_uuid!r} not found")


class CannotAppendToAllStreamError(EventStoreError):
    """`$all` is the read-only log of every stream."""

    def __init__(self) -> None:
        super().__init__("cannot append to the all-streams stream '$all'")


class SubscriptionAlreadyExistsError(EventStoreError):
    """A subscription of that name has a live subscriber (in this or another process)."""


class SubscriptionNotFoundError(EventStoreError):
    """No durable subscription of that name (or partition) exists."""


class CheckpointConflictError(EventStoreError):
    """An ack in a transaction (`ack(..., conn=)`) claims events that were acknowledged
    already: by another holder of the subscription (it took the subscription over while this
    batch was in hand, or replayed the same parked event), or by this subscription in an
    earlier transaction. Nothing was written: roll the transaction back, those events were
    applied there. The subscription goes on after the stored checkpoint.

    `stored` is the stored checkpoint, `position` the position acked (None if unknown)."""

    def __init__(
        self,
        stream_uuid: str,
        name: str,
        stored: int,
        expected: int,
        *,
        position: int | None = None,
        detail: str | None = None,
    ) -> None:
        self.stream_uuid = stream_uuid
        self.subscription_name = name
        self.stored = stored
        self.position = position
        if detail is None:
            acked = "the ack" if position is None else f"the ack of position {position}"
            if stored > expected:
                detail = (
                    f"{acked} is refused: positions {expected + 1}-{stored} were acknowledged "
                    "after this batch began, by another holder of the subscription or through "
                    "an earlier copy of these events (told before a lost lock was retaken) "
                    f"(the checkpoint is at {stored}, this batch began after {expected})"
                )
            else:
                detail = (
                    f"{acked} is refused: position {position} is already acknowledged (the "
                    f"checkpoint is at {stored}), by this subscription in an earlier "
                    "transaction"
                )
        super().__init__(
            f"subscription {name!r} on {stream_uuid!r}: {detail}; nothing was written: "
            "roll back this transaction"
        )


class InvalidStartFromError(EventStoreError):
    """`start_from` is neither "origin", "current" nor a non-negative int."""


class SnapshotNotFoundError(EventStoreError):
    """No snapshot is stored for that source."""

    def __init__(self, source_uuid: str) -> None:
        self.source_uuid = source_uuid
        super().__init__(f"no snapshot for source {source_uuid!r}")


class SerializationError(EventStoreError):
    """A value cannot be serialized (nothing was written) or stored bytes cannot be read."""


class StoreUnavailableError(EventStoreError):
    """The database cannot be reached now.

    `outcome_unknown` is True when a commit was sent but its result never came back: the
    events may or may not be stored. Otherwise the operation did not happen.
    """

    def __init__(self, message: str, *, outcome_unknown: bool = False) -> None:
        self.outcome_unknown = outcome_unknown
        if outcome_unknown:
            message += " (the commit outcome is unknown: the events may or may not be stored)"
        super().__init__(message)


class SubjectForgottenError(EventStoreError):
    """The event or snapshot names a data subject that was forgotten (`forget_subject`): a
    subject is forgotten for ever, nothing was written. The message never names the subject."""
