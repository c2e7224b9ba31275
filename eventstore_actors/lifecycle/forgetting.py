"""Forgetting a data subject (crypto-shredding): `store.forget_subject` and `is_forgotten`.

One transaction, under the counter row lock every append takes first, deletes the subject's
data key from the schema and marks the subject forgotten, then notifies every store
instance; after the commit the key leaves the application's KeyStore, if one is used. The
caller's own key cache drops the key before the call returns, and the call waits until
every other store instance with a key cache answered that it dropped its own, or could no
longer trust it (lifecycle/eviction.py): events those instances decoded earlier and hand
out later (an unacked subscription's next batches, a page being streamed) come FORGOTTEN.

Why no reader can still decrypt once the call returned, whatever the notification's delay:
marking the subject forgotten draws a new forget generation in the same transaction (schema
v5, a trigger on forgotten_subjects), and every read statement returns its snapshot's
generation (sql/read/*.sql, once per statement); a key cache serves only rows of the
generation its keys were fetched at, or of one known to precede it, and fetches keys again
for any other (lifecycle/encryption.py, Keyring, gives the argument).
Statements that are not on the hot path still carry, from the row's snapshot, whether its
subject is forgotten (snapshots/read.sql, parked events, the archive's rows). The publisher
reads the writer's batches that hold a subject back from the database for the same reason
(notifications/publisher.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..config import Settings
from ..errors import EventStoreError, StoreUnavailableError
from ..storage import archive as archive_storage
from ..storage import keys
from ..storage.archive import ArchivedFile
from ..storage.pool import ReadPool
from ..validation import check_name
from . import eviction
from .archive.groups import Archived, subject_events
from .archive.reader import count_live
from .encryption import Keyring, keyring_of
from .eviction import Waiter

__all__ = ["attach_keyring", "forget_subject", "forgotten_subjects", "is_forgotten", "on_notice"]


def attach_keyring(keyring: Keyring, pool: ReadPool) -> None:
    """Give a store's keyring its database access (the store's pool)."""
    keyring.attach(
        fetch=lambda subject: pool.run(lambda c: keys.get(c, subject)),
        create=lambda subject, wrapped: pool.run(lambda c: keys.create(c, subject, wrapped)),
        is_forgotten=lambda subject: pool.run(lambda c: keys.is_forgotten(c, subject)),
    )


def forget_subject(
    pool: ReadPool,
    settings: Settings,
    origin: str,
    subject: Any,
    written: Callable[[Callable[[Any], Any]], Callable[[Any], Any]] = lambda work: work,
) -> int:
    """`EventStore.forget_subject`: when the subject is newly forgotten, the number of its
    events that reads returned until then, in PostgreSQL and in archive files (0 when it
    already was, or has none). Like a read, it does not count events hidden by their
    stream's retention or truncation (rows not yet deleted, archived ones), nor those of a
    hard-deleted stream (archived ones included). `written` records the write's position for
    this store's replica reads (read-your-writes).

    The archive files are read before the transaction (outside the counter row lock that
    holds up every append), and again inside it only for a file listed in between; a file
    that cannot be read is a StoreUnavailableError and nothing is forgotten. Once the
    transaction committed, it waits for every store instance with a key cache to answer
    that it evicted (lifecycle/eviction.py), then deletes the key from the application's
    KeyStore, if any (after the commit: a forgotten subject's key is never asked for, and a
    deletion that failed is done again by the next call)."""
    subject = check_name(subject, "subject")
    keyring = keyring_of(settings.serializer)
    archived = _Archived(subject)
    waiter = Waiter(settings)

    def forget(conn: Any) -> tuple[bool, int]:
        return keys.forget(conn, subject, settings.channel, origin, archived.count, waiter.token)

    def archive_files(conn: Any) -> list[ArchivedFile]:
        """The manifest, unless the subject is forgotten already (for ever: nothing to count)."""
        return [] if keys.is_forgotten(conn, subject) else archive_storage.manifest(conn)

    try:
        try:
            archived.read(pool.run(archive_files))
            newly, count = pool.run(written(forget))
            committed_at = time.monotonic()
        finally:
            if keyring is not None:
                keyring.evict(subject)
        if newly:
            try:
                sessions: set[int] | None = pool.run(
                    lambda c: eviction.listening(c, settings.schema)
                )
            except EventStoreError:  # not known: every lease is waited out
                sessions = None
            waiter.wait(committed_at, sessions)
    finally:
        waiter.close()
    if keyring is not None and keyring.key_store is not None:
        _delete_from(keyring.key_store, subject)
    return int(count)


def _delete_from(key_store: Any, subject: str) -> None:
    """The forgotten subject's key out of the application's KeyStore (named neither the
    subject nor the KeyStore's message: either may hold personal data)."""
    try:
        key_store.delete(subject)
    except Exception as exc:
        raise EventStoreError(
            f"the subject is forgotten (its events read as FORGOTTEN, in every process), but "
            f"the KeyStore failed to delete its data key ({type(exc).__name__}): call "
            "forget_subject again to delete it"
        ) from None


class _Archived:
    """A subject's events in the archive files, read once per file."""

    def __init__(self, subject: str) -> None:
        self._subject = subject
        self._files: dict[tuple[str, int, int], list[Archived]] = {}

    def read(self, files: list[ArchivedFile]) -> list[Archived]:
        """The subject's events in `files`, reading those not read yet (StoreUnavailableError
        when one cannot be read, saying that nothing was forgotten)."""
        out: list[Archived] = []
        for f in files:
            key = (f.url, f.first_event_id, f.last_event_id)
            if key not in self._files:
                try:
                    self._files[key] = subject_events(f.url, self._subject)
                except StoreUnavailableError as exc:
                    raise StoreUnavailableError(f"{exc}; nothing was forgotten") from None
            out += self._files[key]
        return out

    def count(self, conn: Any, upto: int) -> int:
        """How many of the subject's events in the archived ranges up to event_id `upto`
        are live (as reads decide), on `conn` in the forget's transaction."""
        files = [f for f in archive_storage.manifest(conn) if f.last_event_id <= upto]
        return count_live(conn, self.read(files))


def is_forgotten(pool: ReadPool, subject: Any) -> bool:
    """`EventStore.is_forgotten`."""
    subject = check_name(subject, "subject")
    return pool.run(lambda c: keys.is_forgotten(c, subject))


def forgotten_subjects(pool: ReadPool) -> int:
    """How many subjects are forgotten."""
    return pool.run(keys.forgotten_count)


def on_notice(serializer: Any) -> None:
    """A forget was notified (by any instance), or notifications may have been missed (the
    listener reconnected): drop every cached key of this store."""
    keyring = keyring_of(serializer)
    if keyring is not None:
        keyring.evict()
