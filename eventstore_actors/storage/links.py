"""Linking existing events into a stream (see link_events_v5() in sql/migrations/v5.sql).

One statement in autocommit mode under the counter row lock, like appends and deletes: a
link cannot race a hard delete of the events it links, and positions in the linking stream
follow commit order whoever writes them (appends or links).

Events archived to Parquet files (lifecycle/archive) are linked like the others, since reads
return them as before the archive; but the database cannot see inside the files. When some
of the events are archived, the statement writes nothing and names them (`ArchivedEvents`);
they are then looked up in the files through the archive overlay, outside any lock, and the
statement runs again with what was found: the event's stream, which it checks again under
the counter row lock. An archived event that is not in its file, or no longer readable,
raises EventNotFoundError as a missing row does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import psycopg

from ..errors import DuplicateEventError, EventNotFoundError
from ..events import AppendResult, ExpectedVersion
from ..sql import statement
from . import archive
from . import expected as exp
from .deletes import run_once

__all__ = ["ArchivedEvents", "Found", "duplicate", "link", "look_up", "outcome", "params"]

_LINKED, _DUPLICATE, _EVENT_NOT_FOUND, _ARCHIVED = 0, 6, 8, 9

#: Archived events found live in the files: event_id -> (stream_uuid, created_at).
Found = Mapping[int, tuple[str, datetime]]


class ArchivedEvents(Exception):
    """Status 9: these events are archived and must be looked up in the files (`look_up`)
    before the link is tried again; nothing was written."""

    def __init__(self, event_ids: Sequence[int]) -> None:
        super().__init__(f"{len(event_ids)} archived events to look up")
        self.event_ids = list(event_ids)


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
    query = statement("link/link_events")
    found: dict[int, tuple[str, datetime]] = {}
    while True:  # each round adds archived events to `found`: at most len(event_ids) + 1
        args = params(stream_uuid, expected, event_ids, channel, origin, found)
        ((status, first, actual, bad, archived),) = run_once(conn, query, args)
        try:
            return outcome(stream_uuid, expected, event_ids, status, first, actual, bad, archived)
        except ArchivedEvents as more:
            found.update(look_up(conn, stream_uuid, more.event_ids))


def params(
    stream_uuid: str,
    expected: int | ExpectedVersion,
    event_ids: Sequence[int],
    channel: str,
    origin: str,
    found: Found | None = None,
) -> dict[str, Any]:
    """The arguments of link/link_events.sql (`found`: the archived events looked up)."""
    found = found or {}
    return {
        "stream_uuid": stream_uuid,
        "expected": exp.encode(expected),
        "event_ids": list(event_ids),
        "archived": list(found),
        "archived_streams": [stream for stream, _ in found.values()],
        "archived_created": [created for _, created in found.values()],
        "channel": channel,
        "origin": origin,
    }


def look_up(conn: psycopg.Connection[Any], stream_uuid: str, event_ids: Sequence[int]) -> Found:
    """The archived `event_ids` (in link order) found live in the files; EventNotFoundError
    for the first that is not (no archive overlay: none is), DuplicateEventError for one of
    the linking stream's own events."""
    hook = archive.overlay()
    found = hook.archived_events(conn, event_ids) if hook is not None else {}
    for event_id in event_ids:
        if event_id not in found:
            raise EventNotFoundError(event_id)
        if found[event_id][0] == stream_uuid:
            raise duplicate(stream_uuid, event_id)
    return found


def outcome(
    stream_uuid: str,
    expected: int | ExpectedVersion,
    event_ids: Sequence[int],
    status: int,
    first: int,
    actual: int,
    bad: int,
    archived: Sequence[int] | None = None,
) -> AppendResult:
    """The result of link_events_v5()'s row, or the contract's error (ArchivedEvents: look
    those up and try again)."""
    if status == _ARCHIVED:
        raise ArchivedEvents(archived or ())
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
