"""`EventStore.set_stream_retention` and `EventStore.truncate_stream`: checked, then one short
transaction through the pool (storage/retention.py; a truncation counts what it hides in the
archive files inside it); the scavenger is woken to delete what became hidden. See
docs/retention.md for the model."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ..errors import StoreUnavailableError
from ..runtime import Runtime
from ..storage import archive as archive_rows
from ..storage import checkpoints
from ..storage import retention as rows
from ..validation import check_count, check_name
from .scavenger import wake

__all__ = ["MAX_AGE", "Retention", "check_max_age", "check_max_count"]


def check_max_count(value: Any) -> int | None:
    """None or an int >= 1 (TypeError/ValueError otherwise)."""
    if value is None:
        return None
    return check_count(value, "max_count")


#: The longest `max_age`: every read computes `now() - max_age`, and PostgreSQL's timestamps
#: end at 4713 BC (a limit of 10,000 years was stored, then made every read of `$all`
#: fail). Nothing stored is that old; None is "no age limit".
MAX_AGE = timedelta(days=365_250)


def check_max_age(value: Any) -> timedelta | None:
    """None or a positive timedelta of at most `MAX_AGE` (TypeError/ValueError otherwise)."""
    if value is None:
        return None
    if not isinstance(value, timedelta):
        raise TypeError(f"max_age must be a timedelta or None, got {type(value).__qualname__}")
    if value <= timedelta(0):
        raise ValueError(f"max_age must be positive, got {value!r}")
    if value > MAX_AGE:
        raise ValueError(
            f"max_age must be at most 1,000 years ({MAX_AGE!r}), got {value!r}; "
            "None means no age limit"
        )
    return value


def _check_stream(stream_uuid: Any) -> str:
    name = check_name(stream_uuid, "stream_uuid")
    if name == checkpoints.ALL_STREAMS:
        raise ValueError('"$all" has no retention: it holds every stream\'s events')
    return name


class Retention:
    """Retention limits and truncation of one store's streams."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._pool = runtime.pool
        self.log = runtime.log

    def set_stream_retention(self, stream_uuid: Any, max_count: Any, max_age: Any) -> None:
        """`EventStore.set_stream_retention`: every argument checked before the database."""
        stream = _check_stream(stream_uuid)
        count = check_max_count(max_count)
        age = check_max_age(max_age)
        self._runtime.refuse_stopped()
        first = _archived_first("the retention was not changed")
        self._pool.run(
            self._runtime.written(lambda c: rows.set_limits(c, stream, count, age, first))
        )
        self.log.info(
            "stream retention set",
            stream=stream,
            max_count=count,
            max_age_seconds=None if age is None else age.total_seconds(),
        )
        wake(self._runtime.registry)

    def truncate_stream(self, stream_uuid: Any, before_version: Any) -> int:
        """`EventStore.truncate_stream`: the number of events it newly hid. Those in archive
        files are counted inside its transaction, before the commit: a file that cannot be
        read is a StoreUnavailableError and nothing is truncated."""
        stream = _check_stream(stream_uuid)
        before = check_count(before_version, "before_version")
        self._runtime.refuse_stopped()
        archive = archive_rows.overlay()

        def archived(conn: Any, first: int, elsewhere: list[int]) -> int:
            """Its own events moved to archive files, and the archived events of its links,
            readable until now."""
            assert archive is not None
            try:
                found = archive.count_own(conn, stream, first, before)
                if elsewhere:
                    found += len(archive.archived_events(conn, elsewhere))
            except StoreUnavailableError as exc:
                raise StoreUnavailableError(f"{exc}; the stream was not truncated") from None
            return found

        counted = None if archive is None else archived
        first = _archived_first("the stream was not truncated")
        hidden = self._pool.run(
            self._runtime.written(lambda c: rows.truncate(c, stream, before, counted, first))
        )
        self.log.info("stream truncated", stream=stream, before_version=before, hidden=hidden)
        if hidden:
            wake(self._runtime.registry)
        return hidden


def _archived_first(unchanged: str) -> rows.ArchivedFirst | None:
    """The archive's `first_readable` (None without archives), a file that cannot be read
    reported as a StoreUnavailableError that says `unchanged`."""
    hook = archive_rows.overlay()
    if hook is None:
        return None

    def first(conn: Any, stream: str, found: int) -> int:
        try:
            return hook.first_readable(conn, stream, found)
        except StoreUnavailableError as exc:
            raise StoreUnavailableError(f"{exc}; {unchanged}") from None

    return first
