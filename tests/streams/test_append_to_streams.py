"""append_to_streams: several streams, all or nothing, contiguous ids, in group commit.

Ported from the Elixir suite (test/append_to_streams_test.exs). Its `link_to:` cases are not
part of this contract (links are `link_to_stream`); its "same stream twice" cases become
ValueError here, as the contract says.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from psycopg import sql
from support import QueueSubscriber
from support.factory import make_events, new_stream

from eventstore_actors import (
    ANY_VERSION,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    CannotAppendToAllStreamError,
    DuplicateEventError,
    EventData,
    EventStore,
    RecordedEvent,
    StreamAppend,
    StreamDeletedError,
    StreamExistsError,
    StreamNotFoundError,
    WrongExpectedVersionError,
)

TIMEOUT = 60.0
SIZES = pytest.mark.parametrize("size", [2, 40], ids=["function", "copy"])


def evs(count: int, given: bool = False) -> list[EventData]:
    return [
        EventData({"n": n}, "tests.Multi", event_uuid=uuid.uuid4() if given else None)
        for n in range(count)
    ]


def everything(store: EventStore) -> list[RecordedEvent]:
    return store.read_all_streams_forward(0, 1_000_000)


# --- ported: test/append_to_streams_test.exs ------------------------------------------------


def test_append_events_to_multiple_new_streams(store: EventStore) -> None:
    s1, s2 = new_stream(), new_stream()
    results = store.append_to_streams(
        [
            StreamAppend(s1, ANY_VERSION, make_events(2)),
            StreamAppend(s2, ANY_VERSION, make_events(3)),
        ]
    )
    assert results == [AppendResult(s1, 1, 2, 1, 2), AppendResult(s2, 1, 3, 3, 5)]
    assert [e.stream_version for e in store.read_stream_forward(s1)] == [1, 2]
    assert [e.stream_version for e in store.read_stream_forward(s2)] == [1, 2, 3]


def test_all_stream_receives_all_events_in_order(store: EventStore) -> None:
    s1, s2 = new_stream(), new_stream()
    store.append_to_streams(
        [
            StreamAppend(s1, ANY_VERSION, make_events(2)),
            StreamAppend(s2, ANY_VERSION, make_events(3)),
        ]
    )
    events = store.read_all_streams_forward()
    assert [e.event_number for e in events] == [1, 2, 3, 4, 5]
    assert [e.stream_uuid for e in events] == [s1, s1, s2, s2, s2]


def test_expected_version_validation_for_existing_stream(store: EventStore) -> None:
    stream = new_stream()
    store.append_to_stream(stream, 0, make_events(2))
    assert store.append_to_streams([StreamAppend(stream, 2, make_events(3))]) == [
        AppendResult(stream, 3, 5, 3, 5)
    ]
    assert len(store.read_stream_forward(stream)) == 5


def test_wrong_expected_version_identifies_the_stream(store: EventStore) -> None:
    stream = new_stream()
    store.append_to_stream(stream, 0, make_events(2))
    with pytest.raises(WrongExpectedVersionError) as info:
        store.append_to_streams([StreamAppend(stream, 5, make_events(1))])
    assert (info.value.stream_uuid, info.value.expected_version, info.value.actual_version) == (
        stream,
        5,
        2,
    )


@SIZES
def test_atomicity_rollback_identifies_the_failing_stream(store: EventStore, size: int) -> None:
    s1, s2 = new_stream(), new_stream()
    store.append_to_stream(s2, 0, make_events(2))
    with pytest.raises(WrongExpectedVersionError) as info:
        store.append_to_streams(
            [StreamAppend(s1, ANY_VERSION, evs(size)), StreamAppend(s2, 5, evs(size))]
        )
    assert info.value.stream_uuid == s2
    with pytest.raises(StreamNotFoundError):
        store.read_stream_forward(s1)
    assert len(everything(store)) == 2
    # The counter did not move: the next append gets the next id.
    assert store.append_to_stream(s1, 0, evs(1)) == AppendResult(s1, 1, 1, 3, 3)


def test_rejects_all_stream(store: EventStore) -> None:
    with pytest.raises(CannotAppendToAllStreamError):
        store.append_to_streams([StreamAppend("$all", ANY_VERSION, make_events(1))])
    with pytest.raises(CannotAppendToAllStreamError):
        store.append_to_streams(
            [StreamAppend(new_stream(), 0, make_events(1)), StreamAppend("$all", 0, make_events(1))]
        )
    assert everything(store) == []


@pytest.mark.parametrize("second", [ANY_VERSION, 2, 0])
def test_same_stream_twice_is_refused(store: EventStore, second: Any) -> None:
    stream = new_stream()
    with pytest.raises(ValueError, match="twice"):
        store.append_to_streams(
            [
                StreamAppend(stream, ANY_VERSION, make_events(2)),
                StreamAppend(stream, second, make_events(1)),
            ]
        )
    assert everything(store) == []


def test_append_single_event_to_single_stream(store: EventStore) -> None:
    stream = new_stream()
    assert store.append_to_streams([StreamAppend(stream, ANY_VERSION, make_events(1))]) == [
        AppendResult(stream, 1, 1, 1, 1)
    ]
    assert [e.stream_version for e in store.read_stream_forward(stream)] == [1]


def test_mixed_new_and_existing_streams(store: EventStore) -> None:
    existing, new = new_stream(), new_stream()
    store.append_to_stream(existing, 0, make_events(3))
    results = store.append_to_streams(
        [StreamAppend(existing, 3, make_events(2)), StreamAppend(new, ANY_VERSION, make_events(2))]
    )
    assert results == [AppendResult(existing, 4, 5, 4, 5), AppendResult(new, 1, 2, 6, 7)]
    assert len(store.read_stream_forward(existing)) == 5
    assert len(store.read_stream_forward(new)) == 2


def test_subscribers_receive_the_events(store: EventStore) -> None:
    s1, s2 = new_stream(), new_stream()
    all_sub, one_sub = QueueSubscriber(), QueueSubscriber()
    h_all = store.subscribe_to_all_streams("all", all_sub)
    h_one = store.subscribe_to_stream(s2, "one", one_sub)
    all_sub.subscribed()
    one_sub.subscribed()
    store.append_to_streams(
        [StreamAppend(s1, ANY_VERSION, evs(2)), StreamAppend(s2, ANY_VERSION, evs(1))]
    )
    got = all_sub.collect(h_all, 3)
    assert [(e.stream_uuid, e.event_id) for e in got] == [(s1, 1), (s1, 2), (s2, 3)]
    assert [e.event_id for e in one_sub.collect(h_one, 1)] == [3]


# --- the contract's further rules -----------------------------------------------------------


@SIZES
def test_each_stream_checked_against_its_own_expected_version(
    store: EventStore, dsn: str, schema: str, size: int
) -> None:
    a, b, gone = new_stream(), new_stream(), new_stream()
    store.append_to_stream(a, 0, evs(1))
    store.append_to_stream(gone, 0, evs(1))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("UPDATE {}.streams SET deleted_at = now() WHERE stream_uuid = %s").format(
                sql.Identifier(schema)
            ),
            (gone,),
        )
    cases: list[tuple[list[StreamAppend], type[Exception], str]] = [
        (
            [StreamAppend(b, STREAM_EXISTS, evs(size)), StreamAppend(a, 1, evs(size))],
            StreamNotFoundError,
            b,
        ),
        (
            [StreamAppend(b, 0, evs(size)), StreamAppend(a, NO_STREAM, evs(size))],
            StreamExistsError,
            a,
        ),
        (
            [StreamAppend(b, 0, evs(size)), StreamAppend(gone, ANY_VERSION, evs(size))],
            StreamDeletedError,
            gone,
        ),
        (
            [StreamAppend(a, 7, evs(size)), StreamAppend(b, 3, evs(size))],
            WrongExpectedVersionError,
            a,
        ),
    ]
    for appends, error, culprit in cases:
        with pytest.raises(error) as info:
            store.append_to_streams(appends)
        assert type(info.value) is error
        assert info.value.stream_uuid == culprit  # type: ignore[attr-defined]
    assert len(everything(store)) == 2
    with pytest.raises(StreamNotFoundError):
        store.read_stream_forward(b)


@SIZES
def test_idempotent_retry_of_a_multi_stream_append(store: EventStore, size: int) -> None:
    a, b = new_stream(), new_stream()
    appends = [StreamAppend(a, 0, evs(size, True)), StreamAppend(b, NO_STREAM, evs(size, True))]
    first = store.append_to_streams(appends)
    store.append_to_stream(a, ANY_VERSION, evs(1))
    assert store.append_to_streams(appends) == first
    assert len(everything(store)) == 2 * size + 1
    # Half of it stored (one stream's events, the other's new): a duplicate, nothing written.
    with pytest.raises(DuplicateEventError):
        store.append_to_streams([appends[0], StreamAppend(new_stream(), 0, evs(size, True))])
    assert len(everything(store)) == 2 * size + 1


@SIZES
def test_concurrent_multi_stream_appends_fail_alone_in_a_group(
    store: EventStore, size: int
) -> None:
    """Many callers at once (their appends share group commits): each multi-stream append is
    one unit; those that fail write nothing, the others all commit with contiguous ids."""
    callers = 24
    streams = [(new_stream(), new_stream()) for _ in range(callers)]
    barrier = threading.Barrier(callers, timeout=TIMEOUT)

    def run(i: int) -> Any:
        a, b = streams[i]
        bad = i % 3 == 0
        appends = [StreamAppend(a, 0, evs(size)), StreamAppend(b, 5 if bad else 0, evs(size))]
        barrier.wait()
        try:
            return store.append_to_streams(appends)
        except WrongExpectedVersionError as exc:
            return exc

    with ThreadPoolExecutor(callers) as pool:
        results = list(pool.map(run, range(callers)))
    for i, result in enumerate(results):
        a, b = streams[i]
        if i % 3 == 0:
            assert isinstance(result, WrongExpectedVersionError) and result.stream_uuid == b
            with pytest.raises(StreamNotFoundError):
                store.read_stream_forward(a)
        else:
            ra, rb = result
            assert rb.first_event_id == ra.last_event_id + 1  # contiguous over the call
            assert [e.event_id for e in store.read_stream_forward(a, 0, 1000)] == list(
                range(ra.first_event_id, ra.last_event_id + 1)
            )
    events = everything(store)
    assert [e.event_id for e in events] == list(range(1, len(events) + 1))
    assert len(events) == (callers - callers // 3) * 2 * size


def test_concurrent_any_version_multi_stream_appends_to_shared_streams(store: EventStore) -> None:
    a, b = new_stream(), new_stream()
    writers, rounds = 8, 10
    barrier = threading.Barrier(writers, timeout=TIMEOUT)

    def run(_: int) -> None:
        barrier.wait()
        for _ in range(rounds):
            store.append_to_streams(
                [StreamAppend(a, ANY_VERSION, evs(2)), StreamAppend(b, ANY_VERSION, evs(1))]
            )

    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(run, range(writers)))
    assert [e.stream_version for e in store.read_stream_forward(a, 0, 1000)] == list(
        range(1, 2 * writers * rounds + 1)
    )
    assert [e.stream_version for e in store.read_stream_forward(b, 0, 1000)] == list(
        range(1, writers * rounds + 1)
    )
    events = everything(store)
    assert [e.event_id for e in events] == list(range(1, 3 * writers * rounds + 1))
    # Each call's three events are contiguous: a, a, b.
    assert [e.stream_uuid for e in events] == [a, a, b] * (writers * rounds)


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("appends", "error"),
    [
        ("not a list", TypeError),
        (None, TypeError),
        ({"s": 1}, TypeError),
        ([("s", 0, [])], TypeError),
        ([StreamAppend("s", 0, [])], ValueError),
        ([StreamAppend("", 0, evs(1))], ValueError),
        ([StreamAppend(1, 0, evs(1))], TypeError),  # type: ignore[arg-type]
        ([StreamAppend("s", -1, evs(1))], ValueError),
        ([StreamAppend("s", "any", evs(1))], TypeError),  # type: ignore[arg-type]
        ([StreamAppend("s", 0, "events")], TypeError),  # type: ignore[arg-type]
        ([StreamAppend("s", 0, [object()])], TypeError),  # type: ignore[list-item]
        (
            [
                StreamAppend("s", 0, evs(1)),
                StreamAppend("t", 0, [EventData({}, "t", event_uuid=1)]),
            ],
            TypeError,
        ),  # type: ignore[arg-type]
    ],
)
def test_bad_input_writes_nothing(store: EventStore, appends: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        store.append_to_streams(appends)
    assert everything(store) == []


def test_same_uuid_in_two_streams_of_one_call(store: EventStore) -> None:
    same = uuid.uuid4()
    with pytest.raises(ValueError, match="event_uuid"):
        store.append_to_streams(
            [
                StreamAppend("s", 0, [EventData({}, "t", event_uuid=same)]),
                StreamAppend("t", 0, [EventData({}, "t", event_uuid=same)]),
            ]
        )
    assert everything(store) == []


def test_empty_call_returns_an_empty_list(store: EventStore) -> None:
    assert store.append_to_streams([]) == []
    assert everything(store) == []
