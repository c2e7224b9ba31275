"""Reads that span the archive: the archived part of a range from the Parquet files, the rest
from PostgreSQL, each event exactly once and in the order of a read without archive.

Registered with `storage.archive` (the reads call it), so stream reads, $all reads, streaming,
backward reads and subscription catch-up are transparent. The manifest is cached per
connection: a read that finds nothing archived in its range costs nothing more, unless
PostgreSQL's answer has a gap where the next event should be (a hard-deleted event, a filter,
or events archived since this connection last looked), and only then is the manifest read
again. That suffices because archived ranges are a prefix of the log and their rows are
deleted lowest first, after the manifest lists them: a stale view of the manifest shows as a
gap at the start of what PostgreSQL returns. Files are read one row group at a time.
"""

from __future__ import annotations

import operator
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ...storage import archive as store
from ...storage.archive import ArchivedFile, Filters
from .groups import (
    Row,
    archived,
    between,
    event_groups,
    keys_of,
    marked,
    opened,
    stream_groups,
    to_rows,
)
from .live import count_live, flagged, kept

__all__ = ["ArchiveReader", "View", "count_live"]  # count_live: from .live

Conn = Any
_EVENT_ID, _STREAM, _VERSION, _TYPE, _CREATED, _NUMBER = 0, 1, 2, 3, 8, 10


@dataclass(frozen=True)
class View:
    """A connection's view of the manifest: event_ids up to `upto` are read from `files`."""

    upto: int
    files: tuple[ArchivedFile, ...]


_EMPTY = View(0, ())


class ArchiveReader:
    """The overlay `storage.reader` calls (see `storage.archive.Overlay`)."""

    def __init__(self) -> None:
        self._views: weakref.WeakKeyDictionary[Any, View] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    # The manifest, cached per connection ------------------------------------------------------
    def view(self, conn: Conn, *, refresh: bool = False) -> View:
        if not refresh:
            with self._lock:
                seen = self._views.get(conn)
            if seen is not None:
                return seen
        files = tuple(store.manifest(conn))
        fresh = View(max((f.last_event_id for f in files), default=0), files) if files else _EMPTY
        with self._lock:
            self._views[conn] = fresh
        return fresh

    def _moved(self, conn: Conn, old: View) -> bool:
        """Whether events were archived since `old` (the manifest read again)."""
        return self.view(conn, refresh=True).upto != old.upto

    # $all ---------------------------------------------------------------------------------------
    def read_all(
        self,
        conn: Conn,
        read: store.AllRead,
        low: int,
        high: int,
        count: int,
        backward: bool,
        filters: Filters,
    ) -> list[Any]:
        view = self.view(conn)
        while True:
            rows = self._all(conn, view, read, low, high, count, backward, filters)
            if rows is not None:
                return rows
            view = self.view(conn)

    def _all(
        self,
        conn: Conn,
        view: View,
        read: store.AllRead,
        low: int,
        high: int,
        count: int,
        backward: bool,
        filters: Filters,
    ) -> list[Any] | None:
        upto = view.upto
        if not backward:
            archived: list[Any] = []
            if upto > 0 and low <= upto:
                archived = self._range(conn, view, low, min(high, upto), count, False, filters)
                if len(archived) >= count or high <= upto:
                    return archived[:count]
            start = max(low, upto + 1)
            rows = read(start, high, count - len(archived))
            if (not rows or rows[0][_EVENT_ID] != start) and self._moved(conn, view):
                return None
            return archived + rows
        rows = []
        if high > upto:
            bottom = max(low, upto + 1)
            rows = read(bottom, high, count)
            if len(rows) >= count:
                return rows
            if (not rows or rows[-1][_EVENT_ID] != bottom) and self._moved(conn, view):
                return None
        if upto == 0 or low > upto:
            return rows
        return rows + self._range(
            conn, view, low, min(high, upto), count - len(rows), True, filters
        )

    def read_all_covered(
        self,
        conn: Conn,
        read: store.CoveredRead,
        low: int,
        high: int,
        count: int,
        filters: Filters,
    ) -> tuple[list[Any], int]:
        view = self.view(conn)
        while True:
            upto = view.upto
            archived: list[Any] = []
            if upto > 0 and low <= upto:
                archived = self._range(conn, view, low, min(high, upto), count, False, filters)
                if len(archived) >= count:
                    return archived[:count], archived[count - 1][_EVENT_ID]
                if high <= upto:
                    return archived, high
            start = max(low, upto + 1)
            rows, covered = read(start, count - len(archived))
            gap = rows[0][_EVENT_ID] != start if rows else covered >= start
            if gap and self._moved(conn, view):
                view = self.view(conn)
                continue
            return archived + rows, covered

    # One stream ---------------------------------------------------------------------------------
    def read_stream(
        self,
        conn: Conn,
        read: store.StreamRead,
        stream_uuid: str,
        start: int,
        count: int,
        backward: bool,
        live_only: bool,
        event_types: tuple[str, ...] | None,
    ) -> list[Any]:
        out: list[Any] = []
        view: View | None = None
        while True:
            need = count - len(out)
            rows = read(start, need)
            if view is None and not _suspicious(rows, stream_uuid, start, need, backward):
                return rows
            if view is None:
                view = self.view(conn, refresh=True)  # the slow path: the manifest as it is
            if view.upto == 0:  # a real gap (a hard-deleted linked event), nothing archived
                return out + [r for r in rows if r[_EVENT_ID] is not None]
            out += self._fill(
                conn, view, rows, stream_uuid, start, need, backward, live_only, event_types
            )
            if len(out) >= count or len(rows) < need:
                return out[:count]
            # PostgreSQL's page was full but positions in it were dropped (links to events of
            # hard-deleted streams, types filtered out): read on after it.
            start = rows[-1][_NUMBER] + (-1 if backward else 1)
            if start < 1:
                return out

    def count_own(self, conn: Conn, stream_uuid: str, low: int, high: int) -> int:
        """How many of the stream's own events with low <= version < high are in the files
        only (no longer in the events table), of this stream's life (not of an earlier
        stream of the same name): what a truncation hides there."""
        view = self.view(conn, refresh=True)
        state = store.stream_state(conn, stream_uuid)
        if view.upto == 0 or state is None:
            return 0
        below = state.archived_below
        top = min(high - 1, below - 1)  # own events below `below` are archived
        if top < low:
            return 0
        life = store.stream_created(conn, [stream_uuid]).get(stream_uuid)
        if life is None:
            return 0
        return sum(  # its max_age hid those older already
            marked(mask)
            for _, _, _, mask in stream_groups(view.files, stream_uuid, low, top, False, life)
        )

    def first_readable(self, conn: Conn, stream_uuid: str, first: int) -> int:
        """The stream's first readable position counting its own archived events: `first`
        (retention/first_version.sql, whose max_age part looks for the first own event or link
        not older than max_age in the tables only, so never at an own event in the files), or
        the version of the first of its own archived events a read returns, when that is
        lower: of this stream's life, from its lowest readable version on, not older than its
        max_age (`_kept`). Links stay in PostgreSQL when their events are archived: the
        expression sees them. Reads the files only when the stream has a max_age and own
        events archived between its lowest readable version and `first`."""
        life = store.stream_created(conn, [stream_uuid]).get(stream_uuid)
        if life is None:
            return first
        lowest = life.lowest
        if life.oldest is None or lowest >= first:
            return first  # no age limit: the expression is exact
        view = self.view(conn, refresh=True)  # before the events: see the module's docstring
        state = store.stream_state(conn, stream_uuid)
        if view.upto == 0 or state is None:
            return first
        below = state.archived_below
        top = min(first, below) - 1  # own events below `below` are archived
        if top < lowest or (below - 1) - store.link_positions(conn, state.stream_id, below) <= 0:
            return first
        import pyarrow.compute as pc

        groups = stream_groups(view.files, stream_uuid, lowest, top, False, life)
        with closing(groups):  # the first group found holds the lowest version: files and
            for pf, group, _, mask in groups:  # row groups are in event_id order
                kept = pf.read_row_group(group, columns=["stream_version"])["stream_version"]
                return min(first, int(pc.min(kept.filter(mask)).as_py()))
        return first

    def first_unacked(self, conn: Conn, stream_uuid: str, after: int) -> datetime | None:
        """The created_at of the first archived event a subscription with checkpoint `after`
        has not acked, among those a read returns (`_live`: its stream exists, it is of the
        stream's current life, its retention keeps it), or None when the files hold none (the
        tables then hold the first). For `$all` the lowest such event_id above `after`: the
        row groups from the one holding `after + 1` on (their statistics), only the key
        columns, usually one group. For a stream its own archived event of the lowest version
        above `after`, of this stream's life and within its retention (as `first_readable`):
        the files are read only when the stream has own events archived above `after`. Links
        stay in PostgreSQL (info.sql sees them). StoreUnavailableError when a file cannot be
        read."""
        view = self.view(conn, refresh=True)  # before the events: see the module's docstring
        if view.upto <= after:
            return None
        if stream_uuid == "$all":
            return self._first_live_after(conn, view, after)
        life = store.stream_created(conn, [stream_uuid]).get(stream_uuid)
        state = store.stream_state(conn, stream_uuid)
        if life is None or state is None:
            return None
        below = state.archived_below
        low, top = max(after + 1, life.lowest), below - 1  # own events below `below` are archived
        if top < low or top - store.link_positions(conn, state.stream_id, below) <= 0:
            return None
        import pyarrow.compute as pc

        groups = stream_groups(view.files, stream_uuid, low, top, False, life)
        with closing(groups):  # the first group found holds the lowest version (event_id
            for _, _, keys, mask in groups:  # order), computed from the keys already read
                live = keys.filter(mask)
                versions = live["stream_version"]
                at = pc.index(versions, pc.min(versions)).as_py()
                return live["created_at"][at].as_py()  # type: ignore[no-any-return]
        return None

    def _first_live_after(self, conn: Conn, view: View, after: int) -> datetime | None:
        """The created_at of the archived event with the lowest event_id above `after` that a
        read returns, or None."""
        import pyarrow.compute as pc

        step = 256  # streams looked up a slice at a time: normally the first row is live
        for f in view.files:
            if f.last_event_id <= after:
                continue
            with opened(f.url) as pf:
                for i in event_groups(pf, after + 1, f.last_event_id):
                    keys = pf.read_row_group(
                        i, columns=["event_id", "stream_uuid", "stream_version", "created_at"]
                    )
                    rows = archived(keys.filter(pc.greater(keys["event_id"], after)))
                    for at in range(0, len(rows), step):
                        part = rows[at : at + step]
                        streams = store.stream_created(conn, sorted({r[1] for r in part}))
                        for event_id, stream, version, created in part:
                            if kept(streams.get(stream), event_id, version, created):
                                return created
        return None

    def archived_events(
        self, conn: Conn, event_ids: Sequence[int]
    ) -> dict[int, tuple[str, datetime]]:
        """event_id -> (stream_uuid, created_at) of the events among `event_ids` that are in
        the files and live (what a read would return: their stream exists, they are of its
        current life, and its retention keeps them); what link_to_stream accepts of those no
        longer in events."""
        rows = self._archived(conn, event_ids)
        live = self._live(conn, list(rows.values()))
        return {i: (r[_STREAM], r[_CREATED]) for i, r in rows.items() if i in live}

    def archived_streams(self, conn: Conn, event_ids: Sequence[int]) -> dict[int, str]:
        """event_id -> stream_uuid of the events among `event_ids` that the files hold, live
        or not: what a hard delete of a stream removes the links and parked entries of."""
        return {i: r[_STREAM] for i, r in self._archived(conn, event_ids).items()}

    def hidden_archived(self, conn: Conn, event_ids: Sequence[int]) -> list[int]:
        """The event_ids among `event_ids` that the files hold and reads no longer return
        (`_live`: their stream's retention hides them, or it was hard-deleted), in order:
        what the scavenger deletes the links and parked entries of. Only the key columns of
        the row groups holding one of them are read."""
        view = self.view(conn, refresh=True)
        wanted = sorted({i for i in event_ids if i <= view.upto})
        if not wanted:
            return []
        found = keys_of(view.files, wanted)
        streams = store.stream_created(conn, sorted({k[1] for k in found.values()}))
        return sorted(
            i
            for i, (_, s, version, created) in found.items()
            if not kept(streams.get(s), i, version, created)
        )

    def _archived(self, conn: Conn, event_ids: Sequence[int]) -> dict[int, Row]:
        """The files' rows of the events among `event_ids` (the manifest read again)."""
        view = self.view(conn, refresh=True)
        wanted = [i for i in event_ids if i <= view.upto]
        return self._by_ids(view, wanted) if wanted else {}

    def _fill(
        self,
        conn: Conn,
        view: View,
        rows: list[Any],
        stream_uuid: str,
        start: int,
        count: int,
        backward: bool,
        live_only: bool,
        event_types: tuple[str, ...] | None,
    ) -> list[Any]:
        """`rows` (PostgreSQL's page of `count` positions from `start`) with the positions
        they lack taken from the archive, up to where the page reaches (its last position
        when it is full: what lies after is for the next page)."""
        present = [r for r in rows if r[_EVENT_ID] is not None]
        state = store.stream_state(conn, stream_uuid)
        if state is None or (live_only and state.deleted):
            return present
        if backward:
            low, high = 1, min(start, state.version)
            if len(rows) >= count:
                low = rows[-1][_NUMBER]
        else:
            low, high = max(start, 1), state.version
            if len(rows) >= count:
                high = rows[-1][_NUMBER]
        if low > high:
            return present
        found: dict[int, Any] = {}
        # Own events older than the lowest still in PostgreSQL are archived, at the positions
        # below it that are not links.
        below = state.archived_below
        own_archived = (below - 1) - store.link_positions(conn, state.stream_id, below)
        if own_archived > 0 and low <= below - 1:
            # What `_live` keeps of them, decided row group by row group before the count: the
            # files hold an earlier life's events at the same versions (a stream hard-deleted
            # and created again), and events its retention hides; neither takes a place.
            life = store.stream_created(conn, [stream_uuid]).get(stream_uuid)
            if life is not None:
                first, last = max(low, life.lowest), min(high, below - 1)
                if first <= last:
                    own = self._stream_rows(
                        view, stream_uuid, first, last, count, backward, event_types, life
                    )
                    for row in flagged(conn, own):
                        found[row[_NUMBER]] = row
        for number, row in self._links(
            conn, view, state.stream_id, low, high, count, backward, event_types
        ):
            found[number] = row
        for row in present:
            found[row[_NUMBER]] = row
        return [found[n] for n in sorted(found, reverse=backward)[:count]]

    def _links(
        self,
        conn: Conn,
        view: View,
        stream_id: int,
        low: int,
        high: int,
        count: int,
        backward: bool,
        event_types: tuple[str, ...] | None,
    ) -> list[tuple[int, Row]]:
        """Up to `count` (position, row) of the stream's live links to archived events with
        positions low..high (of `event_types`), nearest to the start of the read first."""
        out: list[tuple[int, Row]] = []
        while len(out) < count and low <= high:
            links = store.links_to_archived(conn, stream_id, view.upto, low, high, count, backward)
            if not links:
                break
            by_id = self._by_ids(view, [event_id for _, event_id in links])
            live = self._live(conn, list(by_id.values()))
            for number, event_id in links:
                row = by_id.get(event_id)
                if row is None or event_id not in live:
                    continue
                if event_types is None or row[_TYPE] in event_types:
                    out.append((number, (*row[:_NUMBER], number, *row[_NUMBER + 1 :])))
            if len(links) < count:
                break
            if backward:
                high = links[-1][0] - 1
            else:
                low = links[-1][0] + 1
        rows = flagged(conn, [row for _, row in out[:count]])
        return [(number, row) for (number, _), row in zip(out[:count], rows, strict=True)]

    # The files ----------------------------------------------------------------------------------
    def _range(
        self,
        conn: Conn,
        view: View,
        low: int,
        high: int,
        count: int,
        backward: bool,
        filters: Filters,
    ) -> list[Any]:
        """Up to `count` archived events with low <= event_id <= high (as rows), of live
        streams, matching `filters`, in event_id order (descending when `backward`)."""
        keep = _matcher(filters)
        out: list[Any] = []
        pending: list[Any] = []
        for row in self._scan(view, low, high, backward):
            if keep(row):
                pending.append(row)
            if len(pending) >= count - len(out):
                live = self._live(conn, pending)
                out.extend(r for r in pending if r[_EVENT_ID] in live)
                pending = []
                if len(out) >= count:
                    return flagged(conn, out[:count])
        if pending:
            live = self._live(conn, pending)
            out.extend(r for r in pending if r[_EVENT_ID] in live)
        return flagged(conn, out[:count])

    def _scan(self, view: View, low: int, high: int, backward: bool) -> Iterator[Row]:
        files = [f for f in view.files if f.first_event_id <= high and f.last_event_id >= low]
        for f in reversed(files) if backward else files:
            with opened(f.url) as pf:
                groups = event_groups(pf, low, high)
                for i in reversed(groups) if backward else groups:
                    table = between(pf.read_row_group(i), low, high)
                    step = 1000  # converted to Python a slice at a time: a read may stop early
                    starts = range(0, table.num_rows, step)
                    for at in reversed(starts) if backward else starts:
                        rows = to_rows(table.slice(at, step))
                        yield from reversed(rows) if backward else rows

    def _stream_rows(
        self,
        view: View,
        stream_uuid: str,
        low: int,
        high: int,
        count: int,
        backward: bool,
        event_types: tuple[str, ...] | None,
        life: store.StreamLife,
    ) -> list[Row]:
        """Up to `count` archived events of the stream itself with versions low..high (of
        `event_types`), of its current `life` and not older than its max_age (see
        `groups.stream_groups`), nearest to the start of the read first."""
        out: list[Row] = []
        groups = stream_groups(view.files, stream_uuid, low, high, backward, life)
        with closing(groups):  # an early return closes the file it is in
            for pf, group, _, mask in groups:
                rows = [
                    (*r[:_NUMBER], r[_VERSION], *r[_NUMBER + 1 :])
                    for r in to_rows(pf.read_row_group(group).filter(mask))
                    if event_types is None or r[_TYPE] in event_types
                ]
                out.extend(reversed(rows) if backward else rows)
                if len(out) >= count:
                    return out[:count]
        return out

    def _by_ids(self, view: View, ids: list[int]) -> dict[int, Row]:
        wanted = set(ids)
        found: dict[int, Row] = {}
        for f in view.files:
            mine = sorted(i for i in wanted if f.first_event_id <= i <= f.last_event_id)
            if not mine:
                continue
            with opened(f.url) as pf:
                for g in event_groups(pf, mine[0], mine[-1]):
                    for row in to_rows(pf.read_row_group(g)):
                        if row[0] in wanted:
                            found[row[0]] = row
        return found

    def _live(self, conn: Conn, rows: list[Any]) -> set[int]:
        """The event_ids among `rows` whose stream still exists and that are of its current
        life (a hard delete removes archived events from reads as it removes rows, also once
        the stream is created again), and whose stream's retention still keeps them (as it
        hides rows: below its lowest readable version, or older than its max_age)."""
        if not rows:
            return set()
        streams = store.stream_created(conn, sorted({r[_STREAM] for r in rows}))
        return {
            r[_EVENT_ID]
            for r in rows
            if kept(streams.get(r[_STREAM]), r[_EVENT_ID], r[_VERSION], r[_CREATED])
        }


def _suspicious(rows: list[Any], stream_uuid: str, start: int, count: int, backward: bool) -> bool:
    """Whether a stream read from PostgreSQL may lack archived positions: a link to an archived
    event (NULL columns), no rows, a gap, or no own event of the stream to prove that its own
    events after it are all still in PostgreSQL. Run on every stream read of a store with
    archives: the per-row checks run in C (map, list equality), not in a Python loop."""
    if not rows:
        return True
    if None in map(_event_id_of, rows):
        return True
    numbers = list(map(_number_of, rows))
    first, step = numbers[0], -1 if backward else 1
    if numbers != list(range(first, first + step * len(numbers), step)):
        return True
    if not backward and first != max(start, 1):
        return True
    own = any(r[_STREAM] == stream_uuid and r[_VERSION] == r[_NUMBER] for r in rows)
    if backward:
        return not own or (len(rows) < count and numbers[-1] != 1)
    return not own and len(rows) < count


_event_id_of = operator.itemgetter(_EVENT_ID)
_number_of = operator.itemgetter(_NUMBER)


def _matcher(filters: Filters) -> Callable[[Row], bool]:
    from ...storage.reader import partition_of

    types, prefix, partition = filters.event_types, filters.stream_prefix, filters.partition

    def keep(row: Row) -> bool:
        if types is not None and row[_TYPE] not in types:
            return False
        if prefix is not None and not row[_STREAM].startswith(prefix):
            return False
        return partition is None or partition_of(row[_STREAM], partition[1]) == partition[0]

    return keep
