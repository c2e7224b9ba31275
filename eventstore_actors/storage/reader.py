"""Reading streams and the all-streams log, and turning rows into RecordedEvents."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from functools import cache, lru_cache
from typing import Any

import psycopg
from psycopg import sql as pgsql

from ..errors import EventStoreError
from ..events import FORGOTTEN, RecordedEvent
from ..lifecycle.encryption import Flag, keyring_of, open_stored
from ..lifecycle.sealed import SEALED
from ..serialization import EventDecodeError, Serializer
from ..serialization.jsonserializer import fast_json
from ..sql import statement
from . import archive

__all__ = [
    "MAX_POSITION",
    "Row",
    "StreamRow",
    "all_query",
    "decode",
    "last_event_id",
    "like_escape",
    "partition_of",
    "read_all",
    "read_all_covered",
    "read_stream",
    "read_stream_covered",
    "stream_query",
    "stream_state",
    "stream_version",
]

#: A stored event before deserialization, as plain tuple (reads) or StoredRow (appends):
#: event_id, stream_uuid, stream_version, event_type, correlation_id, causation_id, data,
#: metadata, created_at, event_uuid, event_number (the position in what was read: the
#: stream's for stream reads, event_id for all-streams reads), subject (the data subject:
#: data is then encrypted) and what the row's snapshot says of that subject (a Flag: the
#: read statements give the forget generation, others whether it is forgotten; None for
#: a row without a subject). Reads skip building a NamedTuple per row: it is the hot
#: path. `decode` also takes rows of the first 11 columns.
Row = tuple[
    int,
    str,
    int,
    str,
    str | None,
    str | None,
    bytes,
    bytes | None,
    datetime,
    uuid.UUID,
    int,
    str | None,
    bool | int | None,
]

#: A streams row: stream_uuid, stream_version, created_at, deleted_at (None: not deleted),
#: and its retention: the first readable position, max_count, max_age (None: no limit).
StreamRow = tuple[str, int, datetime, datetime | None, int, int | None, timedelta | None]

#: Larger than any event_id or stream_version.
MAX_POSITION = 2**63 - 1

Conn = psycopg.Connection[Any]


def read_stream(
    conn: Conn,
    stream_uuid: str,
    start_version: int,
    count: int,
    *,
    backward: bool = False,
    live_only: bool = False,
) -> list[Row]:
    """Up to `count` events of one stream from `start_version` on (inclusive), its own events
    and the events it links to merged by position (event_number); empty: none there.

    Backward reads go down from `start_version` (MAX_POSITION: from the last event). With
    `live_only` a soft-deleted stream reads as no rows (the caller asks `stream_state` why).
    """

    def read(start: int, limit: int) -> list[Any]:
        cur = conn.cursor(binary=True)
        cur.execute(
            stream_query(backward),
            {"stream_uuid": stream_uuid, "start": start, "count": limit, "live_only": live_only},
        )
        return cur.fetchall()

    hook = archive.overlay()
    if hook is None:
        return _present(read(start_version, count))
    return hook.read_stream(
        conn, read, stream_uuid, start_version, count, backward, live_only, None
    )


def _present(rows: list[Any]) -> list[Row]:
    """The rows without the archived links (NULL columns) of a stream read: what PostgreSQL
    alone holds, when no archive overlay is registered."""
    return [r for r in rows if r[0] is not None]


def read_all(
    conn: Conn,
    start_event_id: int,
    count: int,
    end_event_id: int | None = None,
    *,
    backward: bool = False,
    event_types: Sequence[str] | None = None,
    stream_prefix: str | None = None,
) -> list[Row]:
    """Up to `count` events of every stream with start_event_id <= event_id <= end_event_id,
    in event_id order; gaps (hard-deleted events) are skipped.

    Backward: event_ids from `start_event_id` down to `end_event_id` (default 0), descending
    (MAX_POSITION as the start: from the last event). `event_types` and `stream_prefix`
    filter in the database; `count` counts the events returned.
    """
    if backward:
        low, high = (0 if end_event_id is None else end_event_id), start_event_id
    else:
        low, high = start_event_id, (MAX_POSITION if end_event_id is None else end_event_id)
    params: dict[str, Any] = {"low": low, "high": high, "count": count}
    if event_types is not None:
        params["event_types"] = list(event_types)
    filtered = (event_types is not None, stream_prefix is not None)

    def read(lo: int, hi: int, limit: int) -> list[Any]:
        open_ended = (lo <= 0) if backward else (hi >= MAX_POSITION)
        query = all_query(backward, *filtered, open_ended=open_ended)
        return _fetch(conn, query, {**params, "low": lo, "high": hi, "count": limit}, stream_prefix)

    hook = archive.overlay()
    if hook is None:
        return read(low, high, count)
    filters = archive.Filters(
        None if event_types is None else tuple(event_types), stream_prefix, None
    )
    return hook.read_all(conn, read, low, high, count, backward, filters)


def read_all_covered(
    conn: Conn,
    start_event_id: int,
    count: int,
    end_event_id: int | None = None,
    *,
    event_types: Sequence[str] | None = None,
    stream_prefix: str | None = None,
    partition: tuple[int, int] | None = None,
) -> tuple[list[Row], int]:
    """`read_all` forward, plus how far it covered: every event_id from `start_event_id` to
    `covered` is among the rows or was hard-deleted, so a reader may move on to covered + 1.

    Gaps are safe to step over only up to there. Event_ids are handed out under the counter
    row lock, held to commit, so in one snapshot every event_id up to the counter is either
    visible or deleted: a read that came back short covered up to the counter (or
    `end_event_id`); a full one only up to its last row, as the next event may lie right
    after it. An event_id above the counter may belong to a commit not visible yet, and is
    never assumed deleted. The counter is read by the same statement (one snapshot).

    `event_types` and `stream_prefix` filter in the database (before the limit): positions of
    other events are covered like deleted ones, so a filtered subscription steps over them
    without moving their rows. So does `partition` (index, count): only the streams whose
    `partition_of` is that index (a consumer group's partition).
    """
    high = MAX_POSITION if end_event_id is None else end_event_id
    params: dict[str, Any] = {"low": start_event_id, "high": high, "count": count}
    if event_types is not None:
        params["event_types"] = list(event_types)
    if partition is not None:
        params["partition"], params["partitions"] = partition
    shape = (event_types is not None, stream_prefix is not None, partition is not None)
    open_ended = high >= MAX_POSITION

    def read(low: int, limit: int) -> tuple[list[Any], int]:
        args = {**params, "low": low, "count": limit}
        query = _all_query_with("read/all_counted", *shape, open_ended)
        found = _fetch(conn, query, args, stream_prefix)
        if not found:  # nothing to carry the counter: the statement that returns it alone
            query = _all_query_with("read/all_covered", *shape, open_ended)
            found = _fetch(conn, query, args, stream_prefix)
        counter = int(found[0][0]) if found else 0
        rows: list[Row] = [r[1:] for r in found if r[1] is not None]  # type: ignore[misc]
        if len(rows) >= limit:
            return rows, rows[-1][0]
        return rows, max(low - 1, min(high, counter))

    hook = archive.overlay()
    if hook is None:
        return read(start_event_id, count)
    filters = archive.Filters(
        None if event_types is None else tuple(event_types), stream_prefix, partition
    )
    return hook.read_all_covered(conn, read, start_event_id, high, count, filters)


def _fetch(conn: Conn, query: str, params: dict[str, Any], stream_prefix: str | None) -> list[Any]:
    """The rows of an all-streams read; with a stream_uuid prefix, its pattern written into
    the statement, which is then not prepared (`_with_prefix`)."""
    cur = conn.cursor(binary=True)
    if stream_prefix is None:
        cur.execute(query, params)
    else:
        cur.execute(_with_prefix(query, conn, stream_prefix), params, prepare=False)
    return cur.fetchall()


def _with_prefix(query: str, conn: Conn, stream_prefix: str) -> str:
    """`query` with the stream_uuid prefix's LIKE pattern written in as a literal.

    A bound parameter would be planned without its value: the read pool plans generically
    (storage/pool.py), which here meant a plan for a prefix of a few streams, read stream
    by stream and sorted, whatever the prefix; for a prefix of most streams it read every
    event of them from `low` on for every page (90 ms per page of 900 where 1.4 would do,
    at 200,000 events, growing with the store). With the pattern in the text, PostgreSQL
    plans it from stream_uuid's statistics: stream by stream for a few streams, in event
    order for many. Such reads are not prepared (one statement text per prefix)."""
    pattern = pgsql.Literal(like_escape(stream_prefix) + "%").as_string(conn)
    # Doubled: the statement still has placeholders, so a literal % must read %%.
    return query.replace("%(stream_pattern)s", pattern.replace("%", "%%"))


def read_stream_covered(
    conn: Conn,
    stream_uuid: str,
    start_version: int,
    count: int,
    *,
    event_types: Sequence[str] | None = None,
) -> tuple[list[Row], int, bool]:
    """`read_stream` forward (own events and links, by event_number), plus how far it
    covered (as in `read_all_covered`: a stream's version moves in the transaction that
    writes its events or links, so every position up to it is visible or was hard-deleted,
    a linked event of another stream) and whether the stream is soft-deleted. A missing
    stream reads as no rows, covered up to nothing new. `event_types` filters in the
    database (positions of other types are covered, as in `read_all_covered`)."""
    params: dict[str, Any] = {"stream_uuid": stream_uuid, "start": start_version, "count": count}
    if event_types is not None:
        params["event_types"] = list(event_types)
    cur = conn.cursor(binary=True)
    cur.execute(_stream_covered_query(event_types is not None), {**params, "live_only": False})
    found = cur.fetchall()
    version = int(found[0][0] or 0) if found else 0
    deleted = bool(found[0][1]) if found else False
    # Rows of the stream's positions (event_number set), archived links with NULL columns.
    rows: list[Row] = [r[2:] for r in found if r[12] is not None]  # type: ignore[misc]
    hook = archive.overlay()
    if hook is None:
        rows = _present(rows)
    elif not _every_position(rows, start_version, count, version):
        first: list[list[Any] | None] = [list(rows)]

        def read(start: int, limit: int) -> list[Any]:
            if first[0] is not None and (start, limit) == (start_version, count):
                done, first[0] = first[0], None
                return done
            return _plain(conn, stream_uuid, start, limit, event_types)

        types = None if event_types is None else tuple(event_types)
        rows = hook.read_stream(conn, read, stream_uuid, start_version, count, False, False, types)
    if len(rows) >= count:
        return rows, rows[-1][10], deleted
    return rows, max(start_version - 1, version, rows[-1][10] if rows else 0), deleted


def _every_position(rows: list[Any], start: int, count: int, version: int) -> bool:
    """Whether a forward stream read holds every position it asked for, up to the stream's
    version (nothing can be missing, archived or not): the common case of catch-up."""
    if not rows:
        return start > version
    first = max(start, 1)
    for i, row in enumerate(rows):
        if row[0] is None or row[10] != first + i:
            return False
    return len(rows) >= count or rows[-1][10] >= version


def _plain(
    conn: Conn, stream_uuid: str, start: int, count: int, event_types: Sequence[str] | None
) -> list[Any]:
    """A stream read forward of PostgreSQL only (archived links as NULL rows)."""
    params: dict[str, Any] = {
        "stream_uuid": stream_uuid,
        "start": start,
        "count": count,
        "live_only": False,
    }
    if event_types is not None:
        params["event_types"] = list(event_types)
    cur = conn.cursor(binary=True)
    cur.execute(stream_query(False, event_types is not None), params)
    return cur.fetchall()


@cache
def _all_query_with(
    name: str,
    by_type: bool = False,
    by_prefix: bool = False,
    by_partition: bool = False,
    open_ended: bool = False,
) -> str:
    """The statement `name` (read/all_covered or read/all_counted) around an all-streams
    read forward."""
    events = all_query(False, by_type, by_prefix, by_partition, open_ended).rstrip().rstrip(";")
    return _uncommented(name).replace("{events}", events)


@cache
def _stream_covered_query(by_type: bool = False) -> str:
    events = stream_query(False, by_type).rstrip().rstrip(";")
    return _uncommented("read/stream_covered").replace("{events}", events)


@cache
def _uncommented(name: str) -> str:
    """A read statement without its comment lines (the files document them): psycopg caches
    the parsing of a query only up to 4,096 bytes, and the stream read with its comments is
    longer, so every read would parse it again (about 45 µs)."""
    text = statement(name)
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))


@cache
def stream_query(backward: bool, by_type: bool = False) -> str:
    """The text of a stream read in one direction (also for EXPLAIN in tests); `by_type`
    keeps only the events whose type is in %(event_types)s (own and linked)."""
    cmp, direction = ("<=", "DESC") if backward else (">=", "ASC")
    filters = link_filters = ""
    if by_type:
        filters = "\n       AND e.event_type = ANY(%(event_types)s)"
        link_filters = (
            "\n             AND (EXISTS (SELECT 1 FROM events AS t WHERE t.event_id = k.event_id"
            "\n                          AND t.event_type = ANY(%(event_types)s))"
            "\n                  OR NOT EXISTS (SELECT 1 FROM events AS t"
            "\n                                 WHERE t.event_id = k.event_id))"
        )
    return (
        _uncommented("read/stream_events")
        .replace("{cmp}", cmp)
        .replace("{dir}", direction)
        .replace("{filters}", filters)
        .replace("{link_filters}", link_filters)
    )


@cache
def all_query(
    backward: bool,
    by_type: bool,
    by_prefix: bool,
    by_partition: bool = False,
    open_ended: bool = False,
) -> str:
    """The text of an all-streams read: one statement per combination of filters, so the
    unfiltered read stays the plain primary-key range scan. `open_ended`: the range has only
    the bound the direction starts from (forward: `low`, to the last event; backward: `high`,
    down to the first), which the planner estimates as a large share of the table, so a
    generic plan caches the stream rows (sql/read/all_events.sql)."""
    if not open_ended:
        bounds = "e.event_id >= %(low)s AND e.event_id <= %(high)s"
    else:
        bounds = "e.event_id <= %(high)s" if backward else "e.event_id >= %(low)s"
    filters = ""
    if by_type:
        filters += "\n  AND e.event_type = ANY(%(event_types)s)"
    if by_prefix:
        filters += "\n  AND s.stream_uuid LIKE %(stream_pattern)s ESCAPE '\\'"
    streams = "JOIN streams AS s ON s.stream_id = e.stream_id"
    if by_partition:
        streams = _PARTITIONED_STREAMS
        filters += "\n  AND s.part = %(partition)s"
    return (
        _uncommented("read/all_events")
        .replace("{range}", bounds)
        .replace("{streams}", streams)
        .replace("{filters}", filters)
        .replace("{dir}", "DESC" if backward else "ASC")
    )


#: A stream's partition in a consumer group of %(partitions)s partitions, computed in the
#: database: the first 32 bits of the MD5 of the UTF-8 stream_uuid, as an unsigned number,
#: modulo the count. MD5 and these casts are stable across PostgreSQL versions (hashtext is
#: not promised to be), and `partition_of` computes the same in Python.
PARTITION_SQL = (
    "mod(('x' || substr(md5(convert_to(s.stream_uuid, 'UTF8')), 1, 8))::bit(32)::bigint, "
    "%(partitions)s)"
)


@lru_cache(maxsize=65536)
def partition_of(stream_uuid: str, partitions: int) -> int:
    """The partition of `stream_uuid` among `partitions`, as `PARTITION_SQL` computes it."""
    digest = hashlib.md5(stream_uuid.encode("utf-8"), usedforsecurity=False).digest()
    return int.from_bytes(digest[:4], "big") % partitions


#: The join to the stream row of a read of one consumer group's partition: the stream_uuid
#: and its partition, looked up per event (a LATERAL subquery, so the events are read in
#: order) and computed once per stream and statement (Memoize); sql/read/all_events.sql.
_PARTITIONED_STREAMS = (
    "CROSS JOIN LATERAL (SELECT s.stream_uuid, "
    + PARTITION_SQL
    + " AS part FROM streams AS s WHERE s.stream_id = e.stream_id OFFSET 0) AS s"
)


def like_escape(text: str) -> str:
    """`text` matched literally by LIKE/ILIKE ... ESCAPE '\\'."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def stream_state(conn: Conn, stream_uuid: str) -> StreamRow | None:
    """The stream's row (see StreamRow), or None: no such stream."""
    row = conn.execute(_stream_state_query(), {"stream_uuid": stream_uuid}).fetchone()
    return None if row is None else stream_row(row)


def stream_row(row: Sequence[Any]) -> StreamRow:
    """A StreamRow from the columns of read/stream_state.sql (or a page's)."""
    count = None if row[5] is None else int(row[5])
    return (str(row[0]), int(row[1]), row[2], row[3], int(row[4]), count, row[6])


@cache
def _stream_state_query() -> str:
    return statement("read/stream_state").replace("{first_version}", first_version_sql())


@cache
def first_version_sql() -> str:
    """The SQL expression of a streams row `s`'s first readable position (schema v4)."""
    text = statement("retention/first_version")
    return "\n".join(line for line in text.splitlines() if not line.startswith("--"))


def stream_version(conn: Conn, stream_uuid: str) -> int | None:
    """The stream's current version, or None when it has no events."""
    row = conn.execute(statement("read/stream_version"), {"stream_uuid": stream_uuid}).fetchone()
    return int(row[0]) if row and row[0] else None


def last_event_id(conn: Conn) -> int:
    """The highest committed event_id (0 for an empty store)."""
    row = conn.execute(statement("read/last_event_id")).fetchone()
    return int(row[0]) if row else 0


def decode(rows: Iterable[Row], serializer: Serializer) -> list[RecordedEvent]:
    """RecordedEvents from stored rows, data and metadata deserialized.

    The hot path of every read and delivery: events are built without the frozen dataclass's
    __init__ (one object.__setattr__ per field), by giving each instance its dict whole. With
    the stock JsonSerializer its deserialize is inlined (`fast_json`): each document is
    scanned from its first character; one that does not end where its text ends (whitespace
    around it) or does not scan goes through `loads` (JSONDecoder.decode: the same value, or
    the same error). An event the serializer cannot rebuild raises SerializationError
    (EventDecodeError) naming it: never skipped, never half-decoded.

    An event with a data subject has encrypted data: decrypted with the store's keyring (its
    serializer is a SealedSerializer; a cached key inline, else `open_stored`), then decoded like
    any other; or FORGOTTEN (`forgotten=True`) when the row says the subject is forgotten or
    the key cache (fetched at the row's forget generation, or after the row was read) does.
    A cached key opens a row only when fetched at the row's generation or at one known to
    include it (Keyring says why that is safe).
    Ciphertext is never returned: a store without encryption, or whose key cannot decrypt
    it, raises EventDecodeError (inside `marking_sealed()`: the event with data=SEALED).
    """
    keyring = keyring_of(serializer)
    deserialize = serializer.deserialize
    fast = fast_json(serializer if keyring is None else serializer.inner)  # type: ignore[attr-defined]
    scan, readers, loads = (None, _NO_READERS, deserialize) if fast is None else fast
    generation, keys, older = (-1, {}, set()) if keyring is None else keyring.state
    new = object.__new__
    set_dict = object.__setattr__
    events = []
    flag: Flag | None
    for row in rows:
        (
            event_id,
            stream_uuid,
            version,
            event_type,
            correlation,
            causation,
            data,
            meta,
            at,
            event_uuid,
            number,
            subject,
            flag,  # rows of 11 columns: None (a subject's key would be fetched anew)
        ) = row if len(row) == 13 else (*row[:11], row[11] if len(row) > 11 else None, None)
        unread: Any = None  # FORGOTTEN, or SEALED (see marking_sealed): data not decoded
        try:  # free in 3.11 unless it raises
            if subject is not None:
                if (
                    flag is not True
                    and (flag is False or flag == generation or flag in older)
                    and (key := keys.get(subject))  # a key (not cached: None; forgotten: False)
                ):  # the hot path
                    if data[0] != 1:
                        raise EventStoreError("the stored data is not in the encrypted format")
                    data = key.decrypt(data[1:13], data[13:], key.aad)
                else:
                    plain = open_stored(keyring, subject, data, flag)
                    if plain is None:
                        unread = FORGOTTEN
                    elif plain is SEALED:
                        unread = SEALED
                    else:
                        data = plain
                    if keyring is not None:
                        generation, keys, older = keyring.state
            if unread is not None:
                value: Any = unread
            elif scan is None:  # a serializer of the application's
                value = deserialize(data, event_type)
            else:
                try:
                    text = str(data, "utf-8")
                    value, end = scan(text, 0)
                    if end != len(text):
                        value = loads(data)
                except Exception:  # StopIteration, JSONDecodeError, UnicodeDecodeError...
                    value = loads(data)
                read = readers.get(event_type)
                if read is not None:
                    value = read(value)
            if meta is None:
                metadata = None
            elif scan is None:
                metadata = deserialize(meta, None)
            else:
                try:
                    text = str(meta, "utf-8")
                    metadata, end = scan(text, 0)
                    if end != len(text):
                        metadata = loads(meta)
                except Exception:
                    metadata = loads(meta)
        except Exception as exc:  # a custom serializer may raise anything
            raise EventDecodeError(event_id, event_type, stream_uuid, exc) from exc
        event = new(RecordedEvent)
        set_dict(
            event,
            "__dict__",
            {
                "event_id": event_id,
                "stream_uuid": stream_uuid,
                "stream_version": version,
                "event_type": event_type,
                "data": value,
                "metadata": metadata,
                "correlation_id": correlation,
                "causation_id": causation,
                "created_at": at,
                "event_uuid": event_uuid,
                "event_number": number,
                "subject": subject,
                "forgotten": unread is FORGOTTEN,
            },
        )
        events.append(event)
    return events


#: No type is rebuilt by the inlined JSON decoding when the serializer is not the stock one.
_NO_READERS: Mapping[str | None, Callable[[Any], Any]] = {}
