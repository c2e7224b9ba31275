"""Batches large enough for COPY create new streams at the version their writes lead to
(storage/appender.py): a stream whose write failed is not left behind, and versions are
exact whichever writes of the batch held."""

from __future__ import annotations

import pytest

from eventstore_actors import (
    EventData,
    EventStore,
    ExpectedVersion,
    StreamAppend,
    StreamNotFoundError,
    WrongExpectedVersionError,
)
from eventstore_actors.storage.appender import SMALL_BATCH_EVENTS

BIG = SMALL_BATCH_EVENTS + 6


def _events(n: int, tag: str = "e") -> list[EventData]:
    return [EventData(data={"i": i, "tag": tag}, event_type="T") for i in range(n)]


def test_a_new_stream_of_a_large_batch_is_at_its_last_version(store: EventStore) -> None:
    result = store.append_to_stream("big", 0, _events(BIG))
    assert (result.first_version, result.last_version) == (1, BIG)
    assert store.stream_info("big").stream_version == BIG
    more = store.append_to_stream("big", BIG, _events(BIG))
    assert more.last_version == 2 * BIG
    assert [e.stream_version for e in store.read_stream_forward("big", 0, 10_000)] == list(
        range(1, 2 * BIG + 1)
    )


def test_a_failed_large_append_leaves_no_new_stream(store: EventStore) -> None:
    store.append_to_stream("old", 0, _events(1))
    with pytest.raises(WrongExpectedVersionError):
        store.append_to_streams(
            [StreamAppend("fresh", 0, _events(BIG)), StreamAppend("old", 5, _events(1))]
        )
    with pytest.raises(StreamNotFoundError):
        store.stream_info("fresh")
    assert store.read_all_streams_forward() == store.read_stream_forward("old")
    # The name is free: a later append creates it from version 1.
    assert store.append_to_stream("fresh", 0, _events(BIG)).first_version == 1


def test_an_any_version_large_append_to_an_existing_stream_counts_on(store: EventStore) -> None:
    store.append_to_stream("s", 0, _events(3))
    result = store.append_to_stream("s", ExpectedVersion.ANY_VERSION, _events(BIG))
    assert (result.first_version, result.last_version) == (4, 3 + BIG)
    assert store.stream_info("s").stream_version == 3 + BIG
    fresh = store.append_to_stream("t", ExpectedVersion.ANY_VERSION, _events(BIG))
    assert (fresh.first_version, fresh.last_version) == (1, BIG)
    assert store.stream_info("t").stream_version == BIG


def test_a_group_with_failed_writes_corrects_and_drops_what_it_created(
    dsn: str, schema: str, store: EventStore
) -> None:
    """Several callers' appends in one COPY transaction (as the writer groups them): the
    stream of a failed append is dropped, a stream whose later write failed ends at the
    version its writes that held lead to."""
    import psycopg

    from eventstore_actors.events import NIL_UUID
    from eventstore_actors.storage.appender import Appender, AppendRequest, NewEvent, Written
    from eventstore_actors.storage.uuids import new_uuids

    def events(n: int) -> list[NewEvent]:
        return [NewEvent("T", None, None, b"{}", None, u) for u in new_uuids(n)]

    assert NIL_UUID not in [e.event_uuid for e in events(3)]
    ok_a = AppendRequest.single("a", 0, events(BIG))
    bad = AppendRequest(
        [
            AppendRequest.single("b", 0, events(5)).writes[0],
            AppendRequest.single("a", 999, events(1)).writes[0],
        ]
    )
    more_a = AppendRequest.single("a", BIG, events(3))
    with psycopg.Connection.connect(
        dsn, autocommit=True, options=f"-c search_path={schema}"
    ) as conn:
        outcomes = Appender(conn, "channel", "origin").append([ok_a, bad, more_a])
    assert isinstance(outcomes[0], Written) and isinstance(outcomes[2], Written)
    assert isinstance(outcomes[1], WrongExpectedVersionError)
    assert store.stream_info("a").stream_version == BIG + 3
    assert [e.stream_version for e in store.read_stream_forward("a", 0, 1000)] == list(
        range(1, BIG + 4)
    )
    with pytest.raises(StreamNotFoundError):
        store.stream_info("b")
