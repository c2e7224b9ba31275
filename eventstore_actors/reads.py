"""Reads: one stream or all of them, forward or backward, in one call or paged lazily;
stream info and pages of streams. From the pool, or the standby with replica_dsn."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from typing import Any

from .errors import StreamDeletedError, StreamNotFoundError
from .events import RecordedEvent
from .lifecycle.encryption import keyring_of
from .lifecycle.handout import current
from .runtime import Runtime
from .storage import checkpoints, reader
from .storage import stream_info as stream_pages
from .streams import Page, StreamInfo
from .validation import (
    check_backward_start,
    check_count,
    check_event_types,
    check_name,
    check_optional_text,
    check_position,
    check_sort,
    check_stream_prefix,
)

__all__ = ["Range", "Reads"]


class Reads:
    """The read methods of one store, arguments checked here."""

    def __init__(self, runtime: Runtime) -> None:
        self._settings = runtime.settings
        self._reads = runtime.reads

    def read_stream(
        self, stream_uuid: Any, start: Any, count: Any, *, backward: bool
    ) -> list[RecordedEvent]:
        """`EventStore.read_stream_forward` or `read_stream_backward`."""
        first = _stream_start(stream_uuid, start, count, "count", backward)
        if stream_uuid == checkpoints.ALL_STREAMS:
            return self.read_all(Range(first, count, backward=backward))
        return self._read_stream(stream_uuid, first, count, backward=backward)

    def stream(
        self, stream_uuid: Any, start: Any, size: Any, *, backward: bool
    ) -> Iterator[RecordedEvent]:
        """`EventStore.stream_forward` or `stream_backward`: the checks now, the reads lazily."""
        first = _stream_start(stream_uuid, start, size, "read_batch_size", backward)
        if stream_uuid == checkpoints.ALL_STREAMS:
            return self.stream_all_streams(start, size, None, None, None, backward=backward)
        self._require_stream(stream_uuid)
        return self._stream_pages(stream_uuid, first, size, backward=backward)

    def stream_all_streams(
        self,
        start: Any,
        size: Any,
        event_types: Any,
        stream_prefix: Any,
        stop: Any,
        *,
        backward: bool,
    ) -> Iterator[RecordedEvent]:
        """`EventStore.stream_all_forward` or `stream_all_backward`: the checks now, the reads
        lazily."""
        first = self.all_range(
            start, size, event_types, stream_prefix, stop, backward, "read_batch_size"
        )
        return self.stream_all(first)

    @staticmethod
    def all_range(
        start: Any,
        count: Any,
        event_types: Any,
        stream_prefix: Any,
        stop: Any,
        backward: bool,
        counted: str = "count",
    ) -> Range:
        """The first range of an all-streams read (`read_all`, `stream_all`), every argument
        checked, in the order of the public methods' parameters."""
        first = _first(start, "start_event_id", backward)
        check_count(count, counted)
        end = None if backward else _stop(stop)
        return Range(first, count, backward=backward, end=end).filtered(event_types, stream_prefix)

    # The reads behind the public methods, arguments already checked (paging calls them too).
    def _read_stream(
        self, stream_uuid: str, start: int, count: int, *, backward: bool
    ) -> list[RecordedEvent]:
        """A soft-deleted stream reads as no rows; an empty read then says why, or is [].

        The check is a second statement: a stream created between the two (its first append
        committing) must not read as an existing stream without events, so the read is done
        again once it is known to exist.
        """

        def read() -> list[reader.Row]:
            return self._reads.run(
                lambda c: reader.read_stream(
                    c, stream_uuid, start, count, backward=backward, live_only=True
                )
            )

        rows = read()
        if not rows:
            self._require_stream(stream_uuid)
            rows = read()
        return reader.decode(rows, self._settings.serializer)

    def read_all(self, r: Range) -> list[RecordedEvent]:
        """One all-streams read (`all_range`)."""
        rows = self._reads.run(
            lambda c: reader.read_all(
                c,
                r.start,
                r.count,
                r.end,
                backward=r.backward,
                event_types=r.event_types,
                stream_prefix=r.stream_prefix,
            )
        )
        return reader.decode(rows, self._settings.serializer)

    def _stream_pages(
        self, stream_uuid: str, start: int, size: int, *, backward: bool
    ) -> Iterator[RecordedEvent]:
        """Pages of one stream, each from the last position (event_number) returned."""
        step = -1 if backward else 1
        keyring = keyring_of(self._settings.serializer)
        while start >= 1 or not backward:
            batch = self._read_stream(stream_uuid, start, size, backward=backward)
            if keyring is None:
                yield from batch
            else:  # the caller may take its time over a page: see `current`
                yield from map(functools.partial(current, keyring=keyring), batch)
            if len(batch) < size:
                return
            start = batch[-1].event_number + step

    def stream_all(self, r: Range) -> Iterator[RecordedEvent]:
        """Pages of $all, each from the last event_id returned (gaps are skipped)."""
        step = -1 if r.backward else 1
        keyring = keyring_of(self._settings.serializer)
        while r.start >= 1 or not r.backward:
            batch = self.read_all(r)
            if keyring is None:
                yield from batch
            else:  # the caller may take its time over a page: see `current`
                yield from map(functools.partial(current, keyring=keyring), batch)
            if len(batch) < r.count:
                return
            r = dataclasses.replace(r, start=batch[-1].event_id + step)

    def _require_stream(self, stream_uuid: str) -> None:
        """StreamNotFoundError (no such stream, or hard-deleted) or StreamDeletedError."""
        state = self._reads.run(lambda c: reader.stream_state(c, stream_uuid))
        if state is None or state[1] == 0:
            raise StreamNotFoundError(stream_uuid)
        if state[3] is not None:
            raise StreamDeletedError(stream_uuid)

    def stream_info(self, stream_uuid: Any) -> StreamInfo:
        """`EventStore.stream_info`."""
        check_name(stream_uuid, "stream_uuid")
        if stream_uuid == checkpoints.ALL_STREAMS:
            last = self._reads.run(reader.last_event_id)
            return StreamInfo(stream_uuid, last, None, None, "created")
        state = self._reads.run(lambda c: stream_pages.readable_state(c, stream_uuid))
        if state is None or state[1] == 0:
            raise StreamNotFoundError(stream_uuid)
        return _stream_info(state)

    def paginate_streams(
        self, page_size: Any, page_number: Any, search: Any, sort_by: Any, sort_dir: Any
    ) -> Page[StreamInfo]:
        """`EventStore.paginate_streams`, every argument checked first."""
        check_count(page_size, "page_size")
        check_count(page_number, "page_number")
        check_optional_text(search, "search")
        field, descending = check_sort(sort_by, sort_dir)
        total, rows = self._reads.run(
            lambda c: stream_pages.page(
                c,
                page_size=page_size,
                page_number=page_number,
                search=search,
                sort_by=field,
                descending=descending,
            )
        )
        return Page(
            entries=[_stream_info(row) for row in rows],
            page_number=page_number,
            page_size=page_size,
            total_entries=total,
            total_pages=-(-total // page_size),
        )


@dataclasses.dataclass(frozen=True)
class Range:
    """One all-streams read: from `start` (inclusive) towards `end`, at most `count` events."""

    start: int
    count: int
    backward: bool = False
    end: int | None = None  # None: no bound (forward: `stop`; backward: down to the first)
    event_types: tuple[str, ...] | None = None
    stream_prefix: str | None = None

    def filtered(self, event_types: Any, stream_prefix: Any) -> Range:
        """This range with the filters, checked: bad values raise here, before any read."""
        return dataclasses.replace(
            self,
            event_types=check_event_types(event_types),
            stream_prefix=check_stream_prefix(stream_prefix),
        )


def _first(start: Any, name: str, backward: bool) -> int:
    """A read's first position, checked; backward, -1 means from the last event."""
    if not backward:
        return check_position(start, name)
    first = check_backward_start(start, name)
    return reader.MAX_POSITION if first == -1 else first


def _stream_start(stream_uuid: Any, start: Any, count: Any, counted: str, backward: bool) -> int:
    """A one-stream read's first position, its arguments checked in the public order."""
    check_name(stream_uuid, "stream_uuid")
    first = _first(start, "start_version", backward)
    check_count(count, counted)
    return first


def _stop(stop: Any) -> int | None:
    return None if stop is None else check_position(stop, "stop")


def _stream_info(row: reader.StreamRow) -> StreamInfo:
    stream_uuid, version, created_at, deleted_at, first, max_count, max_age = row
    status = "created" if deleted_at is None else "deleted"
    return StreamInfo(
        stream_uuid, version, created_at, deleted_at, status, first, max_count, max_age
    )
