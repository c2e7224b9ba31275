"""Retention and truncation (API.md part 3, "Retention and truncation"): per-stream
`max_count` / `max_age` and `truncate_stream`, effective on every read at once; the rows are
deleted later by the scavenger (tests/lifecycle/test_scavenger.py)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql
from support import Events, QueueSubscriber, checkpoint, wait_until
from support.factory import event_ids, make_events, new_stream, versions

from eventstore_actors import (
    ANY_VERSION,
    EventStore,
    StreamInfo,
    StreamNotFoundError,
    WrongExpectedVersionError,
)
from eventstore_actors.aio import AsyncEventStore
from eventstore_actors.lifecycle.retention import MAX_AGE


def rows(dsn: str, schema: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(pgsql.SQL("SET search_path TO {}").format(pgsql.Identifier(schema)))
        return conn.execute(query, args).fetchall()


def stream_of(store: EventStore, count: int, stream: str | None = None) -> str:
    stream = stream or new_stream()
    store.append_to_stream(stream, ANY_VERSION, make_events(count))
    return stream


def all_ids(store: EventStore) -> list[int]:
    return event_ids(store.read_all_streams_forward())


# --- truncate_stream ----------------------------------------------------------------------------
def test_truncate_hides_the_first_events_from_every_stream_read(store: EventStore) -> None:
    stream = stream_of(store, 10)
    assert store.truncate_stream(stream, 4) == 3
    assert versions(store.read_stream_forward(stream)) == list(range(4, 11))
    assert versions(store.read_stream_forward(stream, 2, 3)) == [4, 5, 6]
    assert versions(store.read_stream_backward(stream)) == list(range(10, 3, -1))
    assert versions(store.read_stream_backward(stream, 5, 10)) == [5, 4]
    assert versions(store.read_stream_backward(stream, 3)) == []
    assert versions(list(store.stream_forward(stream, read_batch_size=2))) == list(range(4, 11))
    assert versions(list(store.stream_backward(stream, read_batch_size=2))) == list(
        range(10, 3, -1)
    )


def test_truncate_returns_what_it_newly_hid_and_keeps_the_version(store: EventStore) -> None:
    stream = stream_of(store, 10)
    assert store.truncate_stream(stream, 6) == 5
    assert store.truncate_stream(stream, 6) == 0, "repeated: nothing new"
    assert store.truncate_stream(stream, 3) == 0, "lower: nothing new, nothing back"
    assert versions(store.read_stream_forward(stream)) == [6, 7, 8, 9, 10]
    assert store.truncate_stream(stream, 8) == 2
    info = store.stream_info(stream)
    assert (info.stream_version, info.first_version) == (10, 8)
    # Appends carry on from the version, and expected-version checks are unaffected.
    with pytest.raises(WrongExpectedVersionError):
        store.append_to_stream(stream, 2, make_events(1))
    result = store.append_to_stream(stream, 10, make_events(2))
    assert (result.first_version, result.last_version) == (11, 12)
    assert versions(store.read_stream_forward(stream)) == [8, 9, 10, 11, 12]


def test_truncating_every_event_leaves_an_existing_empty_stream(store: EventStore) -> None:
    stream = stream_of(store, 5)
    assert store.truncate_stream(stream, 6) == 5
    assert store.read_stream_forward(stream) == []
    assert store.read_stream_backward(stream) == []
    assert list(store.stream_forward(stream)) == []
    info = store.stream_info(stream)
    assert (info.stream_version, info.first_version, info.status) == (5, 6, "created")
    assert store.append_to_stream(stream, 5, make_events(1)).last_version == 6
    assert versions(store.read_stream_forward(stream)) == [6]


def test_all_reads_skip_hidden_events_leaving_gaps(store: EventStore) -> None:
    a = stream_of(store, 4)  # 1-4
    b = stream_of(store, 3)  # 5-7
    stream_of(store, 2, a)  # 8-9
    assert store.truncate_stream(a, 4) == 3  # hides 1-3
    assert all_ids(store) == [4, 5, 6, 7, 8, 9]
    assert event_ids(store.read_all_streams_backward()) == [9, 8, 7, 6, 5, 4]
    assert event_ids(store.read_all_streams_forward(0, 2)) == [4, 5]
    assert event_ids(list(store.stream_all_forward(read_batch_size=2))) == [4, 5, 6, 7, 8, 9]
    assert event_ids(store.read_all_streams_forward(stream_prefix=a)) == [4, 8, 9]
    # Closed ranges (a stop, a start below the last event) are other statements: same rule.
    assert event_ids(store.read_all_streams_forward(0, 10, stop=8)) == [4, 5, 6, 7, 8]
    assert event_ids(store.read_all_streams_backward(8)) == [8, 7, 6, 5, 4]
    assert store.stream_info("$all").stream_version == 9, "$all has no retention"
    assert store.truncate_stream(b, 3) == 2
    assert all_ids(store) == [4, 7, 8, 9]


# --- limits -------------------------------------------------------------------------------------
def test_max_count_keeps_the_last_events_as_the_stream_grows(store: EventStore) -> None:
    stream = stream_of(store, 5)
    store.set_stream_retention(stream, max_count=2)
    assert versions(store.read_stream_forward(stream)) == [4, 5]
    store.append_to_stream(stream, 5, make_events(2))
    assert versions(store.read_stream_forward(stream)) == [6, 7]
    assert versions(store.read_stream_backward(stream)) == [7, 6]
    assert [e.stream_version for e in store.read_all_streams_forward()] == [6, 7]
    info = store.stream_info(stream)
    assert (info.first_version, info.max_count, info.max_age) == (6, 2, None)
    store.set_stream_retention(stream, max_count=10)
    assert versions(store.read_stream_forward(stream)) == [6, 7], "nothing comes back"


def test_max_age_hides_events_older_than_it(store: EventStore) -> None:
    stream = stream_of(store, 3)
    store.set_stream_retention(stream, max_age=timedelta(days=1))
    assert versions(store.read_stream_forward(stream)) == [1, 2, 3]
    assert store.stream_info(stream).max_age == timedelta(days=1)
    store.set_stream_retention(stream, max_age=timedelta(milliseconds=300))
    wait_until(lambda: store.read_stream_forward(stream) == [], what="events aged out")
    assert all_ids(store) == []
    info = store.stream_info(stream)
    assert (info.stream_version, info.first_version) == (3, 4)
    store.append_to_stream(stream, 3, make_events(1))
    assert versions(store.read_stream_forward(stream)) == [4], "a new event is young"


def test_limits_set_to_none_stop_hiding_and_bring_nothing_back(store: EventStore) -> None:
    stream = stream_of(store, 5)
    store.set_stream_retention(stream, max_count=2)
    store.set_stream_retention(stream, max_count=None)
    assert versions(store.read_stream_forward(stream)) == [4, 5]
    store.append_to_stream(stream, 5, make_events(3))
    assert versions(store.read_stream_forward(stream)) == [4, 5, 6, 7, 8]
    info = store.stream_info(stream)
    assert (info.first_version, info.max_count, info.max_age) == (4, None, None)
    # The same with an age limit: what it hid stays hidden once it is lifted.
    store.set_stream_retention(stream, max_age=timedelta(milliseconds=200))
    wait_until(lambda: store.read_stream_forward(stream) == [], what="events aged out")
    store.set_stream_retention(stream)
    assert store.read_stream_forward(stream) == []
    assert store.stream_info(stream).first_version == 9


# --- bad input: nothing changes -----------------------------------------------------------------
def test_bad_input_is_refused_before_anything_changes(store: EventStore) -> None:
    stream = stream_of(store, 3)
    for bad in (0, -1):
        # The rule is stated as it is, whatever the value (-1 said ">= 0").
        with pytest.raises(ValueError, match=f"max_count must be >= 1, got {bad}"):
            store.set_stream_retention(stream, max_count=bad)
        with pytest.raises(ValueError, match=f"before_version must be >= 1, got {bad}"):
            store.truncate_stream(stream, bad)
    # Over 1,000 years: `now() - max_age` would leave PostgreSQL's dates (4713 BC) and fail
    # every read of the stream and of $all, with no way back through the API.
    for age in (timedelta(0), timedelta(seconds=-1), timedelta(days=3_650_000), timedelta.max):
        with pytest.raises(ValueError, match="max_age"):
            store.set_stream_retention(stream, max_age=age)
    with pytest.raises(ValueError, match="max_count"):  # the bad one refused, the good unused
        store.set_stream_retention(stream, max_count=0, max_age=timedelta(days=1))
    with pytest.raises(TypeError):
        store.set_stream_retention(stream, max_count="2")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.set_stream_retention(stream, max_age=60)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="before_version"):
        store.truncate_stream(stream, 5)
    with pytest.raises(ValueError, match="before_version"):
        store.truncate_stream(stream, 0)
    with pytest.raises(TypeError):
        store.truncate_stream(stream, "2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\$all"):
        store.truncate_stream("$all", 1)
    with pytest.raises(ValueError, match=r"\$all"):
        store.set_stream_retention("$all", max_count=1)
    with pytest.raises(StreamNotFoundError):
        store.truncate_stream("missing", 1)
    with pytest.raises(StreamNotFoundError):
        store.set_stream_retention("missing", max_count=1)
    info = store.stream_info(stream)
    assert (info.first_version, info.max_count, info.max_age) == (1, None, None)
    assert versions(store.read_stream_forward(stream)) == [1, 2, 3]
    store.set_stream_retention(stream, max_age=MAX_AGE)  # the longest allowed: all readable
    assert versions(store.read_stream_forward(stream)) == [1, 2, 3]
    assert [e.stream_version for e in store.read_all_streams_forward()] == [1, 2, 3]
    assert store.stream_info(stream).max_age == MAX_AGE
    assert store.truncate_stream(stream, 4) == 3, "version + 1 is allowed: hides all"


# --- links --------------------------------------------------------------------------------------
def test_links_to_hidden_events_are_hidden_in_the_linking_stream(store: EventStore) -> None:
    source = stream_of(store, 5)
    linking = new_stream()
    store.link_to_stream(linking, 0, [1, 2, 3, 4, 5])
    store.truncate_stream(source, 3)
    assert [e.event_number for e in store.read_stream_forward(linking)] == [3, 4, 5]
    assert [e.event_id for e in store.read_stream_forward(linking, 0, 2)] == [3, 4]
    assert [e.event_number for e in store.read_stream_backward(linking)] == [5, 4, 3]
    assert store.stream_info(linking).stream_version == 5


def test_a_linking_stream_truncates_its_own_positions(store: EventStore) -> None:
    source = stream_of(store, 3)
    linking = stream_of(store, 2)  # own events at positions 1-2 (event_ids 4-5)
    store.link_to_stream(linking, 2, [1, 2, 3])  # positions 3-5
    assert store.truncate_stream(linking, 4) == 3
    assert [e.event_number for e in store.read_stream_forward(linking)] == [4, 5]
    assert versions(store.read_stream_forward(source)) == [1, 2, 3], "the source keeps them"
    store.set_stream_retention(linking, max_count=1)
    assert [e.event_id for e in store.read_stream_forward(linking)] == [3]


# --- subscriptions ------------------------------------------------------------------------------
def test_all_streams_catch_up_skips_a_truncated_range(
    store: EventStore, dsn: str, schema: str
) -> None:
    a = stream_of(store, 50)  # 1-50
    stream_of(store, 5)  # 51-55
    store.truncate_stream(a, 49)  # hides 1-48
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_all_streams("catch-up", subscriber, max_size=2)
    subscriber.subscribed()
    got = subscriber.collect(sub, 7)
    assert event_ids(got) == [49, 50, 51, 52, 53, 54, 55]
    wait_until(lambda: checkpoint(dsn, schema, "$all", "catch-up") == 55, what="checkpoint 55")
    store.append_to_stream(a, 50, make_events(1))
    assert event_ids(subscriber.collect(sub, 1)) == [56]
    subscriber.nothing()


def test_stream_catch_up_starts_at_the_first_readable_version(
    store: EventStore, dsn: str, schema: str
) -> None:
    stream = stream_of(store, 20)
    store.set_stream_retention(stream, max_count=3)
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_stream(stream, "tail", subscriber, max_size=1)
    subscriber.subscribed()
    assert versions(subscriber.collect(sub, 3)) == [18, 19, 20]
    wait_until(lambda: checkpoint(dsn, schema, stream, "tail") == 20, what="checkpoint 20")
    store.append_to_stream(stream, 20, make_events(1))
    assert versions(subscriber.collect(sub, 1)) == [21]
    subscriber.nothing()


def test_consumer_groups_get_every_readable_event_once(store: EventStore) -> None:
    streams = [stream_of(store, 6, f"g-{n}") for n in range(6)]  # 36 events
    for stream in streams[:3]:
        store.truncate_stream(stream, 5)  # 4 of 6 hidden in three streams
    expected = {e.event_id for e in store.read_all_streams_forward()}
    assert len(expected) == 36 - 12
    subscriber = QueueSubscriber()
    store.subscribe_to_all_streams("group", subscriber, partitions=3)
    got: list[int] = []
    while len(got) < len(expected):
        message = subscriber.next()
        if not isinstance(message, Events):
            continue
        got.extend(e.event_id for e in message.events)
        message.subscription.ack(message.events)
    assert sorted(got) == sorted(expected)
    subscriber.nothing()


# --- stream info, pages, aio --------------------------------------------------------------------
def test_stream_info_and_pages_show_retention(store: EventStore) -> None:
    stream = stream_of(store, 4, "info-a")
    stream_of(store, 2, "info-b")
    store.set_stream_retention(stream, max_count=3, max_age=timedelta(hours=2))
    info = store.stream_info(stream)
    assert info == StreamInfo(stream, 4, info.created_at, None, "created", 2, 3, timedelta(hours=2))
    page = store.paginate_streams(search="info-")
    assert [(e.stream_uuid, e.first_version, e.max_count, e.max_age) for e in page.entries] == [
        (stream, 2, 3, timedelta(hours=2)),
        ("info-b", 1, None, None),
    ]
    assert store.stream_info("$all").first_version == 1


def test_async_store_sets_retention_and_truncates(dsn: str, schema: str) -> None:
    async def main() -> None:
        async with await AsyncEventStore.start(dsn, schema=schema) as store:
            await store.append_to_stream("aio", 0, make_events(5))
            assert await store.truncate_stream("aio", 3) == 2
            await store.set_stream_retention("aio", max_count=2)
            assert versions(await store.read_stream_forward("aio")) == [4, 5]
            with pytest.raises(ValueError):
                await store.truncate_stream("$all", 1)

    asyncio.run(main())


def test_status_shows_retention_settings(store: EventStore, dsn: str, schema: str) -> None:
    from eventstore_actors.status import status

    stream = stream_of(store, 4, "kept-short")
    store.set_stream_retention(stream, max_count=2, max_age=timedelta(days=30))
    stream_of(store, 1, "no-limits")
    text = status(dsn, schema)
    assert "1 streams with retention" in text
    line = next(line for line in text.splitlines() if "kept-short" in line)
    assert "max_count 2" in line and "max_age 30d" in line and "first_version 3" in line
    report = json.loads(status(dsn, schema, as_json=True))
    assert report["retention"] == {
        "streams": 1,
        "shown": [
            {
                "stream_uuid": "kept-short",
                "first_version": 3,
                "max_count": 2,
                "max_age_seconds": 30 * 86400.0,
            }
        ],
    }
    assert rows(dsn, schema, "SELECT count(*) FROM streams") == [(2,)]
