"""Expected versions on the write paths: their encoding for SQL and the contract's outcomes.

Outcomes (a stream exists once it has an event; a soft-deleted stream refuses everything):

    stream is      0          n > 0            NO_STREAM          STREAM_EXISTS   ANY_VERSION
    missing        ok         WrongExpected    ok                 StreamNotFound  ok
    at version v   WrongExp.  ok iff n == v    StreamExistsError  ok              ok
    soft-deleted   StreamDeletedError for every expected version
"""

from __future__ import annotations

from ..errors import (
    DuplicateEventError,
    EventStoreError,
    StreamDeletedError,
    StreamExistsError,
    StreamNotFoundError,
    WrongExpectedVersionError,
)
from ..events import ExpectedVersion

__all__ = [
    "STATUS_OK",
    "STATUS_REPLAYED",
    "STATUS_SKIPPED",
    "Expected",
    "check",
    "different_event",
    "duplicate",
    "encode",
    "failure",
    "status_error",
]

Expected = int | ExpectedVersion

#: The sentinels as the SQL function append_events_v2 takes them (versions are >= 0).
_CODES = {
    ExpectedVersion.ANY_VERSION: -1,
    ExpectedVersion.NO_STREAM: -2,
    ExpectedVersion.STREAM_EXISTS: -3,
}

#: append_events_v2's statuses (see sql/migrations/v2.sql).
STATUS_OK = 0
STATUS_REPLAYED = 1
#: Not written because another stream of the same call failed.
STATUS_SKIPPED = 7
_WRONG, _EXISTS, _NOT_FOUND, _DELETED, _DUPLICATE = 2, 3, 4, 5, 6


def encode(expected: Expected) -> int:
    return _CODES[expected] if isinstance(expected, ExpectedVersion) else expected


def check(
    stream_uuid: str, expected: Expected, version: int, deleted: bool
) -> EventStoreError | None:
    """The error of appending to a stream at `version` (0: missing), or None when it holds."""
    if deleted:
        return StreamDeletedError(stream_uuid)
    if expected is ExpectedVersion.ANY_VERSION:
        return None
    if expected is ExpectedVersion.NO_STREAM:
        return None if version == 0 else StreamExistsError(stream_uuid, expected, version)
    if expected is ExpectedVersion.STREAM_EXISTS:
        return None if version > 0 else StreamNotFoundError(stream_uuid)
    if version == expected:
        return None
    return WrongExpectedVersionError(stream_uuid, expected, version or None)


def failure(stream_uuid: str, expected: Expected, version: int, deleted: bool) -> EventStoreError:
    """The error of an append the database refused, given the stream's state read after it.

    The state may have moved on since the refusal; the error then still names what was
    expected, with the version now found.
    """
    error = check(stream_uuid, expected, version, deleted)
    if error is not None:
        return error
    if expected is ExpectedVersion.NO_STREAM:
        return StreamExistsError(stream_uuid, expected, version or None)
    if expected is ExpectedVersion.STREAM_EXISTS:
        return StreamNotFoundError(stream_uuid)
    if expected is ExpectedVersion.ANY_VERSION:
        return StreamDeletedError(stream_uuid)
    return WrongExpectedVersionError(stream_uuid, expected, version or None)


def status_error(
    status: int, stream_uuid: str, expected: Expected, actual: int | None
) -> EventStoreError:
    """The error for a failing status of append_events_v2."""
    if status == _DELETED:
        return StreamDeletedError(stream_uuid)
    if status == _DUPLICATE:
        return duplicate(stream_uuid)
    if status == _EXISTS:
        return StreamExistsError(stream_uuid, expected, actual)
    if status == _NOT_FOUND:
        return StreamNotFoundError(stream_uuid)
    if status == _WRONG:
        return WrongExpectedVersionError(stream_uuid, expected, actual)
    raise AssertionError(f"unexpected append status {status}")


def different_event(stream_uuid: str, event_uuid: object) -> DuplicateEventError:
    return DuplicateEventError(
        f"append to stream {stream_uuid!r}: event_uuid {event_uuid} was used for a different "
        "event (another event_type, data or metadata is stored under it), so this is not a "
        "retry of the stored append; nothing was written"
    )


def duplicate(stream_uuid: str) -> DuplicateEventError:
    return DuplicateEventError(
        f"append to stream {stream_uuid!r}: some of its event UUIDs are already stored, and "
        "not as this very append to this stream (all of them, consecutively, in the same "
        "order); nothing was written"
    )
