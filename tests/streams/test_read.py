"""Reading and streaming: limits, offsets, order across streams, laziness.

Ported from the Elixir EventStore suite (test/storage/read_events_test.exs,
test/streams/single_stream_test.exs, test/streams/all_stream_test.exs,
test/event_store_test.exs) onto the public API.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from support.factory import event_ids, make_events, new_stream, versions

from eventstore_actors import EventData, EventStore, StreamNotFoundError


def stream_with_events(store: EventStore, count: int) -> str:
    stream = new_stream()
    store.append_to_stream(stream, 0, make_events(count))
    return stream


@pytest.fixture
def two_streams(store: EventStore) -> tuple[str, str]:
    """Elixir's append_events_to_streams: two streams of three events each (ids 1-3, 4-6)."""
    return stream_with_events(store, 3), stream_with_events(store, 3)


# --- read_stream_forward ---------------------------------------------------------------------


def test_read_unknown_stream_raises_stream_not_found(store: EventStore) -> None:
    with pytest.raises(StreamNotFoundError):
        store.read_stream_forward(new_stream())
    with pytest.raises(StreamNotFoundError):
        store.read_stream_forward(new_stream(), 0, 1)


def test_read_stream_forward_fetches_all_events(store: EventStore) -> None:
    stream = stream_with_events(store, 3)
    events = store.read_stream_forward(stream)
    assert isinstance(events, list)
    assert versions(events) == [1, 2, 3]
    assert [e.data["n"] for e in events] == [1, 2, 3]


def test_read_stream_forward_limits_and_offsets(store: EventStore) -> None:
    stream = stream_with_events(store, 10)
    # From origin limited by count; from a version limited by count (Elixir read_events_test).
    assert versions(store.read_stream_forward(stream, 0, 5)) == [1, 2, 3, 4, 5]
    assert versions(store.read_stream_forward(stream, 6, 5)) == [6, 7, 8, 9, 10]
    assert versions(store.read_stream_forward(stream, start_version=3, count=2)) == [3, 4]
    # 0 and 1 both mean the first event; the start is inclusive.
    assert versions(store.read_stream_forward(stream, 0, 2)) == [1, 2]
    assert versions(store.read_stream_forward(stream, 1, 2)) == [1, 2]
    assert versions(store.read_stream_forward(stream, 10)) == [10]
    # A count larger than what remains returns the rest; past the end is empty.
    assert versions(store.read_stream_forward(stream, 9, 100)) == [9, 10]
    assert store.read_stream_forward(stream, 11) == []
    assert store.read_stream_forward(stream, 1000, 10) == []


def test_read_stream_forward_returns_only_that_stream(store: EventStore) -> None:
    s1, s2 = new_stream(), new_stream()
    for n in range(1, 4):
        store.append_to_stream(s1, n - 1, make_events(1, start=n))
        store.append_to_stream(s2, n - 1, make_events(1, start=n))
    e1 = store.read_stream_forward(s1)
    assert {e.stream_uuid for e in e1} == {s1}
    assert versions(e1) == [1, 2, 3]
    assert event_ids(e1) == [1, 3, 5]
    assert event_ids(store.read_stream_forward(s2)) == [2, 4, 6]


def test_default_count_is_1000(store: EventStore) -> None:
    stream = stream_with_events(store, 1500)
    events = store.read_stream_forward(stream)
    assert versions(events) == list(range(1, 1001))
    assert event_ids(store.read_all_streams_forward()) == list(range(1, 1001))
    assert versions(store.read_stream_forward(stream, 1001)) == list(range(1001, 1501))


# --- read_all_streams_forward ------------------------------------------------------------------


def test_read_all_streams_when_no_streams_exist(store: EventStore) -> None:
    assert store.read_all_streams_forward() == []
    assert store.read_all_streams_forward(0, 1000) == []
    assert store.read_all_streams_forward(5, 10) == []
    it = store.stream_all_forward()
    assert isinstance(it, Iterator)
    assert list(it) == []


def test_read_all_streams_with_multiple_events_across_streams(store: EventStore) -> None:
    s1, s2 = new_stream(), new_stream()
    store.append_to_stream(s1, 0, make_events(1))
    store.append_to_stream(s2, 0, make_events(1))
    store.append_to_stream(s1, 1, make_events(1, start=2))
    store.append_to_stream(s2, 1, make_events(1, start=2))

    events = store.read_all_streams_forward(0, 1000)
    assert event_ids(events) == [1, 2, 3, 4]
    assert [e.stream_uuid for e in events] == [s1, s2, s1, s2]
    assert versions(events) == [1, 1, 2, 2]
    # From after the last event.
    assert store.read_all_streams_forward(5, 1000) == []


def test_read_all_streams_from_after_last_event_limited_by_count(store: EventStore) -> None:
    s1, s2 = new_stream(), new_stream()
    store.append_to_stream(s1, 0, make_events(5))
    store.append_to_stream(s2, 0, make_events(5))
    store.append_to_stream(s1, 5, make_events(5, start=6))
    store.append_to_stream(s2, 5, make_events(5, start=6))

    assert event_ids(store.read_all_streams_forward(0, 10)) == list(range(1, 11))
    assert event_ids(store.read_all_streams_forward(11, 10)) == list(range(11, 21))
    assert event_ids(store.read_all_streams_forward(start_event_id=15, count=3)) == [15, 16, 17]
    last_page = store.read_all_streams_forward(18, 10)
    assert event_ids(last_page) == [18, 19, 20]
    assert [e.stream_uuid for e in last_page] == [s2, s2, s2]
    assert versions(last_page) == [8, 9, 10]


def test_read_all_streams_fetches_events_from_all_streams(
    store: EventStore, two_streams: tuple[str, str]
) -> None:
    s1, s2 = two_streams
    events = store.read_all_streams_forward()
    assert event_ids(events) == [1, 2, 3, 4, 5, 6]
    assert [e.stream_uuid for e in events] == [s1] * 3 + [s2] * 3
    assert versions(events) == [1, 2, 3, 1, 2, 3]
    # 0 and 1 both mean the first event.
    assert event_ids(store.read_all_streams_forward(0, 2)) == [1, 2]
    assert event_ids(store.read_all_streams_forward(1, 2)) == [1, 2]
    # The same events as read stream by stream.
    by_stream = {e.event_id: e for s in (s1, s2) for e in store.read_stream_forward(s)}
    assert events == [by_stream[i] for i in range(1, 7)]


# --- stream_forward ------------------------------------------------------------------------------


def test_stream_unknown_stream_raises_at_call_time(store: EventStore) -> None:
    with pytest.raises(StreamNotFoundError):
        store.stream_forward(new_stream())  # not iterated: the call itself raises
    with pytest.raises(StreamNotFoundError):
        store.stream_forward(new_stream(), 0, 1)


def test_stream_forward_returns_an_iterator(store: EventStore) -> None:
    stream = stream_with_events(store, 3)
    it = store.stream_forward(stream, 0, 1)
    assert isinstance(it, Iterator)
    assert not isinstance(it, list)
    assert next(it).stream_version == 1
    assert [e.stream_version for e in it] == [2, 3]


def test_stream_forward_batch_sizes_and_offsets(store: EventStore) -> None:
    stream = stream_with_events(store, 3)
    for batch_size in [1, 2, 3, 1000]:
        events = list(store.stream_forward(stream, 0, batch_size))
        assert versions(events) == [1, 2, 3], f"read_batch_size={batch_size}"
        assert event_ids(events) == [1, 2, 3]
    # With a starting version offset; and outside the range.
    assert versions(list(store.stream_forward(stream, 2, 1))) == [2, 3]
    assert list(store.stream_forward(stream, 4, 1)) == []
    events = list(store.stream_forward(stream, start_version=0, read_batch_size=2))
    assert versions(events) == [1, 2, 3]


def test_stream_forward_across_batch_boundaries_of_an_interleaved_stream(
    store: EventStore,
) -> None:
    target, other = new_stream(), new_stream()
    for n in range(1, 31):
        store.append_to_stream(target, n - 1, make_events(1, start=n))
        store.append_to_stream(other, n - 1, make_events(1, start=n))
    events = list(store.stream_forward(target, 0, read_batch_size=7))
    assert versions(events) == list(range(1, 31))
    assert event_ids(events) == list(range(1, 61, 2))
    assert events == store.read_stream_forward(target)


# --- stream_all_forward -------------------------------------------------------------------------


def test_stream_all_forward_batch_sizes(store: EventStore, two_streams: tuple[str, str]) -> None:
    for batch_size in [1, 2, 1000]:
        events = list(store.stream_all_forward(0, batch_size))
        assert event_ids(events) == [1, 2, 3, 4, 5, 6], f"read_batch_size={batch_size}"
    it = store.stream_all_forward(0, read_batch_size=2)
    assert isinstance(it, Iterator)
    assert not isinstance(it, list)
    assert next(it).event_id == 1
    assert next(it).event_id == 2
    assert event_ids(list(it)) == [3, 4, 5, 6]


def test_stream_all_forward_in_order_across_batch_boundaries(store: EventStore) -> None:
    streams = [new_stream() for _ in range(3)]
    stream_versions = dict.fromkeys(streams, 0)
    # 50 events in appends of varying size (1..5), streams interleaved.
    total, n = 0, 0
    while total < 50:
        stream = streams[n % 3]
        size = min(1 + n % 5, 50 - total)
        store.append_to_stream(stream, stream_versions[stream], make_events(size))
        stream_versions[stream] += size
        total += size
        n += 1

    events = list(store.stream_all_forward(0, read_batch_size=7))
    assert event_ids(events) == list(range(1, 51))
    assert events == store.read_all_streams_forward(0, 1000)
    for stream in streams:
        assert versions([e for e in events if e.stream_uuid == stream]) == list(
            range(1, stream_versions[stream] + 1)
        )


def test_stream_all_forward_from_start_event_id(store: EventStore) -> None:
    for _ in range(5):
        store.append_to_stream(new_stream(), 0, make_events(10))
    assert event_ids(list(store.stream_all_forward(20, read_batch_size=7))) == list(range(20, 51))
    assert event_ids(list(store.stream_all_forward(start_event_id=50))) == [50]
    assert list(store.stream_all_forward(51, 7)) == []


def test_stream_all_forward_matches_elixir_stream_all(store: EventStore) -> None:
    # event_store_test.exs "stream all forward": 10 events, batch size 5.
    stream = stream_with_events(store, 10)
    events = list(store.stream_all_forward(0, read_batch_size=5))
    assert [e.stream_uuid for e in events] == [stream] * 10
    assert versions(events) == list(range(1, 11))
    assert [e.data["n"] for e in events] == list(range(1, 11))


# --- laziness -------------------------------------------------------------------------------------


def _peak_bytes(consume: Callable[[], object]) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        consume()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_streaming_runs_in_bounded_memory(store: EventStore) -> None:
    count = 5_000
    stream = new_stream()
    store.append_to_stream(
        stream,
        0,
        [EventData(data={"i": i, "pad": "x" * 200}, event_type="E") for i in range(count)],
    )

    def consume_all_streams() -> None:
        seen = 0
        for event in store.stream_all_forward(0, read_batch_size=100):
            seen += 1
            assert event.event_id == seen
        assert seen == count

    def consume_stream() -> None:
        seen = 0
        for event in store.stream_forward(stream, 0, read_batch_size=100):
            seen += 1
            assert event.stream_version == seen
        assert seen == count

    def read_everything() -> None:
        assert len(store.read_all_streams_forward(0, count)) == count

    full = _peak_bytes(read_everything)
    lazy_all = _peak_bytes(consume_all_streams)
    lazy_stream = _peak_bytes(consume_stream)
    assert lazy_all < full / 4, f"stream_all_forward peak {lazy_all} B vs full read {full} B"
    assert lazy_stream < full / 4, f"stream_forward peak {lazy_stream} B vs full read {full} B"


def test_partly_consumed_streams_do_not_hold_pool_connections(
    make_store: Callable[..., EventStore],
) -> None:
    # An application may keep several half-read iterators around; they must not starve the
    # connection pool (a reader holding a connection between batches would block here).
    store = make_store(pool_size=2)
    stream = stream_with_events(store, 30)
    iterators = []
    for _ in range(6):
        it = store.stream_forward(stream, 0, read_batch_size=7)
        assert next(it).stream_version == 1
        iterators.append(it)
        it_all = store.stream_all_forward(0, read_batch_size=7)
        assert next(it_all).event_id == 1
        iterators.append(it_all)

    pool = ThreadPoolExecutor(max_workers=1)
    try:
        future = pool.submit(store.read_stream_forward, stream)
        assert len(future.result(timeout=10)) == 30
    finally:
        pool.shutdown(wait=False)
    # And each iterator continues where it stopped.
    for it in iterators:
        assert len(list(it)) == 29
