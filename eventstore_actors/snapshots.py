"""Snapshots: one per source_uuid, serialized with the store's serializer; written through
the pool, read from the pool or the standby."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import SerializationError, SnapshotNotFoundError
from .events import FORGOTTEN, SnapshotData
from .lifecycle.encryption import keyring_of, open_stored, sealing
from .runtime import Runtime
from .storage import snapshots
from .validation import check_name, check_position

__all__ = ["Snapshots"]


class Snapshots:
    """`record_snapshot`, `read_snapshot` and `delete_snapshot` of one store."""

    def __init__(self, runtime: Runtime) -> None:
        self._settings = runtime.settings
        self._pool = runtime.pool
        self._reads = runtime.reads
        self._written = runtime.written

    def record_snapshot(self, snapshot: Any) -> None:
        """`EventStore.record_snapshot`: checked and serialized, then upserted."""
        if not isinstance(snapshot, SnapshotData):
            raise TypeError("record_snapshot takes a SnapshotData")
        check_name(snapshot.source_uuid, "source_uuid")
        check_name(snapshot.source_type, "source_type")
        check_position(snapshot.source_version, "source_version")
        if snapshot.metadata is not None and not isinstance(snapshot.metadata, Mapping):
            raise TypeError("metadata must be a mapping or None")
        subject = None if snapshot.subject is None else check_name(snapshot.subject, "subject")
        keyring = None if subject is None else sealing(self._settings.serializer, "a snapshot")
        serialize = self._settings.serializer.serialize
        row = {
            "source_uuid": snapshot.source_uuid,
            "source_version": snapshot.source_version,
            "source_type": snapshot.source_type,
            "data": serialize(snapshot.data),
            "metadata": None if snapshot.metadata is None else serialize(dict(snapshot.metadata)),
        }
        if not isinstance(row["data"], bytes) or not isinstance(
            row["metadata"], (bytes, type(None))
        ):
            raise SerializationError("the serializer must return bytes")
        row["subject"] = subject
        if keyring is not None and subject is not None:
            row["data"] = keyring.seal(subject, row["data"])
        self._pool.run(self._written(lambda c: snapshots.upsert(c, row)))

    def read_snapshot(self, source_uuid: Any) -> SnapshotData:
        """`EventStore.read_snapshot`: deserialized (SerializationError says which)."""
        check_name(source_uuid, "source_uuid")
        row = self._reads.run(lambda c: snapshots.read(c, source_uuid))
        if row is None:
            raise SnapshotNotFoundError(source_uuid)
        uuid, version, source_type, data, metadata, created_at, subject, forgotten = row
        deserialize = self._settings.serializer.deserialize
        try:
            if subject is None:
                data = deserialize(data, source_type)
            else:  # the reads' own step: forgotten, no keyring, or decrypted
                keyring = keyring_of(self._settings.serializer)
                plain = open_stored(keyring, subject, data, bool(forgotten))
                data = FORGOTTEN if plain is None else deserialize(plain, source_type)
            metadata = None if metadata is None else deserialize(metadata, None)
        except Exception as exc:  # a custom serializer may raise anything
            reason = (
                str(exc) if isinstance(exc, SerializationError) else f"{type(exc).__name__}: {exc}"
            )
            raise SerializationError(
                f"cannot read the snapshot of {uuid!r} (type {source_type!r}): {reason}"
            ) from exc
        return SnapshotData(
            source_uuid=uuid,
            source_version=version,
            source_type=source_type,
            data=data,
            metadata=metadata,
            created_at=created_at,
            subject=subject,
        )

    def delete_snapshot(self, source_uuid: Any) -> None:
        """`EventStore.delete_snapshot`."""
        check_name(source_uuid, "source_uuid")
        self._pool.run(self._written(lambda c: snapshots.delete(c, source_uuid)))
