"""Row groups of archive files: opened with every read error named, found by event_id (the
row groups' statistics) or by a stream's key columns (a mask computed before any row is
converted), and converted to rows in the layout of `storage.reader.Row`.

Why apart from the reader: these are the file-level steps every archive read shares (reads,
counts, forgetting, lag); the reader decides which events a read returns.
"""

from __future__ import annotations

import uuid
from bisect import bisect_left, bisect_right
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from ...config import redact_url
from ...errors import StoreUnavailableError
from ...storage.archive import ArchivedFile, StreamLife
from .files import open_parquet

__all__ = [
    "KEYS",
    "Archived",
    "Row",
    "archived",
    "between",
    "event_groups",
    "keys_of",
    "marked",
    "opened",
    "stream_groups",
    "subject_events",
    "to_rows",
]

Row = tuple[Any, ...]
#: (event_id, stream_uuid, stream_version, created_at) of an archived event.
Archived = tuple[int, str, int, datetime]


@contextmanager
def opened(url: str) -> Iterator[Any]:
    """An archive file open for the block: a file that cannot be opened or read (missing,
    unreachable, not Parquet, damaged in a row group) raises StoreUnavailableError naming
    it, never an OSError or an error of pyarrow, whether at the open or later in the block."""
    try:
        pf = open_parquet(url)
    except Exception as exc:
        if _file_error(exc):
            raise _unreadable(url, exc) from None
        raise
    try:
        yield pf
    except Exception as exc:
        if _file_error(exc):
            raise _unreadable(url, exc) from None
        raise
    finally:
        pf.close()


def _file_error(exc: BaseException) -> bool:
    """Whether `exc` says a file could not be read: an OSError or an error of pyarrow."""
    if isinstance(exc, OSError):
        return True
    import pyarrow

    return isinstance(exc, pyarrow.ArrowException)


def _unreadable(url: str, exc: BaseException) -> StoreUnavailableError:
    why = getattr(exc, "strerror", None) or exc
    # A URL recorded with a password (before they were refused) shows without it.
    shown = redact_url(f"archive file {url} cannot be read: {why}", url)
    return StoreUnavailableError(shown)


def event_groups(pf: Any, low: int, high: int) -> list[int]:
    """The row groups of `pf` that may hold event_ids low..high (from their statistics)."""
    meta = pf.metadata
    out = []
    for i in range(meta.num_row_groups):
        stats = meta.row_group(i).column(0).statistics
        if stats is None or not stats.has_min_max or (stats.min <= high and stats.max >= low):
            out.append(i)
    return out


def keys_of(files: Sequence[ArchivedFile], ids: Sequence[int]) -> dict[int, Archived]:
    """event_id -> `Archived` keys of the events among `ids` (sorted) that `files` hold: only
    the key columns of the row groups whose statistics may hold one of them, a row group at a
    time (never a whole file)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    found: dict[int, Archived] = {}
    for f in files:
        mine = ids[bisect_left(ids, f.first_event_id) : bisect_right(ids, f.last_event_id)]
        if not mine:
            continue
        with opened(f.url) as pf:
            for i in event_groups(pf, mine[0], mine[-1]):
                stats = pf.metadata.row_group(i).column(0).statistics
                if stats is not None and stats.has_min_max:
                    at = bisect_left(mine, stats.min)
                    if at == len(mine) or mine[at] > stats.max:
                        continue  # none of them in this group's range
                table = pf.read_row_group(i, columns=list(KEYS))  # event_id first
                ids_column = table["event_id"]
                table = table.filter(pc.is_in(ids_column, pa.array(mine, ids_column.type)))
                found.update(zip(table["event_id"].to_pylist(), archived(table), strict=True))
    return found


def between(table: Any, low: int, high: int) -> Any:
    """The rows of `table` with low <= event_id <= high."""
    import pyarrow.compute as pc

    ids = table["event_id"]
    return table.filter(pc.and_(pc.greater_equal(ids, low), pc.less_equal(ids, high)))


def stream_groups(
    files: Sequence[ArchivedFile],
    stream_uuid: str,
    low: int,
    high: int,
    backward: bool,
    life: StreamLife,
) -> Generator[tuple[Any, int, Any, Any], None, None]:
    """(file, row group, its key columns, mask of its rows) of the row groups holding
    archived events of the stream with versions low..high of its current `life` (an earlier
    stream of the same name, hard-deleted, left its events at the same versions in the
    files: `StreamLife.keeps`), not before its max_age (`life.oldest`; None: none), in the
    order of the read. Only the key columns of a row group are read to find out, one row
    group at a time; the mask leaves out the other rows before anyone counts them. Close it
    (`contextlib.closing`) when leaving early."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for f in reversed(files) if backward else files:
        with opened(f.url) as pf:
            groups = list(range(pf.metadata.num_row_groups))
            for i in reversed(groups) if backward else groups:
                keys = pf.read_row_group(i, columns=list(KEYS))
                created, ids = keys["created_at"], keys["event_id"]
                mask = pc.and_(
                    pc.and_(
                        pc.equal(keys["stream_uuid"], stream_uuid),
                        pc.greater(ids, life.after),
                    ),
                    pc.and_(
                        pc.greater_equal(keys["stream_version"], low),
                        pc.less_equal(keys["stream_version"], high),
                    ),
                )
                if life.legacy > 0:  # from version 6: see StreamLife
                    since = pa.scalar(life.created_at, type=created.type)
                    mask = pc.and_(
                        mask,
                        pc.or_(pc.greater(ids, life.legacy), pc.greater_equal(created, since)),
                    )
                if life.oldest is not None:
                    oldest = pa.scalar(life.oldest, type=created.type)
                    mask = pc.and_(mask, pc.greater_equal(created, oldest))
                if pc.any(mask).as_py():
                    yield pf, i, keys, mask


def marked(mask: Any) -> int:
    """How many rows a mask of `stream_groups` keeps."""
    import pyarrow.compute as pc

    return int(pc.sum(mask).as_py() or 0)


def subject_events(url: str, subject: str) -> list[Archived]:
    """The data subject's events in the archive file at `url`, read a row group at a time
    (the subject column, the others only where the subject occurs). StoreUnavailableError
    when the file cannot be read (missing, unreachable, not Parquet), saying which: never an
    OSError or an error of pyarrow, and never the subject."""
    import pyarrow.compute as pc

    out: list[Archived] = []
    with opened(url) as pf:
        for i in range(pf.metadata.num_row_groups):
            mask = pc.equal(pf.read_row_group(i, columns=["subject"])["subject"], subject)
            if not pc.any(mask).as_py():
                continue
            out.extend(archived(pf.read_row_group(i, columns=list(KEYS)).filter(mask)))
    return out


#: The key columns of an archived event, as `Archived` holds them.
KEYS = ("event_id", "stream_uuid", "stream_version", "created_at")


def archived(table: Any) -> list[Archived]:
    """The `Archived` keys of each row of `table` (which has the `KEYS` columns)."""
    return list(zip(*(table[name].to_pylist() for name in KEYS), strict=True))


def to_rows(table: Any) -> list[Row]:
    """Rows in the layout of `storage.reader.Row` (event_number = event_id) from a table of
    archive columns. Whether a subject is forgotten is not in the file: None (`decode` then
    asks the keyring, which finds no key for a forgotten subject)."""
    c = {name: table.column(name).to_pylist() for name in table.column_names}
    columns = zip(
        c["event_id"],
        c["stream_uuid"],
        c["stream_version"],
        c["event_type"],
        c["correlation_id"],
        c["causation_id"],
        c["data"],
        c["metadata"],
        c["created_at"],
        c["event_uuid"],
        c["subject"],
        strict=True,
    )
    return [
        (*head, uuid.UUID(text), head[0], subject, None if subject is not None else False)
        for *head, text, subject in columns
    ]
