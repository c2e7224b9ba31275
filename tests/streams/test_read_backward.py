"""Reading backward, event_uuid/event_number on every read, and the all-streams filters.

Ported from the Elixir EventStore suite (test/streams/single_stream_test.exs, its backward
reads in test/storage/read_events_test.exs and test/event_store_test.exs) onto the public API.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from support.factory import event_ids, make_events, new_stream, versions
from support.storage_sql import bulk_streams, plan, plan_nodes, sql

from eventstore_actors import EventData, EventStore, RecordedEvent, StreamNotFoundError
from eventstore_actors.storage import reader


def stream_with_events(store: EventStore, count: int, stream: str | None = None) -> str:
    stream = stream or new_stream()
    store.append_to_stream(stream, 0, make_events(count))
    return stream


def numbers(events: list[RecordedEvent]) -> list[int]:
    return [e.event_number for e in events]


# --- read_stream_backward ----------------------------------------------------------------------


def test_read_stream_backward_from_the_last_event(store: EventStore) -> None:
    stream = stream_with_events(store, 5)
    events = store.read_stream_backward(stream)
    assert versions(events) == [5, 4, 3, 2, 1]
    assert numbers(events) == [5, 4, 3, 2, 1]
    assert [e.data["n"] for e in events] == [5, 4, 3, 2, 1]
    assert events == list(reversed(store.read_stream_forward(stream)))


def test_read_stream_backward_start_and_count(store: EventStore) -> None:
    stream = stream_with_events(store, 10)
    assert versions(store.read_stream_backward(stream, -1, 3)) == [10, 9, 8]
    assert versions(store.read_stream_backward(stream, 5, 3)) == [5, 4, 3]  # inclusive
    assert versions(store.read_stream_backward(stream, 2, 10)) == [2, 1]
    assert versions(store.read_stream_backward(stream, 1)) == [1]
    # A start past the end means from the last event; 0 returns nothing.
    assert versions(store.read_stream_backward(stream, 11, 2)) == [10, 9]
    assert versions(store.read_stream_backward(stream, 2**63 - 1, 2)) == [10, 9]
    assert store.read_stream_backward(stream, 0) == []
    assert store.read_stream_backward(stream, 0, 1) == []


def test_read_stream_backward_only_that_stream(store: EventStore) -> None:
    s1, s2 = new_stream(), new_stream()
    for n in range(1, 4):
        store.append_to_stream(s1, n - 1, make_events(1, start=n))
        store.append_to_stream(s2, n - 1, make_events(1, start=n))
    assert event_ids(store.read_stream_backward(s1)) == [5, 3, 1]
    assert event_ids(store.read_stream_backward(s2)) == [6, 4, 2]
    assert {e.stream_uuid for e in store.read_stream_backward(s2)} == {s2}


def test_read_stream_backward_default_count_is_1000(store: EventStore) -> None:
    stream = stream_with_events(store, 1500)
    assert versions(store.read_stream_backward(stream)) == list(range(1500, 500, -1))
    assert versions(store.read_stream_backward(stream, 500)) == list(range(500, 0, -1))


def test_read_unknown_stream_backward_raises_stream_not_found(store: EventStore) -> None:
    for start in (-1, 0, 5):
        with pytest.raises(StreamNotFoundError):
            store.read_stream_backward(new_stream(), start)
    with pytest.raises(StreamNotFoundError):
        store.stream_backward(new_stream())  # raised by the call, not on iteration
    with pytest.raises(StreamNotFoundError):
        store.stream_backward(new_stream(), 0)


def test_read_stream_backward_all_stream_reads_all_streams(store: EventStore) -> None:
    stream_with_events(store, 2)
    stream_with_events(store, 2)
    assert event_ids(store.read_stream_backward("$all")) == [4, 3, 2, 1]
    assert event_ids(store.read_stream_backward("$all", 3, 2)) == [3, 2]
    assert event_ids(list(store.stream_backward("$all", -1, 3))) == [4, 3, 2, 1]


# --- stream_backward -----------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 2, 3, 1000])
def test_stream_backward_in_batches(store: EventStore, batch: int) -> None:
    stream = stream_with_events(store, 3)
    events = list(store.stream_backward(stream, read_batch_size=batch))
    assert numbers(events) == [3, 2, 1]
    assert versions(events) == [3, 2, 1]


def test_stream_backward_with_start_offset(store: EventStore) -> None:
    stream = stream_with_events(store, 3)
    assert versions(list(store.stream_backward(stream, 2, 1))) == [2, 1]
    assert versions(list(store.stream_backward(stream, 4, 1))) == [3, 2, 1]
    assert list(store.stream_backward(stream, 0, 1)) == []


def test_stream_backward_is_lazy(store: EventStore, dsn: str, schema: str) -> None:
    """Nothing but the existence check runs before iteration; later appends at the top are
    not seen by a read that already started below them."""
    stream = stream_with_events(store, 4)
    it = store.stream_backward(stream, read_batch_size=2)
    store.append_to_stream(stream, 4, make_events(1, start=5))
    assert versions(list(it)) == [5, 4, 3, 2, 1]  # first page read at iteration
    it = store.stream_backward(stream, read_batch_size=2)
    assert next(it).stream_version == 5
    store.append_to_stream(stream, 5, make_events(1, start=6))
    assert versions(list(it)) == [4, 3, 2, 1]


# --- read_all_streams_backward / stream_all_backward -------------------------------------------


def test_read_all_streams_backward(store: EventStore) -> None:
    s1, s2 = new_stream(), new_stream()
    store.append_to_stream(s1, 0, make_events(1))
    store.append_to_stream(s2, 0, make_events(1))
    store.append_to_stream(s1, 1, make_events(1, start=2))
    store.append_to_stream(s2, 1, make_events(1, start=2))
    events = store.read_all_streams_backward()
    assert event_ids(events) == [4, 3, 2, 1]
    assert numbers(events) == [4, 3, 2, 1]  # event_number is the event_id for $all
    assert [e.stream_uuid for e in events] == [s2, s1, s2, s1]
    assert versions(events) == [2, 2, 1, 1]
    assert event_ids(store.read_all_streams_backward(3, 2)) == [3, 2]
    assert event_ids(store.read_all_streams_backward(100, 1)) == [4]
    assert store.read_all_streams_backward(0) == []
    assert events == list(reversed(store.read_all_streams_forward()))


def test_read_all_streams_backward_on_an_empty_store(store: EventStore) -> None:
    assert store.read_all_streams_backward() == []
    assert list(store.stream_all_backward()) == []
    assert store.read_all_streams_backward(5, 10) == []


@pytest.mark.parametrize("batch", [1, 2, 7, 1000])
def test_stream_all_backward_in_batches(store: EventStore, batch: int) -> None:
    stream_with_events(store, 5)
    stream_with_events(store, 5)
    assert event_ids(list(store.stream_all_backward(read_batch_size=batch))) == list(
        range(10, 0, -1)
    )
    assert event_ids(list(store.stream_all_backward(6, batch))) == list(range(6, 0, -1))
    assert list(store.stream_all_backward(0, batch)) == []


def test_stream_all_backward_pages_from_the_last_position_returned(
    store: EventStore, dsn: str, schema: str
) -> None:
    """Gaps (hard-deleted events) do not shift pages: each starts below the last id seen."""
    a, b = new_stream(), new_stream()
    for n in range(1, 6):
        store.append_to_stream(a, n - 1, make_events(1, start=n))
        store.append_to_stream(b, n - 1, make_events(1, start=n))
    from support.storage_sql import hard_delete

    hard_delete(dsn, schema, b)  # removes the even event_ids
    for batch in (1, 2, 3):
        assert event_ids(list(store.stream_all_backward(-1, batch))) == [9, 7, 5, 3, 1]
        assert event_ids(list(store.stream_all_forward(0, batch))) == [1, 3, 5, 7, 9]


def test_stream_all_backward_runs_in_constant_memory(store: EventStore) -> None:
    """The iterator holds one page at a time: a consumer that drops events keeps none."""
    import gc
    import weakref

    stream_with_events(store, 50)
    refs: list[weakref.ref[RecordedEvent]] = []
    for event in store.stream_all_backward(read_batch_size=10):
        refs.append(weakref.ref(event))
    del event
    gc.collect()
    assert sum(1 for r in refs if r() is not None) == 0


# --- event_uuid and event_number on every read ---------------------------------------------------


def test_every_read_returns_event_uuid_and_event_number(
    store: EventStore, dsn: str, schema: str
) -> None:
    """Each read returns the stored event_uuid, and event_number: the stream position for
    stream reads, the event_id for all-streams reads."""
    stream_with_events(store, 1)  # event_id 1, so that event_ids and versions differ
    other = stream_with_events(store, 2)  # event_ids 2, 3
    with sql(dsn, schema) as conn:
        stored = dict(conn.execute("SELECT event_id, event_uuid FROM events").fetchall())
    assert len(set(stored.values())) == 3
    reads: dict[str, Callable[[], list[RecordedEvent]]] = {
        "read_stream_forward": lambda: store.read_stream_forward(other),
        "read_stream_backward": lambda: store.read_stream_backward(other),
        "stream_forward": lambda: list(store.stream_forward(other, 0, 1)),
        "stream_backward": lambda: list(store.stream_backward(other, -1, 1)),
        "read_all_streams_forward": lambda: store.read_all_streams_forward(2),
        "read_all_streams_backward": lambda: store.read_all_streams_backward(3, 2),
        "stream_all_forward": lambda: list(store.stream_all_forward(2, 1)),
        "stream_all_backward": lambda: list(store.stream_all_backward(3, 1))[:2],
    }
    for name, read in reads.items():
        events = read()
        assert sorted(e.event_id for e in events) == [2, 3], name
        assert all(isinstance(e.event_uuid, uuid.UUID) for e in events), name
        assert all(e.event_uuid == stored[e.event_id] for e in events), name
        all_streams = "all" in name
        assert all(
            e.event_number == (e.event_id if all_streams else e.stream_version) for e in events
        ), name


def test_event_number_differs_from_event_id_in_stream_reads(store: EventStore) -> None:
    """A second stream, so that event_number (its version) and event_id differ."""
    stream_with_events(store, 3)
    stream = stream_with_events(store, 3)
    assert numbers(store.read_stream_forward(stream)) == [1, 2, 3]
    assert numbers(store.read_stream_backward(stream)) == [3, 2, 1]
    assert event_ids(store.read_stream_forward(stream)) == [4, 5, 6]
    assert numbers(store.read_all_streams_forward(4)) == [4, 5, 6]


# --- all-streams filters -------------------------------------------------------------------------


@pytest.fixture
def mixed(store: EventStore) -> EventStore:
    """ids 1-6: orders-1 (A, B), users_1 (A), orders-2 (B, A), ord%ers (B)."""
    store.append_to_stream("orders-1", 0, [EventData({}, "A"), EventData({}, "B")])
    store.append_to_stream("users_1", 0, [EventData({}, "A")])
    store.append_to_stream("orders-2", 0, [EventData({}, "B"), EventData({}, "A")])
    store.append_to_stream("ord%ers", 0, [EventData({}, "B")])
    return store


def test_filter_by_event_types(mixed: EventStore) -> None:
    s = mixed
    assert event_ids(s.read_all_streams_forward(event_types=["A"])) == [1, 3, 5]
    assert event_ids(s.read_all_streams_forward(event_types={"A", "B"})) == [1, 2, 3, 4, 5, 6]
    assert event_ids(s.read_all_streams_forward(event_types=("B",))) == [2, 4, 6]
    assert event_ids(s.read_all_streams_forward(event_types=["C"])) == []
    assert event_ids(s.read_all_streams_backward(event_types=["A"])) == [5, 3, 1]
    assert event_ids(list(s.stream_all_forward(event_types=["B"], read_batch_size=1))) == [2, 4, 6]
    assert event_ids(list(s.stream_all_backward(event_types=["B"], read_batch_size=1))) == [6, 4, 2]


def test_filter_by_stream_prefix_matches_wildcards_literally(mixed: EventStore) -> None:
    s = mixed
    assert event_ids(s.read_all_streams_forward(stream_prefix="orders-")) == [1, 2, 4, 5]
    assert event_ids(s.read_all_streams_forward(stream_prefix="ord")) == [1, 2, 4, 5, 6]
    assert event_ids(s.read_all_streams_forward(stream_prefix="ord%")) == [6]
    assert event_ids(s.read_all_streams_forward(stream_prefix="users_")) == [3]
    assert event_ids(s.read_all_streams_forward(stream_prefix="users%")) == []
    assert event_ids(s.read_all_streams_forward(stream_prefix="user__")) == []
    assert event_ids(s.read_all_streams_forward(stream_prefix="ORDERS")) == []  # case matters
    assert event_ids(s.read_all_streams_backward(stream_prefix="orders-2")) == [5, 4]
    assert event_ids(list(s.stream_all_backward(stream_prefix="o", read_batch_size=2))) == [
        6,
        5,
        4,
        2,
        1,
    ]


def test_filter_backslash_in_prefix(store: EventStore) -> None:
    store.append_to_stream("a\\b", 0, [EventData({}, "A")])
    store.append_to_stream("ab", 0, [EventData({}, "A")])
    assert event_ids(store.read_all_streams_forward(stream_prefix="a\\")) == [1]
    assert event_ids(store.read_all_streams_forward(stream_prefix="a\\b")) == [1]


def test_filters_combine_and_count_counts_events_returned(mixed: EventStore) -> None:
    s = mixed
    both = {"event_types": ["A"], "stream_prefix": "orders-"}
    assert event_ids(s.read_all_streams_forward(**both)) == [1, 5]
    assert event_ids(s.read_all_streams_forward(0, 1, **both)) == [1]
    assert event_ids(s.read_all_streams_forward(2, 1, **both)) == [5]
    assert event_ids(s.read_all_streams_backward(-1, 1, **both)) == [5]
    assert event_ids(s.read_all_streams_forward(0, 2, event_types=["B"])) == [2, 4]
    assert event_ids(s.read_all_streams_backward(-1, 2, event_types=["B"])) == [6, 4]


def test_stop_is_the_last_event_id_included(mixed: EventStore) -> None:
    s = mixed
    assert event_ids(s.read_all_streams_forward(stop=3)) == [1, 2, 3]
    assert event_ids(s.read_all_streams_forward(2, stop=2)) == [2]
    assert event_ids(s.read_all_streams_forward(4, stop=3)) == []
    assert event_ids(s.read_all_streams_forward(stop=0)) == []
    assert event_ids(s.read_all_streams_forward(stop=100)) == [1, 2, 3, 4, 5, 6]
    assert event_ids(s.read_all_streams_forward(stop=5, event_types=["B"])) == [2, 4]
    for batch in (1, 2, 1000):
        assert event_ids(list(s.stream_all_forward(read_batch_size=batch, stop=4))) == [1, 2, 3, 4]
    assert event_ids(list(s.stream_all_forward(stop=5, event_types=["A"], read_batch_size=1))) == [
        1,
        3,
        5,
    ]


def test_backward_reads_take_no_stop(store: EventStore) -> None:
    with pytest.raises(TypeError):
        store.read_all_streams_backward(stop=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        store.stream_all_backward(stop=3)  # type: ignore[call-arg]


# --- plans: the last 10 events of a large store are read without a scan --------------------------

_ALL_TYPES = {"low": "bigint", "high": "bigint", "count": "bigint"}
_STREAM_TYPES = {"stream_uuid": "text", "start": "bigint", "count": "bigint", "live_only": "bool"}


def _assert_index_only_path(node: dict[str, object], index: str) -> None:
    nodes = list(plan_nodes(node))  # type: ignore[arg-type]
    # The forget generation (schema v5) is read once per statement from its one-row table
    # (an InitPlan): a scan of it is the planner's choice.
    kinds = [n["Node Type"] for n in nodes if n.get("Relation Name") != "forget_generation"]
    assert "Seq Scan" not in kinds, kinds
    assert "Sort" not in kinds, kinds
    assert "Bitmap Heap Scan" not in kinds, kinds
    assert any(
        n.get("Index Name") == index and n.get("Scan Direction") == "Backward" for n in nodes
    ), nodes


@pytest.mark.parametrize("generic", [False, True], ids=["custom plan", "generic plan"])
def test_backward_read_of_the_last_events_uses_indexes_only(
    store: EventStore, dsn: str, schema: str, generic: bool
) -> None:
    """EXPLAIN of the store's own statements on a 50,000-event store with 10,000 links
    (ANALYZEd): the last 10 events of $all, of a stream and of a linking stream come from
    backward index range scans, no scan, no sort (so the cost does not grow with the store)."""
    bulk_streams(dsn, schema, streams=500, per_stream=100, links=100)
    params = {"low": 0, "high": reader.MAX_POSITION, "count": 10}
    query = reader.all_query(True, False, False)
    _assert_index_only_path(
        plan(dsn, schema, query, params, _ALL_TYPES, generic=generic), "events_pkey"
    )
    sparams = {"stream_uuid": "bulk-7", "start": reader.MAX_POSITION, "count": 10}
    sparams["live_only"] = True
    _assert_index_only_path(
        plan(dsn, schema, reader.stream_query(True), sparams, _STREAM_TYPES, generic=generic),
        "events_stream_version_key",
    )
    sparams["stream_uuid"] = "bulk-links-7"
    _assert_index_only_path(
        plan(dsn, schema, reader.stream_query(True), sparams, _STREAM_TYPES, generic=generic),
        "links_pkey",
    )
    # And the store answers from them.
    assert event_ids(store.read_all_streams_backward(-1, 10)) == list(range(50_000, 49_990, -1))
    assert versions(store.read_stream_backward("bulk-7", -1, 10)) == list(range(100, 90, -1))
    with sql(dsn, schema) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (50_000,)
    linked = store.read_stream_backward("bulk-links-7", -1, 10)
    assert numbers(linked) == list(range(100, 90, -1))
    assert {e.stream_uuid for e in linked} == {"bulk-7"}


def test_a_prefix_with_quotes_backslashes_and_accents_is_matched_as_written(
    store: EventStore,
) -> None:
    """The prefix's pattern is written into the statement as a quoted literal
    (storage/reader.py `_with_prefix`): nothing in it can end the literal or the statement."""
    names = ["o'brien-1", "back\\slash-1", "café-1", "pct%(x)s-1", "plain-1"]
    for name in names:
        store.append_to_stream(name, 0, [EventData({"a": 1}, "T")])
    for prefix, expected in [
        ("o'brien", ["o'brien-1"]),
        ("back\\slash", ["back\\slash-1"]),
        ("café", ["café-1"]),
        ("pct%(x)s", ["pct%(x)s-1"]),
        ("'; DELETE FROM streams; --", []),
    ]:
        forward = store.read_all_streams_forward(stream_prefix=prefix)
        assert [e.stream_uuid for e in forward] == expected, prefix
        backward = store.read_all_streams_backward(stream_prefix=prefix)
        assert [e.stream_uuid for e in backward] == expected[::-1], prefix
    assert len(store.read_all_streams_forward()) == len(names)
