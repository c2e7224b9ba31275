"""Concurrent appends: optimistic concurrency, gap-free ids in commit order, isolation of callers.

Ported in part from the Elixir suite ("append events to same stream concurrently" in
test/storage/append_events_test.exs), extended to threads, group commit and several stores.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any

import pytest

from eventstore_actors import (
    EventData,
    EventStore,
    RecordedEvent,
    StreamNotFoundError,
    WrongExpectedVersionError,
)

TIMEOUT = 60.0


def events_of(writer: int, count: int, start: int = 0) -> list[EventData]:
    return [
        EventData(data={"writer": writer, "i": i}, event_type="tests.Concurrent")
        for i in range(start, start + count)
    ]


def everything(store: EventStore) -> list[RecordedEvent]:
    return store.read_all_streams_forward(0, 1_000_000)


def outcome(fn: Callable[[], Any]) -> BaseException | None:
    try:
        fn()
    except BaseException as exc:
        return exc
    return None


def race(appends: Sequence[Callable[[], object]]) -> list[BaseException | None]:
    """Run the appends in threads released together; each result is None or the exception."""
    barrier = threading.Barrier(len(appends), timeout=TIMEOUT)

    def run(append: Callable[[], object]) -> BaseException | None:
        barrier.wait()
        return outcome(append)

    with ThreadPoolExecutor(max_workers=len(appends)) as pool:
        futures = [pool.submit(run, a) for a in appends]
        return [f.result(timeout=TIMEOUT) for f in futures]


def assert_one_winner(results: list[BaseException | None]) -> int:
    winners = [i for i, r in enumerate(results) if r is None]
    losers = [r for r in results if r is not None]
    assert len(winners) == 1, f"expected exactly one winner, got {results!r}"
    for loser in losers:
        assert isinstance(loser, WrongExpectedVersionError), repr(loser)
    return winners[0]


def assert_gap_free(store: EventStore) -> list[RecordedEvent]:
    events = everything(store)
    assert [e.event_id for e in events] == list(range(1, len(events) + 1))
    return events


# Appends of up to 64 events in a batch take the writer's one-round-trip path, larger batches
# the COPY path: each race runs with small appends and with appends above that threshold.
SIZES = pytest.mark.parametrize("size", [2, 70], ids=["small", "copy"])


# --- exactly one of several appends with the same expected version wins ------------------------


@SIZES
def test_two_appends_creating_one_stream_exactly_one_wins(store: EventStore, size: int) -> None:
    for round_ in range(15):
        stream = f"race-{round_}"
        results = race(
            [partial(store.append_to_stream, stream, 0, events_of(w, size)) for w in (0, 1)]
        )
        winner = assert_one_winner(results)
        events = store.read_stream_forward(stream)
        assert [e.stream_version for e in events] == list(range(1, size + 1))
        assert {e.data["writer"] for e in events} == {winner}
    assert len(assert_gap_free(store)) == 15 * size


@SIZES
def test_two_appends_to_existing_stream_exactly_one_wins(store: EventStore, size: int) -> None:
    for round_ in range(15):
        stream = f"race-{round_}"
        store.append_to_stream(stream, 0, events_of(9, 3))
        results = race(
            [partial(store.append_to_stream, stream, 3, events_of(w, size)) for w in (0, 1)]
        )
        winner = assert_one_winner(results)
        events = store.read_stream_forward(stream, 0, 1000)
        assert [e.stream_version for e in events] == list(range(1, size + 4))
        assert [e.data["writer"] for e in events] == [9, 9, 9] + [winner] * size
    assert len(assert_gap_free(store)) == 15 * (3 + size)


def test_five_concurrent_appends_of_ten_events(store: EventStore) -> None:
    # Elixir: results -- [:ok, wrong_expected_version x 4] == []
    for round_ in range(5):
        stream = f"five-{round_}"
        results = race(
            [partial(store.append_to_stream, stream, 0, events_of(w, 10)) for w in range(5)]
        )
        winner = assert_one_winner(results)
        events = store.read_stream_forward(stream)
        assert [e.stream_version for e in events] == list(range(1, 11))
        assert [e.data for e in events] == [{"writer": winner, "i": i} for i in range(10)]
    assert len(assert_gap_free(store)) == 50


@SIZES
def test_appends_on_two_stores_sharing_a_schema_exactly_one_wins(
    make_store: Callable[..., EventStore], size: int
) -> None:
    # Two writers with their own connections: the database, not one process, picks the winner.
    a, b = make_store(), make_store()
    for round_ in range(15):
        stream = f"shared-{round_}"
        if round_ % 2:
            a.append_to_stream(stream, 0, events_of(9, 1))
            expected = 1
        else:
            expected = 0
        results = race(
            [
                partial(a.append_to_stream, stream, expected, events_of(0, size)),
                partial(b.append_to_stream, stream, expected, events_of(1, size)),
            ]
        )
        winner = assert_one_winner(results)
        events = b.read_stream_forward(stream)
        assert [e.stream_version for e in events] == list(range(1, expected + size + 1))
        assert [e.data["writer"] for e in events[expected:]] == [winner] * size
    assert_gap_free(a)


# --- many writers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("appends", "size"), [(25, 4), (6, 20)], ids=["small", "copy"])
def test_eight_threads_appending_to_eight_streams(
    store: EventStore, appends: int, size: int
) -> None:
    threads = 8
    barrier = threading.Barrier(threads, timeout=TIMEOUT)

    def writer(w: int) -> None:
        barrier.wait()
        for n in range(appends):
            store.append_to_stream(f"stream-{w}", n * size, events_of(w, size, n * size))

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for f in [pool.submit(writer, w) for w in range(threads)]:
            f.result(timeout=TIMEOUT)

    total = threads * appends * size
    events = assert_gap_free(store)
    assert len(events) == total
    assert events == list(store.stream_all_forward(0, read_batch_size=97))
    for w in range(threads):
        stream_events = store.read_stream_forward(f"stream-{w}", 0, total)
        assert [e.stream_version for e in stream_events] == list(range(1, appends * size + 1))
        assert [e.data for e in stream_events] == [
            {"writer": w, "i": i} for i in range(appends * size)
        ]
        # Within a stream, global order follows stream order.
        ids = [e.event_id for e in stream_events]
        assert ids == sorted(ids)
        # The events of one append are contiguous in the global order.
        for n in range(appends):
            chunk = ids[n * size : (n + 1) * size]
            assert chunk == list(range(chunk[0], chunk[0] + size))


@pytest.mark.parametrize("size", [1, 12], ids=["small", "copy"])
def test_each_caller_fails_or_succeeds_on_its_own_expected_version(
    store: EventStore, size: int
) -> None:
    # Appends waiting together (group commit) must not share a fate: a wrong expected version
    # fails only its own caller.
    threads, appends = 8, 15
    barrier = threading.Barrier(threads, timeout=TIMEOUT)
    failures: dict[int, int] = {}

    def is_wrong(w: int, n: int) -> bool:
        return w % 2 == 1 and n % 3 == 0

    def writer(w: int) -> None:
        barrier.wait()
        failed = 0
        version = 0
        for n in range(appends):
            wrong = is_wrong(w, n)
            try:
                store.append_to_stream(
                    f"s-{w}", version + 7 if wrong else version, events_of(w, size, n * size)
                )
            except WrongExpectedVersionError:
                failed += 1
                continue
            assert not wrong, "an append with a wrong expected version succeeded"
            version += size
        failures[w] = failed

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for f in [pool.submit(writer, w) for w in range(threads)]:
            f.result(timeout=TIMEOUT)

    expected_failures = len([n for n in range(appends) if n % 3 == 0])
    assert failures == {w: expected_failures if w % 2 else 0 for w in range(threads)}
    events = assert_gap_free(store)
    assert len(events) == (threads * appends - (threads // 2) * expected_failures) * size
    for w in range(threads):
        stream_events = store.read_stream_forward(f"s-{w}")
        sent = [n * size + i for n in range(appends) if not is_wrong(w, n) for i in range(size)]
        assert [e.data["i"] for e in stream_events] == sent
        assert [e.stream_version for e in stream_events] == list(range(1, len(sent) + 1))


def test_writers_competing_for_one_stream_with_retries(store: EventStore) -> None:
    # Optimistic concurrency with retry: the stream ends with every event exactly once,
    # versions 1..N, and each writer's events in its own order.
    threads, per_writer = 6, 10
    barrier = threading.Barrier(threads, timeout=TIMEOUT)
    conflicts = [0] * threads

    def current_version() -> int:
        try:
            events = store.read_stream_forward("contended", 0, 100_000)
        except StreamNotFoundError:  # before the first append
            return 0
        return events[-1].stream_version if events else 0

    def writer(w: int) -> None:
        barrier.wait()
        for i in range(per_writer):
            for _attempt in range(1000):
                try:
                    store.append_to_stream("contended", current_version(), events_of(w, 1, i))
                    break
                except WrongExpectedVersionError:
                    conflicts[w] += 1
            else:
                pytest.fail(f"writer {w} never got its event {i} in")

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for f in [pool.submit(writer, w) for w in range(threads)]:
            f.result(timeout=TIMEOUT)

    events = store.read_stream_forward("contended", 0, 100_000)
    total = threads * per_writer
    assert [e.stream_version for e in events] == list(range(1, total + 1))
    assert [e.event_id for e in events] == list(range(1, total + 1))
    assert sorted((e.data["writer"], e.data["i"]) for e in events) == [
        (w, i) for w in range(threads) for i in range(per_writer)
    ]
    for w in range(threads):
        assert [e.data["i"] for e in events if e.data["writer"] == w] == list(range(per_writer))


def test_two_stores_appending_in_parallel_share_one_gap_free_sequence(
    make_store: Callable[..., EventStore],
) -> None:
    stores = [make_store(), make_store()]
    threads, appends, size = 6, 15, 3
    barrier = threading.Barrier(threads, timeout=TIMEOUT)

    def writer(w: int) -> None:
        store = stores[w % 2]
        barrier.wait()
        for n in range(appends):
            store.append_to_stream(f"p-{w}", n * size, events_of(w, size, n * size))

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for f in [pool.submit(writer, w) for w in range(threads)]:
            f.result(timeout=TIMEOUT)

    events = assert_gap_free(stores[0])
    assert len(events) == threads * appends * size
    assert events == everything(stores[1])


def test_reader_following_the_log_never_skips_a_committed_event(store: EventStore) -> None:
    # A reader that advances from the last event_id it saw must see every event while writers
    # are committing (ids are handed out in commit order).
    writers, appends, size = 4, 30, 2
    total = writers * appends * size
    stop = threading.Event()
    seen: list[int] = []

    def follow() -> None:
        deadline = time.monotonic() + TIMEOUT
        while len(seen) < total and time.monotonic() < deadline and not stop.is_set():
            batch = store.read_all_streams_forward((seen[-1] + 1) if seen else 0, 50)
            seen.extend(e.event_id for e in batch)

    def writer(w: int) -> None:
        for n in range(appends):
            store.append_to_stream(f"f-{w}", n * size, events_of(w, size, n * size))

    with ThreadPoolExecutor(max_workers=writers + 1) as pool:
        reader: Future[None] = pool.submit(follow)
        try:
            for f in [pool.submit(writer, w) for w in range(writers)]:
                f.result(timeout=TIMEOUT)
            reader.result(timeout=TIMEOUT)
        finally:
            stop.set()

    assert seen == list(range(1, total + 1))


def test_concurrent_readers_and_snapshot_writers(store: EventStore) -> None:
    from eventstore_actors import SnapshotData

    store.append_to_stream("s", 0, events_of(0, 10))
    barrier = threading.Barrier(6, timeout=TIMEOUT)

    def work(w: int) -> None:
        barrier.wait()
        for v in range(1, 21):
            if w < 3:
                store.record_snapshot(
                    SnapshotData(
                        source_uuid=f"agg-{w}", source_version=v, source_type="T", data={"v": v}
                    )
                )
            else:
                assert len(store.read_stream_forward("s")) == 10
                assert len(list(store.stream_all_forward(0, 3))) == 10

    with ThreadPoolExecutor(max_workers=6) as pool:
        for f in [pool.submit(work, w) for w in range(6)]:
            f.result(timeout=TIMEOUT)
    for w in range(3):
        assert store.read_snapshot(f"agg-{w}").data == {"v": 20}


def test_bad_input_does_not_fail_concurrent_callers(store: EventStore) -> None:
    # Appends committed together must not share the fate of a bad one: good callers succeed,
    # promptly, and the bad ones get a bad-argument error, not StoreUnavailableError.
    def bad(i: int) -> None:
        store.append_to_stream(f"bad-{i}\ud800", 0, events_of(i, 1))

    def good(i: int) -> None:
        store.append_to_stream(f"good-{i}", 0, events_of(i, 2))

    began = time.monotonic()
    results = race([partial(bad, i) for i in range(4)] + [partial(good, i) for i in range(8)])
    elapsed = time.monotonic() - began

    assert all(isinstance(r, (TypeError, ValueError)) for r in results[:4]), results[:4]
    assert results[4:] == [None] * 8, results[4:]
    assert elapsed < 10
    events = assert_gap_free(store)
    assert sorted(e.stream_uuid for e in events) == sorted(
        f"good-{i}" for i in range(8) for _ in "ab"
    )
