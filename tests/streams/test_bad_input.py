"""Bad input raises the contract's exception before anything is written.

Each test tries a family of bad inputs against one store (every case is reported on its own
when it fails), then checks that nothing was stored, that no event_id was consumed, and that
the store still accepts a good append.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import pytest

from eventstore_actors import (
    CannotAppendToAllStreamError,
    EventData,
    EventStore,
    EventStoreError,
    RecordedEvent,
    SerializationError,
    SnapshotData,
    SnapshotNotFoundError,
    StreamNotFoundError,
)

ARG_ERRORS = (TypeError, ValueError)
ExcTypes = type[BaseException] | tuple[type[BaseException], ...]


def good(n: int = 1) -> EventData:
    return EventData(data={"n": n}, event_type="tests.Good")


def everything(store: EventStore) -> list[RecordedEvent]:
    return store.read_all_streams_forward(0, 100_000)


def expect_each(
    cases: Iterable[tuple[str, Callable[[], object]]], expected: ExcTypes, within: float = 5.0
) -> None:
    """Every call raises `expected`, promptly; all failing cases are listed together."""
    failures: list[str] = []
    for case, call in cases:
        began = time.monotonic()
        try:
            call()
        except expected:
            elapsed = time.monotonic() - began
            if elapsed > within:
                failures.append(f"{case}: took {elapsed:.1f}s to raise")
        except BaseException as exc:
            failures.append(f"{case}: raised {type(exc).__name__}: {exc}")
        else:
            failures.append(f"{case}: did not raise")
    assert not failures, "\n".join(failures)


def drain(fn: Callable[..., Iterable[Any]], *args: Any) -> list[Any]:
    """Call a streaming read and consume it (errors may come at call or first iteration)."""
    return list(fn(*args))


def start_and_stop(dsn: str, schema: str) -> None:
    EventStore.start(dsn, schema=schema).stop()


def assert_nothing_written_and_store_works(store: EventStore, before: int = 0) -> None:
    """No event beyond the first `before` exists, and the next append gets id before + 1."""
    assert [e.event_id for e in everything(store)] == list(range(1, before + 1))
    probe = f"probe-{uuid.uuid4()}"
    store.append_to_stream(probe, 0, [good()])
    assert [e.event_id for e in store.read_stream_forward(probe)] == [before + 1]


def appends(
    store: EventStore, cases: dict[str, tuple[Any, Any, Any]]
) -> list[tuple[str, Callable[[], object]]]:
    """(id, call) pairs appending (stream_uuid, expected_version, events) for each case."""
    return [(case, partial(store.append_to_stream, *args)) for case, args in cases.items()]


# --- append: arguments ----------------------------------------------------------------------------


def test_bad_stream_uuid(store: EventStore) -> None:
    bad: list[Any] = [123, None, b"bytes", ["s"], "", "x" * 6000]  # names: at most 1,024 bytes
    expect_each(appends(store, {repr(s): (s, 0, [good()]) for s in bad}), ARG_ERRORS)
    assert_nothing_written_and_store_works(store)


def test_append_to_all_stream(store: EventStore) -> None:
    expect_each(
        appends(store, {f"expected={v}": ("$all", v, [good()]) for v in (0, 1, 5)}),
        CannotAppendToAllStreamError,
    )
    assert issubclass(CannotAppendToAllStreamError, EventStoreError)
    assert_nothing_written_and_store_works(store)


def test_bad_expected_version(store: EventStore) -> None:
    bad: list[Any] = [-1, -100, 1.0, 0.5, "0", None, [0]]
    expect_each(appends(store, {repr(v): ("stream", v, [good()]) for v in bad}), ARG_ERRORS)
    assert_nothing_written_and_store_works(store)


def test_bad_expected_version_on_existing_stream(store: EventStore) -> None:
    store.append_to_stream("stream", 0, [good(1), good(2)])
    expect_each(appends(store, {"-2": ("stream", -2, [good(3)])}), ARG_ERRORS)
    assert [e.stream_version for e in store.read_stream_forward("stream")] == [1, 2]
    assert_nothing_written_and_store_works(store, before=2)


def test_bad_events(store: EventStore) -> None:
    cases: dict[str, Any] = {
        "none": None,
        "int": 42,
        "single-eventdata": good(),  # not a list
        "dict-item": [{"data": 1}],
        "str-item": ["not an event"],
        "none-item": [None],
        "bad-last-item": [good(1), good(2), 42],
        "dict-after-good": [good(1), {"data": 2, "event_type": "E"}],
        "str": "abc",
    }
    expect_each(appends(store, {k: ("stream", 0, v) for k, v in cases.items()}), ARG_ERRORS)
    with pytest.raises(StreamNotFoundError):
        store.read_stream_forward("stream")
    assert_nothing_written_and_store_works(store)


def test_recorded_event_is_not_event_data(store: EventStore) -> None:
    store.append_to_stream("source", 0, [good()])
    [recorded] = store.read_stream_forward("source")
    expect_each(appends(store, {"recorded-event": ("copy", 0, [recorded])}), ARG_ERRORS)
    assert_nothing_written_and_store_works(store, before=1)


def test_bad_event_fields(store: EventStore) -> None:
    # Beyond the contract's explicit list, but values of the wrong type must not be stored.
    bad_fields: dict[str, dict[str, Any]] = {
        "int-type": {"event_type": 123},
        "empty-type": {"event_type": ""},
        "int-correlation": {"correlation_id": 123},
        "list-causation": {"causation_id": ["x"]},
        "list-metadata": {"metadata": ["not", "a", "mapping"]},
    }
    cases = {
        k: ("stream", 0, [good(), EventData(**{"data": 1, "event_type": "E", **fields})])
        for k, fields in bad_fields.items()
    }
    expect_each(appends(store, cases), (*ARG_ERRORS, SerializationError))
    assert_nothing_written_and_store_works(store)


# --- append: values JSON cannot hold -------------------------------------------------------------


def _circular() -> dict[str, Any]:
    d: dict[str, Any] = {}
    d["self"] = d
    return d


UNSERIALIZABLE: dict[str, Any] = {
    "object": object(),
    "set": {1, 2},
    "frozenset": frozenset({1}),
    "nan": math.nan,
    "inf": math.inf,
    "-inf": -math.inf,
    "nested-nan": {"x": math.nan},
    "bytes": b"bytes",
    "nested-object": {"k": object()},
    "tuple-key": {(1, 2): "tuple key"},
    "deep-set": [1, {"deep": [{2, 3}]}],
    "circular": _circular(),
    "complex": complex(1, 2),
    "surrogate-value": {"s": "lone \ud800 surrogate"},
    "surrogate-key": {"lone \udfff": 1},
}


def test_unserializable_data(store: EventStore) -> None:
    cases = {
        k: ("stream", 0, [good(1), EventData(data=v, event_type="E")])
        for k, v in UNSERIALIZABLE.items()
    }
    expect_each(appends(store, cases), SerializationError)
    with pytest.raises(StreamNotFoundError):
        store.read_stream_forward("stream")
    assert_nothing_written_and_store_works(store)


def test_unserializable_metadata(store: EventStore) -> None:
    cases = {
        k: ("stream", 0, [good(1), EventData(data=1, event_type="E", metadata={"k": v})])
        for k, v in UNSERIALIZABLE.items()
        if k in ("set", "nan", "object", "surrogate-value")
    }
    expect_each(appends(store, cases), SerializationError)
    assert_nothing_written_and_store_works(store)


def test_unserializable_data_on_existing_stream(store: EventStore) -> None:
    store.append_to_stream("stream", 0, [good(1), good(2)])
    with pytest.raises(SerializationError):
        store.append_to_stream("stream", 2, [good(3), EventData(data={1, 2}, event_type="E")])
    assert [e.stream_version for e in store.read_stream_forward("stream")] == [1, 2]
    store.append_to_stream("stream", 2, [good(3)])  # the version did not move
    assert [e.event_id for e in store.read_stream_forward("stream")] == [1, 2, 3]


def test_serialization_error_in_a_large_append_writes_nothing(store: EventStore) -> None:
    events = [good(i) for i in range(20_000)]
    events.append(EventData(data=math.nan, event_type="E"))
    with pytest.raises(SerializationError):
        store.append_to_stream("big", 0, events)
    assert_nothing_written_and_store_works(store)


# --- values PostgreSQL text cannot hold -------------------------------------------------------


def test_text_the_database_cannot_store(store: EventStore) -> None:
    # Text PostgreSQL cannot hold is bad input like any other: rejected up front with
    # ValueError, at once, not by a crashed writer (StoreUnavailableError after a timeout).
    cases: dict[str, tuple[Any, Any, Any]] = {
        "nul-stream": ("nul\x00stream", 0, [good()]),
        "nul-type": ("stream", 0, [good(), EventData(data=1, event_type="nul\x00type")]),
        "nul-correlation": (
            "stream",
            0,
            [good(), EventData(data=1, event_type="E", correlation_id="nul\x00id")],
        ),
        "surrogate-stream": ("surrogate\ud800", 0, [good()]),
        "surrogate-type": ("stream", 0, [good(), EventData(data=1, event_type="bad\udfff")]),
        "surrogate-causation": (
            "stream",
            0,
            [good(), EventData(data=1, event_type="E", causation_id="\ud800")],
        ),
    }
    expect_each(appends(store, cases), ARG_ERRORS)
    assert_nothing_written_and_store_works(store)


def test_nul_inside_json_data_is_fine(store: EventStore) -> None:
    # Data is serialized JSON ("\\u0000"), so a NUL inside a string value is storable.
    store.append_to_stream("stream", 0, [EventData(data={"s": "a\x00b"}, event_type="E")])
    assert store.read_stream_forward("stream")[0].data == {"s": "a\x00b"}


# --- reads ----------------------------------------------------------------------------------------


def test_bad_read_arguments(store: EventStore) -> None:
    store.append_to_stream("stream", 0, [good(i) for i in range(1, 6)])
    s = store
    bad_uuid: list[Any] = [123, None, b"stream"]
    bad_start: list[Any] = [-1, -1000, 1.5, "1", None]
    bad_count: list[Any] = [-1, 2.5, "10", None]
    bad_batch: list[Any] = [0, -1, 1.5, "7", None]
    cases: list[tuple[str, Callable[[], object]]] = []
    for u in bad_uuid:
        cases += [
            (f"read_stream_forward({u!r})", partial(s.read_stream_forward, u)),
            (f"stream_forward({u!r})", partial(drain, s.stream_forward, u)),
        ]
    for v in bad_start:
        cases += [
            (f"read_stream_forward(start={v!r})", partial(s.read_stream_forward, "stream", v)),
            (f"stream_forward(start={v!r})", partial(drain, s.stream_forward, "stream", v)),
            (f"read_all_streams_forward(start={v!r})", partial(s.read_all_streams_forward, v)),
            (f"stream_all_forward(start={v!r})", partial(drain, s.stream_all_forward, v)),
        ]
    for c in bad_count:
        cases += [
            (
                f"read_stream_forward(count={c!r})",
                partial(s.read_stream_forward, "stream", 0, c),
            ),
            (
                f"read_all_streams_forward(count={c!r})",
                partial(s.read_all_streams_forward, 0, c),
            ),
        ]
    for b in bad_batch:
        cases += [
            (f"stream_forward(batch={b!r})", partial(drain, s.stream_forward, "stream", 0, b)),
            (f"stream_all_forward(batch={b!r})", partial(drain, s.stream_all_forward, 0, b)),
        ]
    expect_each(cases, ARG_ERRORS)
    assert [e.event_id for e in store.read_all_streams_forward()] == [1, 2, 3, 4, 5]


# --- snapshots ------------------------------------------------------------------------------------
# Beyond the contract's explicit text: wrong types must not reach the database.


def test_bad_snapshots(store: EventStore) -> None:
    def snap(**fields: Any) -> SnapshotData:
        base: dict[str, Any] = {
            "source_uuid": "s",
            "source_version": 1,
            "source_type": "T",
            "data": {},
        }
        return SnapshotData(**{**base, **fields})

    bad: dict[str, Any] = {
        "none": None,
        "dict": {"source_uuid": "s", "source_version": 1, "source_type": "T", "data": {}},
        "int-uuid": snap(source_uuid=123),
        "empty-uuid": snap(source_uuid=""),
        "negative-version": snap(source_version=-1),
        "str-version": snap(source_version="1"),
        "none-type": snap(source_type=None),
        "nul-uuid": snap(source_uuid="nul\x00"),
        "surrogate-uuid": snap(source_uuid="s\ud800"),
        "surrogate-type": snap(source_type="T\ud800"),
        "long-uuid": snap(source_uuid="u" * 6000),
        "long-type": snap(source_type="t" * 1025),
    }
    bad_uuids: list[Any] = [123, None, "u" * 6000]
    expect_each(
        [(k, partial(store.record_snapshot, v)) for k, v in bad.items()],
        ARG_ERRORS,
    )
    expect_each(
        [
            (f"{name}({u!r})", partial(f, u))
            for u in bad_uuids
            for name, f in (("read", store.read_snapshot), ("delete", store.delete_snapshot))
        ],
        ARG_ERRORS,
    )
    with pytest.raises(SnapshotNotFoundError):
        store.read_snapshot("s")
    store.record_snapshot(snap(source_version=2))
    assert store.read_snapshot("s").source_version == 2


# --- start ----------------------------------------------------------------------------------------


def test_bad_start_options(make_store: Callable[..., EventStore], dsn: str) -> None:
    options: dict[str, dict[str, Any]] = {
        "pool-size-0": {"pool_size": 0},
        "pool-size-negative": {"pool_size": -1},
        "max-size-0": {"subscription_max_size": 0},
        "not-a-serializer": {"serializer": object()},
    }
    cases: list[tuple[str, Callable[[], object]]] = [
        (k, partial(make_store, **o)) for k, o in options.items()
    ]
    cases += [
        (f"schema={name!r}", partial(start_and_stop, dsn, name))
        for name in ["Bad-Schema", "1abc", "a;drop table x", ""]
    ]
    expect_each(cases, (*ARG_ERRORS, EventStoreError))


# --- bounds (issue 17 item 10) --------------------------------------------------------------------

BEYOND_BIGINT = 2**63
LONG_NAME = "é" * 513  # 1,026 bytes in UTF-8 (513 characters)


class _Sink:
    def tell(self, message: Any) -> None:
        pass


def test_every_integer_beyond_bigint_is_a_value_error_before_anything_is_sent(
    store: EventStore,
) -> None:
    store.append_to_stream("s", 0, [good()])
    big = BEYOND_BIGINT
    sink = _Sink()
    expect_each(
        [
            ("start_from $all", lambda: store.subscribe_to_all_streams("a", sink, start_from=big)),
            (
                "start_from stream",
                lambda: store.subscribe_to_stream("s", "b", sink, start_from=big),
            ),
            (
                "start_from group",
                lambda: store.subscribe_to_all_streams("g", sink, start_from=big, partitions=2),
            ),
            ("partitions", lambda: store.subscribe_to_all_streams("p", sink, partitions=big)),
            ("expected_version", lambda: store.append_to_stream("s", big, [good()])),
            ("delete expected", lambda: store.delete_stream("s", big)),
            ("link expected", lambda: store.link_to_stream("l", big, [1])),
            ("link event_id", lambda: store.link_to_stream("l", 0, [big])),
            ("start_version", lambda: store.read_stream_forward("s", big)),
            ("count", lambda: store.read_stream_forward("s", 0, big)),
            ("backward start", lambda: store.read_stream_backward("s", big)),
            ("start_event_id", lambda: store.read_all_streams_forward(big)),
            ("stop", lambda: store.read_all_streams_forward(stop=big)),
            ("read_batch_size", lambda: drain(store.stream_all_forward, 0, big)),
            ("page_size", lambda: store.paginate_streams(page_size=big)),
            ("source_version", lambda: store.record_snapshot(SnapshotData("x", big, "T", {}))),
            ("max_size", lambda: store.subscribe_to_all_streams("m", sink, max_size=big)),
        ],
        ValueError,
    )
    assert store.subscriptions() == []
    assert_nothing_written_and_store_works(store, before=1)


def test_an_ack_position_beyond_bigint_is_a_value_error(store: EventStore) -> None:
    from support import QueueSubscriber

    store.append_to_stream("s", 0, [good()])
    subscriber = QueueSubscriber()
    store.subscribe_to_all_streams("acker", subscriber)
    sub = subscriber.subscribed()
    assert [e.event_id for e in subscriber.collect(sub, 1)] == [1]
    expect_each(
        [
            ("ack", lambda: sub.ack(BEYOND_BIGINT)),
            ("ack list", lambda: sub.ack([1, BEYOND_BIGINT])),
            ("nack", lambda: sub.nack(BEYOND_BIGINT)),
        ],
        ValueError,
    )
    sub.ack(1)  # the subscription is fine


def test_names_longer_than_1024_utf8_bytes_are_a_value_error(store: EventStore) -> None:
    sink = _Sink()
    assert len(LONG_NAME) * 4 > 1024 and len(LONG_NAME.encode()) == 1026
    expect_each(
        [
            ("stream_uuid", lambda: store.append_to_stream(LONG_NAME, 0, [good()])),
            (
                "event_type",
                lambda: store.append_to_stream("s", 0, [EventData({}, event_type=LONG_NAME)]),
            ),
            ("subscription_name", lambda: store.subscribe_to_all_streams(LONG_NAME, sink)),
            ("stream subscription", lambda: store.subscribe_to_stream("s", LONG_NAME, sink)),
            ("read", lambda: store.read_stream_forward(LONG_NAME)),
            ("subscription_info", lambda: store.subscription_info(LONG_NAME)),
            ("event_types filter", lambda: store.read_all_streams_forward(event_types=[LONG_NAME])),
        ],
        ValueError,
    )
    # 1,024 bytes exactly are fine.
    name = "é" * 512
    store.append_to_stream(name, 0, [EventData({}, event_type=name)])
    assert store.read_stream_forward(name)[0].event_type == name
