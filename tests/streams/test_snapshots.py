"""Snapshots: record (insert or replace), read, delete.

Ported from the Elixir EventStore suite (test/storage/snapshot_test.exs and the snapshot tests
of test/event_store_test.exs) onto the public API.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from eventstore_actors import (
    EventStore,
    EventStoreError,
    JsonSerializer,
    SerializationError,
    SnapshotData,
    SnapshotNotFoundError,
)


@dataclass(frozen=True)
class ExampleData:
    data: str


EXAMPLE_TYPE = f"{ExampleData.__module__}.{ExampleData.__qualname__}"


def snapshot(
    source_uuid: str | None = None,
    version: int = 1,
    data: object = None,
    *,
    source_type: str = "tests.Aggregate",
    metadata: Mapping[str, Any] | None = None,
) -> SnapshotData:
    return SnapshotData(
        source_uuid=source_uuid or str(uuid.uuid4()),
        source_version=version,
        source_type=source_type,
        data={"state": f"version {version}"} if data is None else data,
        metadata=metadata,
    )


# --- read -------------------------------------------------------------------------------------


def test_read_snapshot_errors_when_none_exists(store: EventStore) -> None:
    with pytest.raises(SnapshotNotFoundError):
        store.read_snapshot(str(uuid.uuid4()))
    assert issubclass(SnapshotNotFoundError, EventStoreError)


def test_read_snapshot_when_present(store: EventStore) -> None:
    sent = snapshot(metadata={"user": "user@example.com"})
    before = datetime.now(UTC)
    assert store.record_snapshot(sent) is None  # type: ignore[func-returns-value]

    read = store.read_snapshot(sent.source_uuid)
    assert isinstance(read, SnapshotData)
    assert read.source_uuid == sent.source_uuid
    assert read.source_version == 1
    assert read.source_type == "tests.Aggregate"
    assert read.data == {"state": "version 1"}
    assert read.metadata == {"user": "user@example.com"}
    assert read.created_at is not None, "created_at is set by the store"
    assert read.created_at.utcoffset() == timedelta(0)
    assert abs(read.created_at - before) < timedelta(seconds=60)

    bare = snapshot()
    store.record_snapshot(bare)
    assert store.read_snapshot(bare.source_uuid).metadata is None


def test_snapshots_are_kept_per_source(store: EventStore) -> None:
    a, b = snapshot("source-a", 3), snapshot("source-b", 7)
    store.record_snapshot(a)
    store.record_snapshot(b)
    assert store.read_snapshot("source-a").source_version == 3
    assert store.read_snapshot("source-b").source_version == 7
    assert store.read_snapshot("source-b").data == {"state": "version 7"}


# --- record: insert or replace ---------------------------------------------------------------


def test_record_snapshot_when_present_replaces_it(store: EventStore) -> None:
    source = str(uuid.uuid4())
    store.record_snapshot(snapshot(source, 1, metadata={"m": 1}))
    store.record_snapshot(
        snapshot(source, 2, data={"state": "new"}, source_type="tests.Other", metadata={"m": 2})
    )

    read = store.read_snapshot(source)
    assert read.source_uuid == source
    assert read.source_version == 2
    assert read.source_type == "tests.Other"
    assert read.data == {"state": "new"}
    assert read.metadata == {"m": 2}

    # Replacing without metadata clears it; many replacements keep the last.
    for version in range(3, 21):
        store.record_snapshot(snapshot(source, version))
    read = store.read_snapshot(source)
    assert read.metadata is None
    assert read.source_version == 20


def test_snapshot_data_types_round_trip(store: EventStore) -> None:
    data = {
        "text": "Unicode ✅ 日本語",
        "int": 2**53,
        "float": 1.5,
        "none": None,
        "bool": True,
        "list": [1, "two", [3]],
        "nested": {"a": {"b": []}},
    }
    sent = snapshot(data=data)
    store.record_snapshot(sent)
    assert store.read_snapshot(sent.source_uuid).data == data


def test_snapshot_with_registered_type_is_rebuilt(
    make_store: Callable[..., EventStore],
) -> None:
    store = make_store(serializer=JsonSerializer(types=[ExampleData]))
    sent = snapshot(data=ExampleData("some data"), source_type=EXAMPLE_TYPE)
    store.record_snapshot(sent)

    read = store.read_snapshot(sent.source_uuid)
    assert read.source_type == EXAMPLE_TYPE
    assert read.data == ExampleData("some data")
    assert isinstance(read.data, ExampleData)


def test_snapshot_with_unregistered_type_is_a_dict(store: EventStore) -> None:
    sent = snapshot(data=ExampleData("some data"), source_type=EXAMPLE_TYPE)
    store.record_snapshot(sent)
    assert store.read_snapshot(sent.source_uuid).data == {"data": "some data"}


def test_unserializable_snapshot_raises_and_keeps_previous(store: EventStore) -> None:
    source = str(uuid.uuid4())
    store.record_snapshot(snapshot(source, 1))

    with pytest.raises(SerializationError):
        store.record_snapshot(snapshot(source, 2, data={"bad": {1, 2}}))
    with pytest.raises(SerializationError):
        store.record_snapshot(snapshot(source, 3, data={"bad": math.nan}))
    with pytest.raises(SerializationError):
        store.record_snapshot(snapshot(source, 4, metadata={"bad": object()}))

    read = store.read_snapshot(source)
    assert read.source_version == 1
    assert read.data == {"state": "version 1"}

    new_source = str(uuid.uuid4())
    with pytest.raises(SerializationError):
        store.record_snapshot(snapshot(new_source, 1, data=object()))
    with pytest.raises(SnapshotNotFoundError):
        store.read_snapshot(new_source)


def test_delete_existing_snapshot(store: EventStore) -> None:
    sent = snapshot()
    store.record_snapshot(sent)
    assert store.delete_snapshot(sent.source_uuid) is None  # type: ignore[func-returns-value]
    with pytest.raises(SnapshotNotFoundError):
        store.read_snapshot(sent.source_uuid)


def test_delete_missing_snapshot_is_ignored(store: EventStore) -> None:
    assert store.delete_snapshot(str(uuid.uuid4())) is None  # type: ignore[func-returns-value]
    source = str(uuid.uuid4())
    store.record_snapshot(snapshot(source))
    store.delete_snapshot(source)
    store.delete_snapshot(source)  # twice: still no error


def test_delete_only_removes_that_source_and_can_record_again(store: EventStore) -> None:
    store.record_snapshot(snapshot("keep"))
    store.record_snapshot(snapshot("drop", 5))
    store.delete_snapshot("drop")
    assert store.read_snapshot("keep").source_uuid == "keep"
    store.record_snapshot(snapshot("drop", 2))
    assert store.read_snapshot("drop").source_version == 2


def test_snapshots_are_independent_of_streams(store: EventStore) -> None:
    from eventstore_actors import EventData

    store.append_to_stream("agg-1", 0, [EventData(data={"n": 1}, event_type="E")])
    store.record_snapshot(snapshot("agg-1", 1))
    assert len(store.read_stream_forward("agg-1")) == 1
    assert store.read_snapshot("agg-1").source_version == 1
    store.delete_snapshot("agg-1")
    assert len(store.read_stream_forward("agg-1")) == 1
