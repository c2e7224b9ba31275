"""Forgetting a data subject (crypto-shredding): `store.forget_subject` and `is_forgotten`.

One transaction, under the counter row lock every append takes first, deletes the subject's
data key (from the schema, or from the application's KeyStore before the commit) and marks
the subject forgotten, then notifies every store instance. The caller's own key cache drops
the key before the call returns; other instances drop theirs when the notification arrives.

Why no reader can still decrypt once the call returned, whatever the notification's delay:
marking the subject forgotten draws a new forget generation in the same transaction (schema
v5, a trigger on forgotten_subjects), and every read statement returns its snapshot's
generation (sql/read/*.sql, once per statement); a key cache serves only rows of the
generation its keys were fetched at, or of one known to precede it, and fetches keys again
for any other (lifecycle/encryption.py, Keyring, gives the argument).
Statements that are not on the hot path still carry, from the row's snapshot, whether its
subject is forgotten (snapshots/read.sql, parked events, the archive's rows). The publisher
reads the writer's batches that hold a subject back from the database for the same reason
(notifications/publisher.py). So the guarantee does not wait for any other process: the
notification (not a time-out) empties other caches early, so that keys of forgotten
subjects do not stay in memory.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from ..errors import EventStoreError
from ..storage import archive as archive_storage
from ..storage import keys
from ..storage.pool import ReadPool
from ..validation import check_name
from .encryption import Keyring, keyring_of

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
    serializer: Any,
    channel: str,
    origin: str,
    subject: Any,
    written: Callable[[Callable[[Any], int]], Callable[[Any], int]] = lambda work: work,
) -> int:
    """`EventStore.forget_subject`: the number of the subject's stored events when it is
    newly forgotten (0 when it already was, or has none). `written` records the write's
    position for this store's replica reads (read-your-writes)."""
    subject = check_name(subject, "subject")
    keyring = keyring_of(serializer)
    key_store = keyring.key_store if keyring is not None else None

    def delete_from_key_store() -> None:
        if key_store is None:
            return
        try:
            key_store.delete(subject)
        except Exception as exc:
            raise EventStoreError(
                f"the KeyStore failed to delete the data key ({type(exc).__name__}); "
                "nothing was forgotten"
            ) from None

    def forget(conn: Any) -> int:
        newly, count = keys.forget(conn, subject, channel, origin, delete_from_key_store)
        return count if newly else -1

    try:
        count = pool.run(written(forget))
        return 0 if count < 0 else count + _archived(pool, subject)
    finally:
        if keyring is not None:
            keyring.evict(subject)


def _archived(pool: ReadPool, subject: str) -> int:
    """How many of the subject's events are in archive files (and no longer in the table)."""
    files = pool.run(archive_storage.manifest)
    if not files:
        return 0
    from .archive.files import open_parquet, pyarrow_modules

    pa, _ = pyarrow_modules()
    import pyarrow.compute as pc

    total = 0
    for f in files:
        parquet = open_parquet(f.url)
        try:
            column = parquet.read(columns=["subject"]).column("subject")
        finally:
            parquet.close()
        total += int(pc.sum(pc.equal(column, pa.scalar(subject))).as_py() or 0)
        if f.state != "deleted":  # rows still in the table were counted there
            total -= pool.run(
                functools.partial(
                    keys.count_in_range,
                    subject=subject,
                    first=f.first_event_id,
                    last=f.last_event_id,
                )
            )
    return total


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
