"""Moving the oldest events to Parquet files, so that a crash at any step leaves every event
readable exactly once.

The steps, for each file: (1) write the events to a temporary file, fsync it, rename it, fsync
the directory; (2) list the file in the manifest (from this commit on reads take its range from
the file, and skip rows of it still in PostgreSQL); (3) delete the rows in bounded batches,
lowest event_ids first (a reader whose view of the manifest predates step 2 sees a gap at the
start of what it reads, and looks at the manifest again); (4) mark the range deleted. A crash
after (1) leaves an unlisted file (ignored, and removed by the next archive); after (2)
or during (3), the next archive finishes the deletes before it moves anything new. Archived
ranges are always a prefix of the log: each archive starts right after the last one.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import closing
from datetime import timedelta
from typing import Any

import psycopg

from ... import logs
from ...config import Settings, check_url_credentials, redact_url
from ...errors import ConfigError, StoreUnavailableError
from ...storage import archive as store
from ...storage import schema as schema_ops
from ...storage.connection import connect
from ...storage.deadline import guard
from ...storage.errors import translate
from ...storage.migrations import SCHEMA_VERSION
from .files import Target, pyarrow_modules
from .owner import Owner, claim
from .result import ArchiveResult

__all__ = ["FAULT", "archive"]

log = logs.get_logger("eventstore_actors.archive")

#: Events per row group (what a reader holds in memory at once) and per file.
ROW_GROUP = 10_000
FILE_EVENTS = 1_000_000
#: Rows deleted per transaction.
DELETE_BATCH = 5_000
_MAX = 2**63 - 1

#: Tests only: called with the name of each step done ("written", "recorded", "deleting",
#: "deleted"); a test's process kills itself there to prove the steps crash-safe.
FAULT: list[Callable[[str], None]] = []


def _step(name: str) -> None:
    for hook in FAULT:
        hook(name)


def check_arguments(
    before_event_id: Any, older_than: Any, target: Any, default_target: str | None
) -> str:
    """The target to write to, every argument checked (ValueError, ConfigError)."""
    if (before_event_id is None) == (older_than is None):
        raise ValueError("give exactly one of before_event_id and older_than")
    if before_event_id is not None and (
        not isinstance(before_event_id, int)
        or isinstance(before_event_id, bool)
        or not 1 <= before_event_id <= _MAX
    ):
        raise ValueError(
            f"before_event_id must be an int from 1 to {_MAX}, got {before_event_id!r}"
        )
    if older_than is not None and (
        not isinstance(older_than, timedelta) or older_than <= timedelta(0)
    ):
        raise ValueError(f"older_than must be a positive timedelta, got {older_than!r}")
    if target is not None and not isinstance(target, str):
        raise ValueError(f"target must be a str (a directory or URL), got {target!r}")
    chosen = target if target is not None else default_target
    if chosen is None:
        raise ConfigError(
            "no archive target: pass target= or start the store with archive=<directory or URL>"
        )
    check_url_credentials(chosen, "archive target")  # before anything is created or written
    return chosen


def archive(
    settings: Settings,
    *,
    before_event_id: int | None = None,
    older_than: timedelta | None = None,
    target: str | None = None,
) -> ArchiveResult:
    """Move the events before `before_event_id` (exclusive), or the oldest events up to the
    first one not older than `older_than`, to Parquet files under `target` (see the module
    docstring for the steps)."""
    url = check_arguments(before_event_id, older_than, target, settings.archive)
    pyarrow_modules()
    destination = Target(url)
    try:
        return _archive(settings, destination, before_event_id, older_than)
    except psycopg.Error as exc:
        raise translate(exc, what="archive") from None


def _archive(
    settings: Settings,
    destination: Target,
    before_event_id: int | None,
    older_than: timedelta | None,
) -> ArchiveResult:
    conn = connect(settings, session=True)  # the lock is a session lock
    with conn:
        with guard(conn, settings.io_timeout):
            _check_schema(conn, settings.schema)
            store_id, database = store.identity(conn)
            listed = {f.url for f in store.manifest(conn)}
        # The target only once the store is known to be there: a wrong schema or DSN leaves
        # no directory behind (checking creates it). Another store's target is refused before
        # anything is written to it.
        claim(destination, Owner(store_id, database, settings.schema), listed)
        store.lock(conn)
        try:
            finish_deletes(conn, settings)
            with guard(conn, settings.io_timeout):
                files = store.manifest(conn)
                done = max((f.last_event_id for f in files), default=0)
                counter = store.last_event_id(conn)
                if before_event_id is not None:
                    last = min(before_event_id - 1, counter)
                else:
                    assert older_than is not None
                    newer = store.first_newer(conn, done, older_than)
                    last = counter if newer is None else min(newer - 1, counter)
            removed = destination.remove_unlisted(done)
            if removed:
                log.info("removed files of an archive that did not finish", files=removed)
            first = done + 1
            written: list[str] = []
            moved = 0
            low = first
            while low <= last:
                high = min(last, low + FILE_EVENTS - 1)
                name = f"events-{low:020d}-{high:020d}.parquet"
                file_url, count = _write_file(conn, settings, destination, name, low, high, moved)
                if count:
                    _step("written")
                    with guard(conn, settings.io_timeout):
                        store.record(conn, file_url, low, high, count)
                    _step("recorded")
                    _delete(conn, settings, low, high)
                    with guard(conn, settings.io_timeout):
                        store.mark_deleted(conn, low)
                    _step("deleted")
                    written.append(file_url)
                    moved += count
                    log.info("archived", first_event_id=low, last_event_id=high, events=count)
                low = high + 1
        finally:
            store.unlock(conn)
    if moved == 0:
        return ArchiveResult(0, 0, 0, [])
    return ArchiveResult(first, last, moved, written)


def _write_file(
    conn: Any, settings: Settings, destination: Target, name: str, low: int, high: int, moved: int
) -> tuple[str, int]:
    """Step (1) for the events low..high: the file's URL and its number of events. The rows'
    transaction and cursor end with the write, whether it succeeds or fails; a target that
    fails to be written (a full disk, a lost mount) is a StoreUnavailableError, chained to the
    OSError, saying that nothing of this file was written or moved (and what earlier files of
    this archive moved: those stay archived)."""
    rows = store.rows_to_archive(conn, low, high, ROW_GROUP, settings.io_timeout)
    try:
        with closing(rows):
            return destination.write(rows, name)
    except OSError as exc:
        why = exc.strerror or str(exc) or type(exc).__name__
        earlier = f"; the {moved} events of its earlier files were moved" if moved else ""
        message = (
            f"archive target {destination.url} failed while writing {name}: {why}; nothing of "
            f"event_ids {low}..{high} was archived or deleted from PostgreSQL, where they stay "
            f"readable{earlier}"
        )
        raise StoreUnavailableError(redact_url(message, destination.url)) from exc


def _check_schema(conn: Any, schema: str) -> None:
    """ConfigError unless the schema holds a store of this release's version (the command
    line archives without starting a store, which would check the same)."""
    version = schema_ops.installed_version(conn, schema)
    if version is None:
        raise ConfigError(schema_ops.not_initialised(schema))
    if version < SCHEMA_VERSION:
        raise ConfigError(schema_ops.outdated(schema, version))
    if version > SCHEMA_VERSION:
        raise ConfigError(schema_ops.too_new(schema, version))


def _delete(conn: Any, settings: Settings, low: int, high: int) -> None:
    while True:
        with guard(conn, settings.io_timeout):
            deleted = store.delete_batch(conn, low, high, DELETE_BATCH)
        if deleted == 0:
            return
        _step("deleting")


def finish_deletes(conn: Any, settings: Settings) -> None:
    """Delete the rows of ranges listed but not yet emptied (an archive that crashed after
    recording its file)."""
    for f in store.manifest(conn):
        if f.state == "recorded":
            _delete(conn, settings, f.first_event_id, f.last_event_id)
            store.mark_deleted(conn, f.first_event_id)
            log.info(
                "archived rows deleted",
                first_event_id=f.first_event_id,
                last_event_id=f.last_event_id,
            )
