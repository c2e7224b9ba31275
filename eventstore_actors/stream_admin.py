"""Stream administration: deletes (soft and hard) and links, through the pool.

A delete is rare, may take long (a large hard delete) and gains nothing from group commit;
a link with `conn=` runs in the caller's transaction like an append with `conn=`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import Any

from .errors import (
    CannotAppendToAllStreamError,
    CannotDeleteAllStreamError,
    HardDeletesDisabledError,
)
from .events import AppendResult, ExpectedVersion, RecordedEvent
from .notifications.publisher import CatchUp, StreamDeleted, tell_stream_subscriptions
from .runtime import Runtime
from .storage import checkpoints, deletes, links
from .storage.outbox import check_connection
from .validation import check_count, check_expected_version, check_name
from .writes import Conn, Writes

__all__ = ["StreamAdmin"]


class StreamAdmin:
    """`delete_stream` and `link_to_stream` of one store."""

    def __init__(self, runtime: Runtime, writes: Writes) -> None:
        self._settings = runtime.settings
        self._pool = runtime.pool
        self._registry = runtime.registry
        self._origin = runtime.origin
        self._written = runtime.written
        self._writes = writes
        self.log = runtime.log

    def delete_stream(self, stream_uuid: Any, expected_version: Any, hard: Any) -> None:
        """`EventStore.delete_stream`: checked, then one transaction through the pool; the
        subscriptions to the stream are told."""
        check_name(stream_uuid, "stream_uuid")
        if stream_uuid == checkpoints.ALL_STREAMS:
            raise CannotDeleteAllStreamError()
        expected = check_expected_version(expected_version)
        if expected is ExpectedVersion.NO_STREAM:
            raise ValueError(
                "delete_stream takes an int, STREAM_EXISTS or ANY_VERSION: NO_STREAM would "
                "delete nothing"
            )
        if not isinstance(hard, bool):
            raise TypeError(f"hard must be True or False, got {type(hard).__qualname__}")
        if hard and not self._settings.enable_hard_deletes:
            raise HardDeletesDisabledError()
        self._writes.refuse_own_lock_wait()
        channel, origin = self._settings.channel, self._origin
        self._pool.run(
            self._written(
                lambda c: deletes.delete_stream(
                    c, stream_uuid, expected, hard, channel, origin, self._settings.schema
                )
            )
        )
        self.log.info("stream deleted", stream=stream_uuid, hard=hard)
        tell_stream_subscriptions(self._registry, stream_uuid, StreamDeleted(stream_uuid))

    def link_to_stream(
        self, stream_uuid: Any, expected_version: Any, items: Any, conn: Conn | None
    ) -> AppendResult:
        """`EventStore.link_to_stream`: through the pool under the counter row lock, or in
        the caller's transaction with `conn`."""
        check_name(stream_uuid, "stream_uuid")
        if stream_uuid == checkpoints.ALL_STREAMS:
            raise CannotAppendToAllStreamError()
        expected = check_expected_version(expected_version)
        event_ids = _event_ids(items)
        seen: set[int] = set()
        for event_id in event_ids:
            if event_id in seen:
                raise links.duplicate(stream_uuid, event_id)
            seen.add(event_id)
        if conn is not None:
            conn = check_connection(conn)
            self._writes.refuse_own_lock_wait(conn)
            result = self._link_in(conn, stream_uuid, expected, event_ids)
            tell_stream_subscriptions(self._registry, stream_uuid, CatchUp())
            return result
        self._writes.refuse_own_lock_wait()
        channel, origin = self._settings.channel, self._origin
        result = self._pool.run(
            self._written(
                lambda c: links.link(c, stream_uuid, expected, event_ids, channel, origin)
            )
        )
        tell_stream_subscriptions(self._registry, stream_uuid, CatchUp())
        return result

    def _link_in(
        self, conn: Conn, stream_uuid: str, expected: ExpectedVersion | int, event_ids: list[int]
    ) -> AppendResult:
        """The link in the caller's transaction; archived events among `event_ids` are looked
        up in the files through the pool, between two tries (the first rolled back)."""
        found: dict[int, tuple[str, datetime]] = {}
        while True:  # each round adds archived events to `found`: at most len(event_ids) + 1
            try:
                return self._writes.outbox().link(conn, stream_uuid, expected, event_ids, found)
            except links.ArchivedEvents as more:
                look = partial(links.look_up, stream_uuid=stream_uuid, event_ids=more.event_ids)
                found.update(self._pool.run(look))


def _event_ids(items: Any) -> list[int]:
    """The event_ids of a link_to_stream call: a non-empty sequence of RecordedEvents or
    ints >= 1 (TypeError/ValueError otherwise, before anything is written)."""
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence):
        raise TypeError(
            "events_or_event_ids must be a sequence of RecordedEvents or event_ids, got "
            f"{type(items).__qualname__}"
        )
    if not items:
        raise ValueError("events_or_event_ids is empty: nothing to link")
    event_ids: list[int] = []
    for item in items:
        if isinstance(item, RecordedEvent):
            event_ids.append(item.event_id)
        elif isinstance(item, int) and not isinstance(item, bool):
            event_ids.append(check_count(item, "event_id"))
        else:
            raise TypeError(
                "events_or_event_ids must hold RecordedEvents or int event_ids, got "
                f"{type(item).__qualname__}"
            )
    return event_ids
