"""Appends, version 2: expected-version sentinels, AppendResult, event UUIDs, idempotent retries.

Ported from the Elixir suite (test/append_to_stream_test.exs: `:any_version`, `:no_stream`,
`:stream_exists`, many events) and extended to the contract's full outcome table, which every
write path must honour: the one-statement path (store-assigned UUIDs, one stream, up to 64
events), append_events_v2 (caller-given UUIDs, or several appends grouped) and COPY (more
than 64 events in a group).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from support import QueueSubscriber
from support.factory import make_events, new_stream

import eventstore_actors
from eventstore_actors import (
    ANY_VERSION,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    DuplicateEventError,
    EventData,
    EventStore,
    ExpectedVersion,
    RecordedEvent,
    StreamAppend,
    StreamDeletedError,
    StreamExistsError,
    StreamNotFoundError,
    WrongExpectedVersionError,
)

TIMEOUT = 60.0

#: The write paths: (event count, whether the caller gives event UUIDs).
PATHS = pytest.mark.parametrize(
    ("size", "given"),
    [(2, False), (2, True), (70, False), (70, True)],
    ids=["statement", "function", "copy", "copy-given"],
)


def evs(count: int, given: bool = False, start: int = 1) -> list[EventData]:
    return [
        EventData(
            data={"n": n},
            event_type="tests.V2",
            event_uuid=uuid.uuid4() if given else None,
        )
        for n in range(start, start + count)
    ]


def everything(store: EventStore) -> list[RecordedEvent]:
    return store.read_all_streams_forward(0, 1_000_000)


def soft_delete(dsn: str, schema: str, stream: str) -> None:
    """Mark a stream deleted the way the delete feature does (streams.deleted_at)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("UPDATE {}.streams SET deleted_at = now() WHERE stream_uuid = %s").format(
                sql.Identifier(schema)
            ),
            (stream,),
        )


# --- ported: test/append_to_stream_test.exs -------------------------------------------------


def test_append_to_new_stream_using_any_version(store: EventStore) -> None:
    stream = new_stream()
    store.append_to_stream(stream, ANY_VERSION, make_events(3))
    assert len(store.read_stream_forward(stream)) == 3


def test_append_to_existing_stream_using_any_version(store: EventStore) -> None:
    stream = new_stream()
    store.append_to_stream(stream, 0, make_events(3))
    store.append_to_stream(stream, ANY_VERSION, make_events(1))
    assert [e.stream_version for e in store.read_stream_forward(stream)] == [1, 2, 3, 4]


def test_append_to_new_stream_using_no_stream(store: EventStore) -> None:
    stream = new_stream()
    store.append_to_stream(stream, NO_STREAM, make_events(3))
    assert len(store.read_stream_forward(stream)) == 3


def test_append_to_existing_stream_using_no_stream(store: EventStore) -> None:
    stream = new_stream()
    store.append_to_stream(stream, 0, make_events(3))
    with pytest.raises(StreamExistsError) as info:
        store.append_to_stream(stream, NO_STREAM, make_events(1))
    assert isinstance(info.value, WrongExpectedVersionError)
    assert info.value.expected_version is NO_STREAM
    assert info.value.actual_version == 3


def test_append_to_new_stream_using_stream_exists(store: EventStore) -> None:
    stream = new_stream()
    with pytest.raises(StreamNotFoundError):
        store.append_to_stream(stream, STREAM_EXISTS, make_events(3))
    with pytest.raises(StreamNotFoundError):
        store.read_stream_forward(stream)


def test_append_to_existing_stream_using_stream_exists(store: EventStore) -> None:
    stream = new_stream()
    store.append_to_stream(stream, 0, make_events(3))
    store.append_to_stream(stream, STREAM_EXISTS, make_events(1))
    assert len(store.read_stream_forward(stream)) == 4


def test_append_many_events_to_a_stream(store: EventStore) -> None:
    stream = new_stream()
    result = store.append_to_stream(stream, 0, make_events(8_001))
    assert result == AppendResult(stream, 1, 8_001, 1, 8_001)
    assert [e.event_number for e in store.stream_all_forward()] == list(range(1, 8_002))


# --- the full outcome table, on every write path --------------------------------------------

MISSING, AT_3, DELETED = "missing", "at version 3", "soft-deleted"
OK = None
TABLE: list[tuple[str, int | ExpectedVersion, type[Exception] | None]] = [
    (MISSING, 0, OK),
    (MISSING, 2, WrongExpectedVersionError),
    (MISSING, NO_STREAM, OK),
    (MISSING, STREAM_EXISTS, StreamNotFoundError),
    (MISSING, ANY_VERSION, OK),
    (AT_3, 0, WrongExpectedVersionError),
    (AT_3, 3, OK),
    (AT_3, 2, WrongExpectedVersionError),
    (AT_3, 5, WrongExpectedVersionError),
    (AT_3, NO_STREAM, StreamExistsError),
    (AT_3, STREAM_EXISTS, OK),
    (AT_3, ANY_VERSION, OK),
    *((DELETED, e, StreamDeletedError) for e in (0, 3, 5, NO_STREAM, STREAM_EXISTS, ANY_VERSION)),
]


@PATHS
@pytest.mark.parametrize(
    ("state", "expected", "error"), TABLE, ids=[f"{s}-{e!r}" for s, e, _ in TABLE]
)
def test_outcome_table(
    store: EventStore,
    dsn: str,
    schema: str,
    state: str,
    expected: int | ExpectedVersion,
    error: type[Exception] | None,
    size: int,
    given: bool,
) -> None:
    stream = new_stream()
    if state != MISSING:
        store.append_to_stream(stream, 0, evs(3))
    if state == DELETED:
        soft_delete(dsn, schema, stream)
    before = everything(store)

    if error is None:
        result = store.append_to_stream(stream, expected, evs(size, given))
        base = 0 if state == MISSING else 3
        first_id = len(before) + 1
        assert result == AppendResult(stream, base + 1, base + size, first_id, first_id + size - 1)
        assert [e.stream_version for e in store.read_stream_forward(stream, 0, 10_000)] == list(
            range(1, base + size + 1)
        )
        return
    with pytest.raises(error) as info:
        store.append_to_stream(stream, expected, evs(size, given))
    assert type(info.value) is error
    assert getattr(info.value, "stream_uuid", None) == stream
    if isinstance(info.value, WrongExpectedVersionError):
        assert info.value.expected_version == expected
        assert info.value.actual_version == (None if state == MISSING else 3)
    assert everything(store) == before  # nothing written
    if state == MISSING:
        with pytest.raises(StreamNotFoundError):
            store.read_stream_forward(stream)  # not even an empty stream row


def test_wrong_expected_version_error_keeps_the_sentinel(store: EventStore) -> None:
    stream = new_stream()
    store.append_to_stream(stream, 0, evs(2))
    with pytest.raises(StreamExistsError) as info:
        store.append_to_stream(stream, NO_STREAM, evs(1))
    assert (info.value.stream_uuid, info.value.expected_version, info.value.actual_version) == (
        stream,
        NO_STREAM,
        2,
    )
    assert "NO_STREAM" in str(info.value)


@pytest.mark.parametrize("size", [2, 70], ids=["group", "copy"])
def test_grouped_appends_each_checked_on_its_own(
    store: EventStore, dsn: str, schema: str, size: int
) -> None:
    """Appends taken in one group commit: each gets its own outcome from the table."""
    existing, deleted = new_stream(), new_stream()
    store.append_to_stream(existing, 0, evs(3))
    store.append_to_stream(deleted, 0, evs(1))
    soft_delete(dsn, schema, deleted)
    cases: list[tuple[str, int | ExpectedVersion, type[Exception] | None]] = [
        (existing, NO_STREAM, StreamExistsError),
        (existing, ANY_VERSION, None),
        (new_stream(), STREAM_EXISTS, StreamNotFoundError),
        (deleted, ANY_VERSION, StreamDeletedError),
        (new_stream(), ANY_VERSION, None),
        (existing, 1, WrongExpectedVersionError),
    ] * 4
    barrier = threading.Barrier(len(cases), timeout=TIMEOUT)

    def run(case: tuple[str, int | ExpectedVersion, type[Exception] | None]) -> Any:
        barrier.wait()
        try:
            return store.append_to_stream(case[0], case[1], evs(size))
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(len(cases)) as pool:
        results = list(pool.map(run, cases))
    for (_, _, error), result in zip(cases, results, strict=True):
        if error is None:
            assert isinstance(result, AppendResult), repr(result)
        else:
            assert type(result) is error, repr(result)
    events = everything(store)
    assert [e.event_id for e in events] == list(range(1, len(events) + 1))
    assert len(events) == 4 + size * 4 * 2
    assert [e.stream_version for e in store.read_stream_forward(existing, 0, 10_000)] == list(
        range(1, 3 + 4 * size + 1)
    )


# --- AppendResult ---------------------------------------------------------------------------


@PATHS
def test_append_result(store: EventStore, size: int, given: bool) -> None:
    a, b = new_stream(), new_stream()
    assert store.append_to_stream(a, 0, evs(size, given)) == AppendResult(a, 1, size, 1, size)
    assert store.append_to_stream(b, ANY_VERSION, evs(1)) == AppendResult(
        b, 1, 1, size + 1, size + 1
    )
    assert store.append_to_stream(a, size, evs(size, given)) == AppendResult(
        a, size + 1, 2 * size, size + 2, 2 * size + 1
    )


def test_empty_append_returns_none_and_creates_nothing(store: EventStore) -> None:
    stream = new_stream()
    for expected in (0, NO_STREAM, ANY_VERSION, STREAM_EXISTS, 7):
        assert store.append_to_stream(stream, expected, []) is None
    with pytest.raises(StreamNotFoundError):
        store.read_stream_forward(stream)


# --- event UUIDs ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [2, 70], ids=["statement", "copy"])
def test_event_uuids_are_assigned_time_ordered_and_read_back(store: EventStore, size: int) -> None:
    stream = new_stream()
    sub = QueueSubscriber()
    handle = store.subscribe_to_all_streams("uuids", sub)
    sub.subscribed()
    given = uuid.uuid4()
    store.append_to_stream(stream, 0, [EventData({"n": 0}, "tests.V2", event_uuid=given)])
    store.append_to_stream(stream, 1, evs(size))

    read = store.read_stream_forward(stream, 0, 1000)
    uuids = [e.event_uuid for e in read]
    assert uuids[0] == given
    assert len(set(uuids)) == len(uuids)
    assert all(u.version == 7 for u in uuids[1:])  # time-ordered UUIDs (UUIDv7 layout)
    assert [e.event_uuid for e in store.read_all_streams_forward()] == uuids
    assert [e.event_uuid for e in store.stream_forward(stream, 0, 7)] == uuids
    delivered = sub.collect(handle, len(uuids))
    assert [e.event_uuid for e in delivered] == uuids


def test_event_uuid_is_unique_in_the_store_not_per_stream(store: EventStore) -> None:
    shared = uuid.uuid4()
    store.append_to_stream(new_stream(), 0, [EventData({}, "t", event_uuid=shared)])
    with pytest.raises(DuplicateEventError):
        store.append_to_stream(new_stream(), 0, [EventData({}, "t", event_uuid=shared)])
    assert len(everything(store)) == 1


# --- idempotent retries ---------------------------------------------------------------------


@PATHS
def test_retry_with_the_same_uuids_writes_nothing_and_returns_the_first_result(
    store: EventStore, size: int, given: bool
) -> None:
    del given  # a retry needs caller-given UUIDs on every path
    stream = new_stream()
    events = evs(size, given=True)
    first = store.append_to_stream(stream, 0, events)
    # The first call's outcome was unknown to its caller (say StoreUnavailableError with
    # outcome_unknown): it retries, with the same expected version or any other.
    store.append_to_stream(new_stream(), 0, evs(1))
    for expected in (0, NO_STREAM, size, 12345, ANY_VERSION, STREAM_EXISTS):
        assert store.append_to_stream(stream, expected, events) == first
    assert len(everything(store)) == size + 1
    assert len(store.read_stream_forward(stream, 0, 1000)) == size


def _changed(event: EventData, what: str) -> EventData:
    """`event` with the same event_uuid and one thing changed."""
    if what == "event_type":
        return dataclasses.replace(event, event_type="tests.Other")
    if what == "data":
        return dataclasses.replace(event, data={"n": -1})
    return dataclasses.replace(event, metadata={"changed": True})


@pytest.mark.parametrize("what", ["event_type", "data", "metadata"])
@pytest.mark.parametrize("via", ["writer", "conn"])
@pytest.mark.parametrize("size", [3, 70], ids=["function", "copy"])
def test_a_retry_with_another_event_under_a_stored_uuid_is_a_duplicate(
    store: EventStore, dsn: str, size: int, via: str, what: str
) -> None:
    """Item 17 of issue 17 (part 3, "Idempotency compares the event")."""
    stream = new_stream()
    events = evs(size, given=True)
    first = store.append_to_stream(stream, 0, events)
    before = everything(store)
    changed = [*events[:-1], _changed(events[-1], what)]

    def append(batch: list[EventData]) -> Any:
        if via == "writer":
            return store.append_to_stream(stream, ANY_VERSION, batch)
        with psycopg.connect(dsn) as conn:
            return store.append_to_stream(stream, ANY_VERSION, batch, conn=conn)

    with pytest.raises(DuplicateEventError, match="used for a different event"):
        append(changed)
    assert everything(store) == before
    assert append(events) == first  # an identical retry still returns the earlier result
    assert everything(store) == before


def test_a_changed_retry_in_append_to_streams_writes_nothing(store: EventStore) -> None:
    a, b = new_stream(), new_stream()
    ea, eb = evs(2, given=True), evs(2, given=True)
    first = store.append_to_streams([StreamAppend(a, 0, ea), StreamAppend(b, 0, eb)])
    before = everything(store)
    with pytest.raises(DuplicateEventError, match="used for a different event"):
        store.append_to_streams(
            [StreamAppend(a, 2, ea), StreamAppend(b, 2, [eb[0], _changed(eb[1], "data")])]
        )
    assert everything(store) == before
    assert store.append_to_streams([StreamAppend(a, 2, ea), StreamAppend(b, 2, eb)]) == first


def test_retry_after_later_appends_to_the_stream(store: EventStore) -> None:
    stream = new_stream()
    events = evs(3, given=True)
    store.append_to_stream(stream, 0, evs(2))
    first = store.append_to_stream(stream, 2, events)
    store.append_to_stream(stream, 5, evs(2))
    assert store.append_to_stream(stream, 2, events) == first == AppendResult(stream, 3, 5, 3, 5)
    assert len(everything(store)) == 7


@pytest.mark.parametrize("size", [3, 70], ids=["function", "copy"])
def test_partial_or_misplaced_retries_are_duplicates(store: EventStore, size: int) -> None:
    stream, other = new_stream(), new_stream()
    events = evs(size, given=True)
    store.append_to_stream(stream, 0, events)
    before = everything(store)
    attempts: list[tuple[str, int | ExpectedVersion, list[EventData]]] = [
        (stream, size, [*events, *evs(1, given=True)]),  # some stored, one new
        (stream, size, list(reversed(events))),  # same events, other order
        (other, 0, events),  # stored in another stream
        (stream, size, [*evs(1, given=False), *events]),  # a store-assigned one before them
    ]
    for target, expected, batch in attempts:
        with pytest.raises(DuplicateEventError):
            store.append_to_stream(target, expected, batch)
    assert everything(store) == before
    # A consecutive run of the stored events, in order, is a call whose every event is
    # stored in that stream consecutively and in order: the contract's replay.
    part = store.append_to_stream(stream, ANY_VERSION, events[1:])
    assert part == AppendResult(stream, 2, size, 2, size)
    assert everything(store) == before


def test_duplicate_uuids_within_one_call_are_refused_up_front(store: EventStore) -> None:
    same = uuid.uuid4()
    stream = new_stream()
    with pytest.raises(ValueError, match="event_uuid"):
        store.append_to_stream(
            stream, 0, [EventData({}, "t", event_uuid=same), EventData({}, "t", event_uuid=same)]
        )
    assert everything(store) == []


@pytest.mark.parametrize("size", [3, 70], ids=["function", "copy"])
def test_concurrent_retries_store_once(store: EventStore, size: int) -> None:
    """A retry racing with the original (or with other retries): one copy, one result."""
    stream = new_stream()
    events = evs(size, given=True)
    barrier = threading.Barrier(8, timeout=TIMEOUT)

    def run(expected: int | ExpectedVersion) -> Any:
        barrier.wait()
        return store.append_to_stream(stream, expected, events)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(run, [0, ANY_VERSION, NO_STREAM, 0] * 2))
    assert results == [AppendResult(stream, 1, size, 1, size)] * 8
    assert len(everything(store)) == size


def test_retry_after_an_unknown_outcome(store: EventStore, dsn: str, schema: str) -> None:
    """The writer's connection dies after COMMIT was sent (simulated: the append commits and
    its caller is told nothing); the caller's retry with the same UUIDs is safe."""
    stream = new_stream()
    events = evs(3, given=True)
    store.append_to_stream(stream, 0, evs(1))
    # What the lost commit did: the same events, committed by the writer.
    committed = store.append_to_stream(stream, 1, events)
    assert committed is not None
    # The caller, told StoreUnavailableError(outcome_unknown=True), retries as it was.
    retried = store.append_to_stream(stream, 1, events)
    assert retried == committed
    assert len(store.read_stream_forward(stream)) == 4


# --- concurrency ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 70], ids=["small", "copy"])
def test_concurrent_any_version_appends_get_every_version_in_commit_order(
    store: EventStore, size: int
) -> None:
    stream = new_stream()
    writers, rounds = 10, 6 if size > 1 else 20
    barrier = threading.Barrier(writers, timeout=TIMEOUT)

    def run(writer: int) -> list[AppendResult]:
        barrier.wait()
        out = []
        for i in range(rounds):
            result = store.append_to_stream(
                stream, ANY_VERSION, [EventData({"w": writer, "i": i}, "t")] * size
            )
            assert result is not None
            out.append(result)
        return out

    with ThreadPoolExecutor(writers) as pool:
        results = [r for rs in pool.map(run, range(writers)) for r in rs]
    events = store.read_stream_forward(stream, 0, 100_000)
    total = writers * rounds * size
    assert [e.stream_version for e in events] == list(range(1, total + 1))
    # Commit order: stream versions follow event_ids (one stream, gap-free ids).
    assert [e.event_id for e in events] == list(range(1, total + 1))
    spans = sorted((r.first_version, r.last_version) for r in results)
    assert spans == [(1 + i * size, (i + 1) * size) for i in range(writers * rounds)]
    for r in results:
        assert r.last_event_id - r.first_event_id == size - 1


_CHILD = """
import sys
import structlog
from eventstore_actors import ANY_VERSION, EventData, EventStore
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
dsn, schema, stream, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
with EventStore.start(dsn, schema=schema) as store:
    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(count):
        store.append_to_stream(stream, ANY_VERSION, [EventData({"child": i}, "t")])
print("done", flush=True)
"""


def test_any_version_from_two_processes(store: EventStore, dsn: str, schema: str) -> None:
    stream = new_stream()
    count = 150
    env = dict(os.environ)
    root = str(Path(eventstore_actors.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, dsn, schema, stream, str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready"
        proc.stdin.write("go\n")
        proc.stdin.flush()
        for i in range(count):
            store.append_to_stream(stream, ANY_VERSION, [EventData({"parent": i}, "t")])
        assert proc.stdout.readline().strip() == "done"
        assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events = store.read_stream_forward(stream, 0, 10_000)
    assert [e.stream_version for e in events] == list(range(1, 2 * count + 1))
    assert [e.event_id for e in events] == list(range(1, 2 * count + 1))
    assert sorted(e.data.get("parent", -1) for e in events)[count:] == list(range(count))


def test_concurrent_no_stream_has_one_winner(store: EventStore) -> None:
    stream = new_stream()
    barrier = threading.Barrier(10, timeout=TIMEOUT)

    def run(_: int) -> Any:
        barrier.wait()
        try:
            return store.append_to_stream(stream, NO_STREAM, evs(2))
        except StreamExistsError as exc:
            return exc

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(run, range(10)))
    assert sum(isinstance(r, AppendResult) for r in results) == 1
    assert sum(isinstance(r, StreamExistsError) for r in results) == 9
    assert len(store.read_stream_forward(stream)) == 2


# --- bad input ------------------------------------------------------------------------------

BadCall = Callable[[EventStore, str], Any]


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda s, st: s.append_to_stream(st, "0", evs(1)), TypeError),
        (lambda s, st: s.append_to_stream(st, 1.0, evs(1)), TypeError),
        (lambda s, st: s.append_to_stream(st, True, evs(1)), TypeError),
        (lambda s, st: s.append_to_stream(st, None, evs(1)), TypeError),
        (lambda s, st: s.append_to_stream(st, -1, evs(1)), ValueError),
        (lambda s, st: s.append_to_stream(st, "any_version", evs(1)), TypeError),
        (lambda s, st: s.append_to_stream(st, 0, [EventData({}, "t", event_uuid="x")]), TypeError),  # type: ignore[arg-type]
        (
            lambda s, st: s.append_to_stream(
                st, 0, [EventData({}, "t", event_uuid=str(uuid.uuid4()))]
            ),
            TypeError,
        ),  # type: ignore[arg-type]
        (
            lambda s, st: s.append_to_stream(
                st, 0, [EventData({}, "t", event_uuid=uuid.UUID(int=0))]
            ),
            ValueError,
        ),
        (lambda s, st: s.append_to_stream(st, 0, evs(1), conn="dsn"), TypeError),
    ],
)
def test_bad_input_writes_nothing(store: EventStore, call: BadCall, error: type[Exception]) -> None:
    stream = new_stream()
    with pytest.raises(error):
        call(store, stream)
    assert everything(store) == []
    with pytest.raises(StreamNotFoundError):
        store.read_stream_forward(stream)


def test_bad_event_uuid_in_a_later_event_writes_nothing(store: EventStore) -> None:
    batch = [*evs(100), EventData({}, "t", event_uuid=12)]  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.append_to_stream(new_stream(), 0, batch)
    assert everything(store) == []
