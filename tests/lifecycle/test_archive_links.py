"""Links to archived events (issue 20, schema version 5): an event moved to a Parquet file is
linked as it was before the archive, and the linking stream reads as if nothing had been
archived; an event that is not there (never written, hard-deleted before or after the
archive, hidden by its stream's retention) is still refused with EventNotFoundError before
anything is written. Real PostgreSQL, real Parquet files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from support import QueueSubscriber, events, wait_until
from support.storage_sql import sql

from eventstore_actors import (
    ANY_VERSION,
    DuplicateEventError,
    EventNotFoundError,
    EventStore,
    RecordedEvent,
    StoreUnavailableError,
    StreamNotFoundError,
    WrongExpectedVersionError,
)

pytest.importorskip("pyarrow.parquet")

MakeStore = Callable[..., EventStore]
#: Seconds within which the scavenger deletes hidden rows (the spec: within a minute).
GONE = 30.0


def reads(store: EventStore, stream: str) -> dict[str, Any]:
    """Every way of reading one stream."""
    return {
        "forward": store.read_stream_forward(stream),
        "backward": store.read_stream_backward(stream),
        "pages": list(store.stream_forward(stream, 0, 1)),
        "pages_back": list(store.stream_backward(stream, -1, 2)),
        "from_2": store.read_stream_forward(stream, 2, 2),
        "back_from_3": store.read_stream_backward(stream, 3, 2),
    }


def link_rows(dsn: str, schema: str) -> list[tuple[int, int]]:
    """(event_number, event_id) of every link, in position order."""
    with sql(dsn, schema) as conn:
        found = conn.execute(
            "SELECT k.event_number, k.event_id FROM links AS k ORDER BY k.stream_id, 1"
        ).fetchall()
    return [(int(a), int(b)) for a, b in found]


def test_archived_events_are_linked_and_read_as_before_the_archive(
    make_store: MakeStore, tmp_path: Path
) -> None:
    store = make_store(archive=str(tmp_path))
    store.append_to_stream("a", 0, events(5))  # event_ids 1-5
    store.append_to_stream("b", 0, events(3, start=10))  # 6-8
    store.link_to_stream("before", 0, [2, 7, 4, 8])
    expected = reads(store, "before")
    everything = store.read_all_streams_forward(0, 100)
    assert store.archive(before_event_id=7).events == 6  # 1-6 in the file, 7-8 in PostgreSQL

    # Archived and stored events mixed, by event_id.
    result = store.link_to_stream("after", 0, [2, 7, 4, 8])
    assert (result.first_version, result.last_version) == (1, 4)
    assert (result.first_event_id, result.last_event_id) == (2, 8)
    assert reads(store, "after") == expected
    assert [e.event_number for e in expected["forward"]] == [1, 2, 3, 4]
    assert [(e.stream_uuid, e.stream_version) for e in expected["forward"]] == [
        ("a", 2),
        ("b", 2),
        ("a", 4),
        ("b", 3),
    ]
    # $all does not show links, and is unchanged.
    assert store.read_all_streams_forward(0, 100) == everything
    assert store.read_all_streams_backward(-1, 100) == everything[::-1]
    # RecordedEvents read before the archive, into an existing stream after its own events.
    store.append_to_stream("mixed", 0, events(1, start=50))  # event_id 9
    picked: list[RecordedEvent] = [everything[0], everything[5]]  # event_ids 1 and 6
    result = store.link_to_stream("mixed", 1, picked)
    assert (result.first_version, result.last_version) == (2, 3)
    assert [e.event_id for e in store.read_stream_forward("mixed")] == [9, 1, 6]
    # Everything archived: the links read the same, in another store with cold caches too.
    store.archive(before_event_id=10_000)
    store.link_to_stream("late", 0, [8, 2])
    other = make_store()
    assert reads(other, "after") == expected
    assert [(e.event_id, e.event_number) for e in other.read_stream_forward("late")] == [
        (8, 1),
        (2, 2),
    ]
    # A subscription to the linking stream catches up from the origin with the same events.
    subscriber = QueueSubscriber()
    sub = other.subscribe_to_stream("after", "after-sub", subscriber, start_from="origin")
    subscriber.subscribed()
    got: list[RecordedEvent] = []
    while len(got) < 4:
        batch = subscriber.batch()
        got.extend(batch)
        sub.ack(batch[-1])
    assert got == expected["forward"]


def test_unknown_and_gone_events_are_refused_before_anything_is_written(
    make_store: MakeStore, dsn: str, schema: str, tmp_path: Path
) -> None:
    store = make_store(archive=str(tmp_path), enable_hard_deletes=True)
    store.append_to_stream("a", 0, events(3))  # 1-3
    store.append_to_stream("gone", 0, events(2))  # 4-5, hard-deleted before the archive
    store.append_to_stream("b", 0, events(2))  # 6-7
    store.append_to_stream("late", 0, events(2))  # 8-9, hard-deleted after the archive
    store.append_to_stream("kept", 0, events(2))  # 10-11, 10 hidden by max_count later
    store.append_to_stream("target", 0, events(1))  # 12
    store.delete_stream("gone", ANY_VERSION, hard=True)
    assert store.archive(before_event_id=12).events == 9  # the range 1-11, without 4 and 5
    store.delete_stream("late", ANY_VERSION, hard=True)
    store.append_to_stream("late", 0, events(1))  # 13: created again, after event 8
    store.set_stream_retention("kept", max_count=1)
    for ids, bad in (
        ([1, 99], 99),  # never written
        ([2, 4], 4),  # a gap in the archived range (hard-deleted before the archive)
        ([3, 8, 6], 8),  # in the file, but its stream was hard-deleted since
        ([6, 10], 10),  # in the file, hidden by its stream's retention
    ):
        with pytest.raises(EventNotFoundError) as err:
            store.link_to_stream("new", ANY_VERSION, ids)
        assert err.value.event_id == bad, ids
        with pytest.raises(EventNotFoundError):
            store.link_to_stream("target", 1, ids)
    with pytest.raises(StreamNotFoundError):
        store.stream_info("new")  # not even created
    assert store.stream_info("target").stream_version == 1
    assert link_rows(dsn, schema) == []
    # In the caller's transaction: nothing written there either, and the transaction goes on.
    with psycopg.connect(dsn) as conn:
        with pytest.raises(EventNotFoundError):
            store.link_to_stream("target", 1, [2, 4], conn=conn)
        store.link_to_stream("target", 1, [2, 11], conn=conn)
        assert link_rows(dsn, schema) == []  # not committed yet
    assert [e.event_id for e in store.read_stream_forward("target")] == [12, 2, 11]


def test_an_archived_event_is_a_duplicate_where_it_is_already(
    make_store: MakeStore, tmp_path: Path
) -> None:
    store = make_store(archive=str(tmp_path))
    store.append_to_stream("a", 0, events(3))
    store.link_to_stream("l", 0, [2])
    store.archive(before_event_id=10)
    with pytest.raises(DuplicateEventError):
        store.link_to_stream("a", ANY_VERSION, [1])  # one of the stream's own events
    with pytest.raises(DuplicateEventError):
        store.link_to_stream("l", ANY_VERSION, [3, 2])  # linked before the archive
    store.link_to_stream("m", 0, [3])
    with pytest.raises(DuplicateEventError):
        store.link_to_stream("m", ANY_VERSION, [3])  # linked after it
    assert [e.event_id for e in store.read_stream_forward("l")] == [2]
    assert store.stream_info("a").stream_version == 3


def test_the_link_checks_an_archived_events_stream_under_the_counter_lock(
    make_store: MakeStore, dsn: str, schema: str, tmp_path: Path
) -> None:
    """link_events_v5 trusts the caller's look-up in the files only inside an archived range,
    and only while the event's stream (as the caller found it) still exists and is not
    younger than the event: a hard delete between the look-up and the link is caught there."""
    store = make_store(archive=str(tmp_path))
    store.append_to_stream("a", 0, events(2))
    created = store.read_stream_forward("a")[0].created_at
    store.archive(before_event_id=10)
    store.append_to_stream("b", 0, events(1))  # 3, in PostgreSQL

    def call(ids: list[int], archived: list[int], streams: list[str]) -> tuple[Any, ...]:
        with sql(dsn, schema) as conn:
            row = conn.execute(
                "SELECT status, bad_event_id, archived_ids FROM link_events_v5("
                "'x', -1, %s, %s, %s, %s, 'ch', 'test')",
                (ids, archived, streams, [created] * len(archived)),
            ).fetchone()
        assert row is not None
        return tuple(row)

    assert call([3, 1, 2], [], []) == (9, None, [1, 2])  # to look up; nothing written
    assert call([1, 99], [1, 99], ["a", "a"]) == (8, 99, None)  # outside every range
    assert call([2, 1], [1, 2], ["a", "nobody"]) == (8, 2, None)  # its stream is gone
    assert link_rows(dsn, schema) == []
    assert call([3, 2, 1], [1, 2], ["a", "a"]) == (0, None, None)
    assert [e.event_id for e in store.read_stream_forward("x")] == [3, 2, 1]


def test_deletes_retention_and_the_scavenger_treat_links_to_archived_events_as_links(
    make_store: MakeStore, dsn: str, schema: str, tmp_path: Path
) -> None:
    store = make_store(archive=str(tmp_path), enable_hard_deletes=True)
    store.append_to_stream("a", 0, events(4))  # 1-4
    store.append_to_stream("b", 0, events(2))  # 5-6
    store.append_to_stream("c", 0, events(2))  # 7-8
    store.archive(before_event_id=100)
    store.link_to_stream("l", 0, [1, 5, 7, 2, 3])

    def linked() -> list[tuple[int, int]]:
        return [(e.event_number, e.event_id) for e in store.read_stream_forward("l")]

    # The source stream's retention hides the linked event, as it hides rows; the scavenger
    # then deletes the link row, as it deletes those naming the rows it deletes.
    store.set_stream_retention("c", max_count=1)
    assert linked() == [(1, 1), (2, 5), (4, 2), (5, 3)]
    wait_until(lambda: [n for n, _ in link_rows(dsn, schema)] == [1, 2, 4, 5], GONE)
    # A hard delete of its stream removes it from the linking stream, for good: the link
    # row goes with it (position 2 is a gap from now on).
    store.delete_stream("b", ANY_VERSION, hard=True)
    assert [n for n, _ in link_rows(dsn, schema)] == [1, 4, 5]
    store.append_to_stream("b", 0, events(1))
    assert linked() == [(1, 1), (4, 2), (5, 3)]
    assert [e.event_id for e in store.read_stream_backward("l")] == [3, 2, 1]
    # Truncating the linking stream counts what it hides that was readable (event 1), and
    # hides it at once: before the scavenger (held off here by its lock) deletes anything.
    with sql(dsn, schema) as held:
        key = f"eventstore_actors.scavenger.{schema}"
        held.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (key,))
        assert store.truncate_stream("l", 4) == 1
        assert linked() == [(4, 2), (5, 3)]
        assert [e.event_id for e in store.read_stream_backward("l")] == [3, 2]
        assert [n for n, _ in link_rows(dsn, schema)] == [1, 4, 5]
    # The scavenger then deletes the hidden link rows; the others stay.
    wait_until(lambda: [n for n, _ in link_rows(dsn, schema)] == [4, 5], GONE, what="the scavenger")
    assert linked() == [(4, 2), (5, 3)]
    assert store.stream_info("l").stream_version == 5


def parked_ids(dsn: str, schema: str) -> list[int]:
    with sql(dsn, schema) as conn:
        found = conn.execute("SELECT event_id FROM parked_events ORDER BY event_id").fetchall()
    return [int(r[0]) for r in found]


def park(dsn: str, schema: str, *event_ids: int) -> None:
    """Parked entries of a subscription to $all naming these events (as a subscriber's
    failures would leave them)."""
    with sql(dsn, schema) as conn:
        for event_id in event_ids:
            conn.execute(
                "INSERT INTO parked_events (stream_uuid, subscription_name, event_id, reason) "
                "VALUES ('$all', 'projector', %s, 'failed')",
                (event_id,),
            )


def test_a_hard_delete_leaves_no_link_or_parked_entry_naming_its_archived_events(
    make_store: MakeStore, dsn: str, schema: str, tmp_path: Path
) -> None:
    """The function's joins go through the events table, which no longer holds archived
    events: the files say which of the events that links and parked entries name are the
    deleted stream's, and those rows go in the delete's transaction, others stay."""
    store = make_store(archive=str(tmp_path), enable_hard_deletes=True)
    store.append_to_stream("a", 0, events(2))  # 1-2
    store.append_to_stream("b", 0, events(3))  # 3-5
    store.archive(before_event_id=100)
    store.append_to_stream("b", 3, events(1))  # 6, still in PostgreSQL
    store.link_to_stream("l", 0, [1, 3, 5, 6, 2])
    park(dsn, schema, 2, 4, 6)
    # The contract's refusals come before anything is deleted, as without archives.
    with pytest.raises(StreamNotFoundError):
        store.delete_stream("nobody", ANY_VERSION, hard=True)
    with pytest.raises(WrongExpectedVersionError):
        store.delete_stream("b", 3, hard=True)
    assert len(link_rows(dsn, schema)) == 5 and parked_ids(dsn, schema) == [2, 4, 6]

    store.delete_stream("b", ANY_VERSION, hard=True)

    assert link_rows(dsn, schema) == [(1, 1), (5, 2)]
    assert parked_ids(dsn, schema) == [2]
    assert [(e.event_number, e.event_id) for e in store.read_stream_forward("l")] == [
        (1, 1),
        (5, 2),
    ]


def test_links_made_while_a_hard_delete_looks_in_the_files_go_with_it(
    make_store: MakeStore, dsn: str, schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The files are asked before the delete's transaction (no lock held while they are
    read), then again under the counter row lock for what was linked in between."""
    from eventstore_actors.storage import archive

    store = make_store(archive=str(tmp_path), enable_hard_deletes=True)
    store.append_to_stream("b", 0, events(3))  # 1-3
    store.archive(before_event_id=100)
    store.link_to_stream("l", 0, [1])
    hook = archive.overlay()
    assert hook is not None
    asked: list[list[int]] = []
    looked_up = hook.archived_streams

    def archived_streams(conn: Any, event_ids: Any) -> dict[int, str]:
        asked.append(sorted(event_ids))
        if len(asked) == 1:  # before the transaction: another caller links event 2 now
            store.link_to_stream("m", 0, [2])
        return looked_up(conn, event_ids)

    monkeypatch.setattr(hook, "archived_streams", archived_streams)
    store.delete_stream("b", ANY_VERSION, hard=True)

    assert asked == [[1], [2]]
    assert link_rows(dsn, schema) == []
    assert store.read_stream_forward("m") == []


def test_a_hard_delete_whose_files_cannot_be_read_deletes_nothing(
    make_store: MakeStore, dsn: str, schema: str, tmp_path: Path
) -> None:
    store = make_store(archive=str(tmp_path), enable_hard_deletes=True)
    store.append_to_stream("b", 0, events(2))  # 1-2
    store.archive(before_event_id=100)
    store.append_to_stream("b", 2, events(1))  # 3
    store.link_to_stream("l", 0, [1])
    for file in tmp_path.rglob("*.parquet"):
        file.rename(file.with_suffix(".moved"))

    with pytest.raises(StoreUnavailableError, match=r"archive file .* cannot be read"):
        store.delete_stream("b", ANY_VERSION, hard=True)

    assert store.stream_info("b").stream_version == 3
    assert link_rows(dsn, schema) == [(1, 1)]


def test_the_scavenger_deletes_links_and_parked_entries_of_archived_events_retention_hides(
    make_store: MakeStore, dsn: str, schema: str, tmp_path: Path
) -> None:
    """Issue (defect 3): the links and parked entries naming archived events that their
    stream's retention hides go as the rows of such events would (the same rule as hard
    deletes); those naming archived events still readable stay."""
    store = make_store(archive=str(tmp_path))
    store.append_to_stream("r", 0, events(10))  # 1-10
    store.append_to_stream("k", 0, events(2))  # 11-12, kept
    store.link_to_stream("l", 0, [1, 2, 3, 4, 5, 11])
    park(dsn, schema, 2, 3, 9, 12)
    store.archive(before_event_id=100)
    assert store.truncate_stream("r", 8) == 7

    wait_until(lambda: [i for _, i in link_rows(dsn, schema)] == [11], GONE, what="the scavenger")
    wait_until(lambda: parked_ids(dsn, schema) == [9, 12], GONE, what="the scavenger")
    assert [e.event_id for e in store.read_stream_forward("l")] == [11]
    assert [e.event_id for e in store.read_stream_forward("r")] == [8, 9, 10]
