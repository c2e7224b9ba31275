"""Bad arguments to the version 2 reads, stream_info and paginate_streams: ValueError or
TypeError, raised by the call itself (streaming reads too, before any iteration), and the
store keeps working."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from eventstore_actors import EventData, EventStore

ARG_ERRORS = (ValueError, TypeError)


def expect_each(cases: list[tuple[str, Callable[[], object]]]) -> None:
    failures = []
    for case, call in cases:
        try:
            call()
        except ARG_ERRORS:
            continue
        except BaseException as exc:
            failures.append(f"{case}: raised {type(exc).__name__}: {exc}")
        else:
            failures.append(f"{case}: did not raise")
    assert not failures, "\n".join(failures)


@pytest.fixture
def s(store: EventStore) -> EventStore:
    store.append_to_stream("stream", 0, [EventData({"n": n}, "T") for n in range(3)])
    return store


def test_bad_backward_read_arguments(s: EventStore) -> None:
    bad_uuid: list[Any] = [123, None, b"stream", "", "x" * 1025, "a\x00b"]
    bad_start: list[Any] = [-2, -1000, 1.5, "1", None, True, 2**63]
    bad_count: list[Any] = [0, -1, 2.5, "10", None, False]
    cases: list[tuple[str, Callable[[], object]]] = []
    for u in bad_uuid:
        cases += [
            (f"read_stream_backward({u!r})", partial(s.read_stream_backward, u)),
            (f"stream_backward({u!r})", partial(s.stream_backward, u)),
        ]
    for v in bad_start:
        cases += [
            (f"read_stream_backward(start={v!r})", partial(s.read_stream_backward, "stream", v)),
            (f"stream_backward(start={v!r})", partial(s.stream_backward, "stream", v)),
            (f"read_all_streams_backward(start={v!r})", partial(s.read_all_streams_backward, v)),
            (f"stream_all_backward(start={v!r})", partial(s.stream_all_backward, v)),
        ]
    for c in bad_count:
        cases += [
            (
                f"read_stream_backward(count={c!r})",
                partial(s.read_stream_backward, "stream", -1, c),
            ),
            (f"stream_backward(batch={c!r})", partial(s.stream_backward, "stream", -1, c)),
            (
                f"read_all_streams_backward(count={c!r})",
                partial(s.read_all_streams_backward, -1, c),
            ),
            (f"stream_all_backward(batch={c!r})", partial(s.stream_all_backward, -1, c)),
        ]
    expect_each(cases)
    assert [e.stream_version for e in s.read_stream_backward("stream")] == [3, 2, 1]


_ALL_READS = ("read_all_streams_forward", "read_all_streams_backward")
_ALL_STREAMS = ("stream_all_forward", "stream_all_backward")


def test_bad_all_streams_filters(s: EventStore) -> None:
    bad_types: list[Any] = [
        "T",
        b"T",
        5,
        [],
        set(),
        ["T", 3],
        [None],
        [""],
        ["x" * 1025],
        iter(["T"]),
    ]
    bad_prefix: list[Any] = [5, b"s", "", ["s"], "a\x00", "x" * 1025]
    bad_stop: list[Any] = [-1, 1.5, "3", True, 2**63]
    cases: list[tuple[str, Callable[[], object]]] = []
    for name in (*_ALL_READS, *_ALL_STREAMS):
        read = getattr(s, name)
        for t in bad_types:
            cases.append((f"{name}(event_types={t!r})", partial(read, event_types=t)))
        for p in bad_prefix:
            cases.append((f"{name}(stream_prefix={p!r})", partial(read, stream_prefix=p)))
    for name in ("read_all_streams_forward", "stream_all_forward"):
        for v in bad_stop:
            cases.append((f"{name}(stop={v!r})", partial(getattr(s, name), stop=v)))
    for name in ("read_all_streams_backward", "stream_all_backward"):  # forward reads only
        cases.append((f"{name}(stop=3)", partial(getattr(s, name), stop=3)))
    # Filters are keyword-only.
    cases.append(
        (
            "read_all_streams_forward(0, 10, ['T'])",
            partial(s.read_all_streams_forward, 0, 10, ["T"]),
        )
    )
    expect_each(cases)
    assert len(s.read_all_streams_forward(event_types=["T"], stream_prefix="str", stop=2)) == 2


def test_bad_stream_info_and_paginate_arguments(s: EventStore) -> None:
    cases: list[tuple[str, Callable[[], object]]] = []
    for u in [123, None, b"stream", "", "x" * 1025, "a\x00b"]:
        cases.append((f"stream_info({u!r})", partial(s.stream_info, u)))
    for size in [0, -1, 1.5, "50", None, True]:
        cases.append(
            (f"paginate_streams(page_size={size!r})", partial(s.paginate_streams, page_size=size))
        )
    for number in [0, -1, 1.5, "1", None, False]:
        cases.append(
            (
                f"paginate_streams(page_number={number!r})",
                partial(s.paginate_streams, page_number=number),
            )
        )
    for search in [5, b"x", ["x"], "a\x00b"]:
        cases.append(
            (f"paginate_streams(search={search!r})", partial(s.paginate_streams, search=search))
        )
    for sort_by in [
        "stream",
        "STREAM_ID",
        "",
        None,
        1,
        "stream_id; DROP TABLE events",
        ["stream_id"],
    ]:
        cases.append(
            (f"paginate_streams(sort_by={sort_by!r})", partial(s.paginate_streams, sort_by=sort_by))
        )
    for sort_dir in ["ASC", "up", "", None, 1, "desc nulls first"]:
        cases.append(
            (
                f"paginate_streams(sort_dir={sort_dir!r})",
                partial(s.paginate_streams, sort_dir=sort_dir),
            )
        )
    cases.append(("paginate_streams(50)", partial(s.paginate_streams, 50)))  # keyword-only
    expect_each(cases)
    for bad in (dict(sort_by="nope"), dict(sort_dir="up"), dict(page_size=0), dict(page_number=0)):
        with pytest.raises(ValueError):
            s.paginate_streams(**bad)
    assert s.paginate_streams().total_entries == 1
    assert s.stream_info("stream").stream_version == 3
