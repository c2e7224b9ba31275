"""The read side of links and deletes: a stream's positions are shared by its own events and
its links; soft-deleted streams refuse reads; $all skips gaps left by hard deletes.

Links and deletes are written here in SQL, the way link_to_stream and delete_stream store
them (ported from test/streams/single_stream_test.exs "link events to stream",
test/storage/link_events_test.exs and the read parts of the soft/hard delete suites).
"""

from __future__ import annotations

import pytest
from support.factory import event_ids, make_events, new_stream, versions
from support.storage_sql import hard_delete, link, soft_delete

from eventstore_actors import EventStore, RecordedEvent, StreamDeletedError, StreamNotFoundError


def numbers(events: list[RecordedEvent]) -> list[int]:
    return [e.event_number for e in events]


@pytest.fixture
def linked(store: EventStore, dsn: str, schema: str) -> tuple[str, str, list[RecordedEvent]]:
    """Elixir's setup: a source stream of 3 events (ids 1-3), a target stream with one event
    of its own (id 4), then the 3 source events linked into the target at positions 2-4."""
    source, target = new_stream(), new_stream()
    store.append_to_stream(source, 0, make_events(3))
    store.append_to_stream(target, 0, make_events(1))
    source_events = store.read_stream_forward(source)
    link(dsn, schema, target, [e.event_id for e in source_events])
    return source, target, source_events


def test_reading_a_linking_stream_returns_the_original_events(
    store: EventStore, linked: tuple[str, str, list[RecordedEvent]]
) -> None:
    source, target, source_events = linked
    events = store.read_stream_forward(target)
    assert numbers(events) == [1, 2, 3, 4]
    assert versions(events) == [1, 1, 2, 3]
    assert event_ids(events) == [4, 1, 2, 3]
    assert [e.stream_uuid for e in events] == [target, source, source, source]
    for original, read in zip(source_events, events[1:], strict=True):
        assert read == original  # every field but event_number (not compared)
        assert read.event_uuid == original.event_uuid
        assert read.created_at == original.created_at
    # Backward, and from a position: positions are event_numbers.
    assert numbers(store.read_stream_backward(target)) == [4, 3, 2, 1]
    assert event_ids(store.read_stream_backward(target)) == [3, 2, 1, 4]
    assert numbers(store.read_stream_forward(target, 2, 2)) == [2, 3]
    assert numbers(store.read_stream_backward(target, 3, 2)) == [3, 2]
    # The source stream and $all are unchanged: links are not events.
    assert numbers(store.read_stream_forward(source)) == [1, 2, 3]
    assert event_ids(store.read_all_streams_forward()) == [1, 2, 3, 4]


@pytest.mark.parametrize("batch", [1, 2, 3, 1000])
def test_streaming_a_linking_stream_pages_by_event_number(
    store: EventStore, linked: tuple[str, str, list[RecordedEvent]], batch: int
) -> None:
    _, target, _ = linked
    assert numbers(list(store.stream_forward(target, 0, batch))) == [1, 2, 3, 4]
    assert numbers(list(store.stream_backward(target, -1, batch))) == [4, 3, 2, 1]
    assert numbers(list(store.stream_forward(target, 3, batch))) == [3, 4]


def test_own_events_and_links_interleave_by_position(
    store: EventStore, dsn: str, schema: str
) -> None:
    """own 1, links 2-3, own 4-5, link 6: merged in position order, limits cut the merge."""
    source, target = new_stream(), new_stream()
    store.append_to_stream(source, 0, make_events(3))  # ids 1-3
    store.append_to_stream(target, 0, make_events(1))  # id 4, position 1
    link(dsn, schema, target, [1, 2])  # positions 2, 3
    store.append_to_stream(target, 3, make_events(2))  # ids 5-6, positions 4, 5
    link(dsn, schema, target, [3])  # position 6
    events = store.read_stream_forward(target)
    assert numbers(events) == [1, 2, 3, 4, 5, 6]
    assert event_ids(events) == [4, 1, 2, 5, 6, 3]
    assert versions(events) == [1, 1, 2, 4, 5, 3]
    assert event_ids(store.read_stream_forward(target, 2, 3)) == [1, 2, 5]
    assert event_ids(store.read_stream_backward(target, -1, 3)) == [3, 6, 5]
    assert event_ids(store.read_stream_backward(target, 3, 3)) == [2, 1, 4]
    for batch in (1, 2, 4):
        assert event_ids(list(store.stream_forward(target, 0, batch))) == [4, 1, 2, 5, 6, 3]
        assert event_ids(list(store.stream_backward(target, -1, batch))) == [3, 6, 5, 2, 1, 4]


def test_a_stream_of_links_only_exists(store: EventStore, dsn: str, schema: str) -> None:
    source, target = new_stream(), new_stream()
    store.append_to_stream(source, 0, make_events(2))
    link(dsn, schema, target, [2, 1])
    events = store.read_stream_forward(target)
    assert numbers(events) == [1, 2]
    assert event_ids(events) == [2, 1]
    assert numbers(store.read_stream_backward(target)) == [2, 1]
    assert store.read_stream_forward(target, 3) == []
    info = store.stream_info(target)
    assert (info.stream_version, info.status) == (2, "created")
    assert numbers(list(store.stream_forward(target))) == [1, 2]


# --- soft deletes --------------------------------------------------------------------------------


def test_reading_a_soft_deleted_stream_raises_stream_deleted(
    store: EventStore, dsn: str, schema: str
) -> None:
    stream, other = new_stream(), new_stream()
    store.append_to_stream(stream, 0, make_events(3))
    store.append_to_stream(other, 0, make_events(1))
    soft_delete(dsn, schema, stream)
    reads = {
        "read_stream_forward": lambda: store.read_stream_forward(stream),
        "read_stream_forward past the end": lambda: store.read_stream_forward(stream, 10),
        "read_stream_backward": lambda: store.read_stream_backward(stream),
        "read_stream_backward from 0": lambda: store.read_stream_backward(stream, 0),
        "stream_forward": lambda: store.stream_forward(stream),  # raised by the call
        "stream_backward": lambda: store.stream_backward(stream),
    }
    for name, read in reads.items():
        with pytest.raises(StreamDeletedError) as err:
            read()
        assert err.value.stream_uuid == stream, name
    # $all reads are unchanged; other streams too.
    assert event_ids(store.read_all_streams_forward()) == [1, 2, 3, 4]
    assert event_ids(store.read_all_streams_backward()) == [4, 3, 2, 1]
    assert event_ids(list(store.stream_all_forward(0, 1))) == [1, 2, 3, 4]
    assert event_ids(store.read_all_streams_forward(stream_prefix=stream)) == [1, 2, 3]
    assert event_ids(store.read_stream_forward(other)) == [4]


def test_a_stream_deleted_while_being_streamed_raises(
    store: EventStore, dsn: str, schema: str
) -> None:
    stream = new_stream()
    store.append_to_stream(stream, 0, make_events(4))
    it = store.stream_forward(stream, 0, 2)
    assert next(it).stream_version == 1
    soft_delete(dsn, schema, stream)
    with pytest.raises(StreamDeletedError):
        list(it)


def test_soft_deleted_linking_stream_raises_but_its_sources_read(
    store: EventStore, linked: tuple[str, str, list[RecordedEvent]], dsn: str, schema: str
) -> None:
    source, target, _ = linked
    soft_delete(dsn, schema, target)
    with pytest.raises(StreamDeletedError):
        store.read_stream_forward(target)
    assert numbers(store.read_stream_forward(source)) == [1, 2, 3]


# --- hard deletes --------------------------------------------------------------------------------


def test_a_hard_deleted_stream_is_not_found(store: EventStore, dsn: str, schema: str) -> None:
    stream = new_stream()
    store.append_to_stream(stream, 0, make_events(2))
    hard_delete(dsn, schema, stream)
    with pytest.raises(StreamNotFoundError):
        store.read_stream_forward(stream)
    with pytest.raises(StreamNotFoundError):
        store.read_stream_backward(stream)
    with pytest.raises(StreamNotFoundError):
        store.stream_backward(stream)
    with pytest.raises(StreamNotFoundError):
        store.stream_info(stream)


def test_all_streams_reads_skip_gaps_left_by_hard_deletes(
    store: EventStore, dsn: str, schema: str
) -> None:
    a, b, c = new_stream(), new_stream(), new_stream()
    store.append_to_stream(a, 0, make_events(2))  # 1, 2
    store.append_to_stream(b, 0, make_events(3))  # 3, 4, 5
    store.append_to_stream(c, 0, make_events(2))  # 6, 7
    hard_delete(dsn, schema, b)
    assert event_ids(store.read_all_streams_forward()) == [1, 2, 6, 7]
    assert event_ids(store.read_all_streams_forward(3, 1)) == [6]  # the count is of events
    assert event_ids(store.read_all_streams_forward(0, 3)) == [1, 2, 6]
    assert event_ids(store.read_all_streams_backward(5, 1)) == [2]
    assert event_ids(store.read_all_streams_backward(-1, 3)) == [7, 6, 2]
    assert event_ids(store.read_all_streams_forward(stop=5)) == [1, 2]
    for batch in (1, 2, 3):
        assert event_ids(list(store.stream_all_forward(0, batch))) == [1, 2, 6, 7]
        assert event_ids(list(store.stream_all_backward(-1, batch))) == [7, 6, 2, 1]
    # $all's version is the highest event_id ever handed out, deleted or not.
    assert store.stream_info("$all").stream_version == 7


def test_hard_deleted_linked_events_leave_the_linking_stream(
    store: EventStore, linked: tuple[str, str, list[RecordedEvent]], dsn: str, schema: str
) -> None:
    source, target, _ = linked
    hard_delete(dsn, schema, source)
    events = store.read_stream_forward(target)
    assert numbers(events) == [1]
    assert event_ids(events) == [4]
