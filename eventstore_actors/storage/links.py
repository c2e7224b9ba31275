"""Linking existing events into a stream (see link_events() in sql/migrations/v2.sql).

One statement in autocommit mode under the counter row lock, like appends and deletes: a
link cannot race a hard delete of the events it links, and positions in the linking stream
follow commit order whoever writes them (appends or links).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from ..errors import DuplicateEventError, EventNotFoundError
from ..events import AppendResult, ExpectedVersion
from ..sql import statement
from . import expected as exp
from .deletes import run_once

__all__ = ["duplicate", "link", "outcome", "params"]

_LINKED, _DUPLICATE, _EVENT_NOT_FOUND = 0, 6, 8


def link(
    conn: psycopg.Connection[Any],
    stream_uuid: str,
    expected: int | ExpectedVersion,
    event_ids: Sequence[int],
    channel: str,
    origin: str,
) -> AppendResult:
    """Link `event_ids` (distinct, not empty) into the stream, in that order, or raise the
    contract's error (nothing written then)."""
    query, args = (
        statement("link/link_events"),
        params(stream_uuid, expected, event_ids, channel, origin),
    )
    ((status, first, actual, bad),) = run_once(conn, query, args)
    return outcome(stream_uuid, expected, event_ids, status, first, actual, bad)


def params(
    stream_uuid: str,
    expected: int | ExpectedVersion,
    event_ids: Sequence[int],
    channel: str,
    origin: str,
) -> dict[str, Any]:
    """The arguments of link/link_events.sql."""
    return {
        "stream_uuid": stream_uuid,
        "expected": exp.encode(expected),
        "event_ids": list(event_ids),
        "channel": channel,
        "origin": origin,
    }


def outcome(
    stream_uuid: str,
    expected: int | ExpectedVersion,
    event_ids: Sequence[int],
    status: int,
    first: int,
    actual: int,
    bad: int,
) -> AppendResult:
    """The result of link_events()'s row, or the contract's error."""
    if status == _LINKED:
        return AppendResult(stream_uuid, first, actual, event_ids[0], event_ids[-1])
    if status == _EVENT_NOT_FOUND:
        raise EventNotFoundError(bad)
    if status == _DUPLICATE:
        raise duplicate(stream_uuid, bad)
    raise exp.status_error(status, stream_uuid, expected, actual)


def duplicate(stream_uuid: str, event_id: int) -> DuplicateEventError:
    return DuplicateEventError(
        f"event {event_id} is in stream {stream_uuid!r} already (linked before, or one of its "
        "own events): an event is linked into a stream once; nothing was written"
    )
