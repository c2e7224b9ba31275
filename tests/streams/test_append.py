"""Appending events: ids, stream versions, expected versions, atomicity, large appends.

Ported from the Elixir EventStore suite (test/storage/append_events_test.exs,
test/append_to_stream_test.exs, test/event_store_test.exs) onto the public API.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from support.factory import event_ids, make_events, new_stream, versions

from eventstore_actors import (
    AppendResult,
    EventData,
    EventStore,
    EventStoreError,
    RecordedEvent,
    StreamNotFoundError,
    WrongExpectedVersionError,
)


def all_events(store: EventStore) -> list[RecordedEvent]:
    return store.read_all_streams_forward(0, 1_000_000)


# --- appending to new and existing streams ---------------------------------------------------


def test_append_single_event_to_new_stream(store: EventStore) -> None:
    stream = new_stream()
    # Version 2: the call returns where the events went (version 1 returned None).
    assert store.append_to_stream(stream, 0, make_events(1)) == AppendResult(stream, 1, 1, 1, 1)

    [event] = store.read_stream_forward(stream)
    assert isinstance(event, RecordedEvent)
    assert event.event_id == 1  # first event of a new store
    assert event.stream_uuid == stream
    assert event.stream_version == 1


def test_append_multiple_events_to_new_stream(store: EventStore) -> None:
    stream = new_stream()
    store.append_to_stream(stream, 0, make_events(3))

    events = store.read_stream_forward(stream)
    assert event_ids(events) == [1, 2, 3]
    assert versions(events) == [1, 2, 3]


def test_append_single_event_to_existing_stream_in_separate_writes(store: EventStore) -> None:
    stream = new_stream()
    store.append_to_stream(stream, 0, make_events(1))
    store.append_to_stream(stream, 1, make_events(1, start=2))

    events = store.read_stream_forward(stream)
    assert event_ids(events) == [1, 2]
    assert versions(events) == [1, 2]
    assert [e.data["n"] for e in events] == [1, 2]


def test_append_multiple_events_to_existing_stream_in_separate_writes(store: EventStore) -> None:
    stream = new_stream()
    store.append_to_stream(stream, 0, make_events(3))
    store.append_to_stream(stream, 3, make_events(3, start=4))

    events = store.read_stream_forward(stream)
    assert event_ids(events) == [1, 2, 3, 4, 5, 6]
    assert versions(events) == [1, 2, 3, 4, 5, 6]


def test_append_events_to_different_new_streams(store: EventStore) -> None:
    s1, s2 = new_stream(), new_stream()
    store.append_to_stream(s1, 0, make_events(2))
    store.append_to_stream(s2, 0, make_events(2))

    e1, e2 = store.read_stream_forward(s1), store.read_stream_forward(s2)
    assert (event_ids(e1), versions(e1)) == ([1, 2], [1, 2])
    assert (event_ids(e2), versions(e2)) == ([3, 4], [1, 2])


def test_append_events_to_different_existing_streams(store: EventStore) -> None:
    s1, s2 = new_stream(), new_stream()
    store.append_to_stream(s1, 0, make_events(2))
    store.append_to_stream(s2, 0, make_events(2))
    store.append_to_stream(s1, 2, make_events(2, start=3))
    store.append_to_stream(s2, 2, make_events(2, start=3))

    e1, e2 = store.read_stream_forward(s1), store.read_stream_forward(s2)
    assert (event_ids(e1), versions(e1)) == ([1, 2, 5, 6], [1, 2, 3, 4])
    assert (event_ids(e2), versions(e2)) == ([3, 4, 7, 8], [1, 2, 3, 4])


def test_many_sequential_appends_continue_versions(store: EventStore) -> None:
    stream = new_stream()
    for version in range(20):
        store.append_to_stream(stream, version, make_events(1, start=version + 1))
    events = store.read_stream_forward(stream)
    assert versions(events) == list(range(1, 21))
    assert event_ids(events) == list(range(1, 21))
    created = [e.created_at for e in events]
    assert created == sorted(created)


def test_stream_version_differs_from_event_id(store: EventStore) -> None:
    # Elixir "should return stream version": a first stream keeps event_id and version apart.
    store.append_to_stream(new_stream(), 0, make_events(3))
    stream = new_stream()
    store.append_to_stream(stream, 0, make_events(3))

    events = store.read_stream_forward(stream)
    assert versions(events) == [1, 2, 3]
    assert event_ids(events) == [4, 5, 6]
    assert events[-1].stream_version == 3


# --- wrong expected versions -------------------------------------------------------------------


def test_append_to_new_stream_but_stream_already_exists(store: EventStore) -> None:
    stream = new_stream()
    store.append_to_stream(stream, 0, make_events(1))

    with pytest.raises(WrongExpectedVersionError):
        store.append_to_stream(stream, 0, make_events(1, start=2))

    assert versions(store.read_stream_forward(stream)) == [1]


def test_append_to_existing_stream_but_stream_does_not_exist(store: EventStore) -> None:
    stream = new_stream()
    with pytest.raises(WrongExpectedVersionError):
        store.append_to_stream(stream, 1, make_events(1))

    with pytest.raises(StreamNotFoundError):
        store.read_stream_forward(stream)
    assert all_events(store) == []


def test_append_to_existing_stream_with_wrong_expected_version(store: EventStore) -> None:
    stream = new_stream()
    store.append_to_stream(stream, 0, make_events(3))

    for expected_version in [0, 1, 2, 4, 100]:
        with pytest.raises(WrongExpectedVersionError):
            store.append_to_stream(stream, expected_version, make_events(2, start=4))

    events = store.read_stream_forward(stream)
    assert versions(events) == [1, 2, 3]
    assert len(all_events(store)) == 3
    assert issubclass(WrongExpectedVersionError, EventStoreError)


def test_rejected_append_consumes_no_event_id(store: EventStore) -> None:
    stream = new_stream()
    store.append_to_stream(stream, 0, make_events(2))
    with pytest.raises(WrongExpectedVersionError):
        store.append_to_stream(stream, 1, make_events(5))
    with pytest.raises(WrongExpectedVersionError):
        store.append_to_stream(new_stream(), 7, make_events(5))

    store.append_to_stream(stream, 2, make_events(2, start=3))
    events = all_events(store)
    assert event_ids(events) == [1, 2, 3, 4]
    assert versions(events) == [1, 2, 3, 4]


# --- empty appends, event fields -----------------------------------------------------------------


def test_empty_events_list_does_not_create_stream(store: EventStore) -> None:
    stream = new_stream()
    assert store.append_to_stream(stream, 0, []) is None  # type: ignore[func-returns-value]

    with pytest.raises(StreamNotFoundError):
        store.read_stream_forward(stream)
    assert all_events(store) == []
    # The stream can still be created afterwards.
    store.append_to_stream(stream, 0, make_events(1))
    assert event_ids(store.read_stream_forward(stream)) == [1]


def test_empty_events_list_on_existing_stream_is_a_noop(store: EventStore) -> None:
    stream = new_stream()
    store.append_to_stream(stream, 0, make_events(2))
    store.append_to_stream(stream, 2, [])
    store.append_to_stream(stream, 2, make_events(1, start=3))
    assert versions(store.read_stream_forward(stream)) == [1, 2, 3]


def test_recorded_event_fields_round_trip(store: EventStore) -> None:
    stream = new_stream()
    sent = make_events(3)
    before = datetime.now(UTC)
    store.append_to_stream(stream, 0, sent)
    after = datetime.now(UTC)

    events = store.read_stream_forward(stream)
    assert len(events) == 3
    for expected, actual in zip(sent, events, strict=True):
        assert actual.stream_uuid == stream
        assert actual.event_type == expected.event_type
        assert actual.data == expected.data
        assert actual.metadata == expected.metadata
        assert actual.correlation_id == expected.correlation_id
        assert actual.causation_id == expected.causation_id
        assert isinstance(actual.created_at, datetime)
        assert actual.created_at.tzinfo is not None
        assert actual.created_at.utcoffset() == timedelta(0), "created_at must be in UTC"
        slack = timedelta(seconds=60)  # server and client clocks may differ slightly
        assert before - slack <= actual.created_at <= after + slack
    with pytest.raises(AttributeError):  # frozen dataclass
        events[0].event_id = 42  # type: ignore[misc]


def test_none_metadata_and_ids_read_back_as_none(store: EventStore) -> None:
    stream = new_stream()
    store.append_to_stream(stream, 0, [EventData(data={"a": 1}, event_type="tests.Bare")])

    [event] = store.read_stream_forward(stream)
    assert event.metadata is None
    assert event.correlation_id is None
    assert event.causation_id is None
    assert event.data == {"a": 1}
    assert event.event_type == "tests.Bare"

    causation = str(uuid.uuid4())
    store.append_to_stream(
        stream, 1, [EventData(data={}, event_type="E", metadata={}, causation_id=causation)]
    )
    event = store.read_stream_forward(stream)[1]
    assert event.correlation_id is None
    assert event.causation_id == causation
    assert event.metadata == {}


def test_any_non_empty_string_is_a_stream_uuid(store: EventStore) -> None:
    for stream_uuid in ["Ünïcödé stream ✅", "with space", "x" * 500, "$allx", "all", "a/b:c-d.e"]:
        store.append_to_stream(stream_uuid, 0, make_events(2))
        events = store.read_stream_forward(stream_uuid)
        assert [e.stream_uuid for e in events] == [stream_uuid, stream_uuid]


def test_unicode_data_is_supported(store: EventStore) -> None:
    text = "Unicode characters are supported ✅ — 日本語 \U0001f600"
    stream = new_stream()
    store.append_to_stream(stream, 0, [EventData(data={"event": text}, event_type="E")])
    [event] = list(store.stream_all_forward())
    assert event.data["event"] == text


def test_append_is_visible_to_readers_when_it_returns(store: EventStore) -> None:
    stream = new_stream()
    for n in range(1, 11):
        store.append_to_stream(stream, n - 1, make_events(1, start=n))
        # Returns after the commit: a read straight after sees it.
        assert store.read_stream_forward(stream)[-1].stream_version == n


# --- large appends --------------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_append_100_000_events_in_one_call(store: EventStore) -> None:
    count = 100_000
    stream = new_stream()
    store.append_to_stream(new_stream(), 0, make_events(1))  # ids and versions then differ
    events = [EventData(data={"i": i}, event_type="tests.Bulk") for i in range(count)]

    store.append_to_stream(stream, 0, events)

    read = store.read_stream_forward(stream, 0, count + 10)
    assert len(read) == count
    assert [e.event_id for e in read] == list(range(2, count + 2))
    assert [e.stream_version for e in read] == list(range(1, count + 1))
    assert [e.data["i"] for e in read] == list(range(count))
    del read

    # Streaming the whole log lazily yields every event once, in id order.
    expected_id = 1
    stream_all: Iterator[RecordedEvent] = store.stream_all_forward(0, read_batch_size=1000)
    for event in stream_all:
        assert event.event_id == expected_id
        expected_id += 1
    assert expected_id == count + 2

    # The store still accepts appends afterwards.
    store.append_to_stream(stream, count, make_events(1))
    assert store.read_stream_forward(stream, count + 1)[0].event_id == count + 2
