"""The scavenger (lifecycle/scavenger.py): rows hidden by retention are deleted for good, in
bounded batches, by a supervised actor that survives crashes and lost connections."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import sql as pgsql
from support import kill_backends, process_backends, query, wait_until
from support.factory import make_events, new_stream, versions

from eventstore_actors import ANY_VERSION, EventStore
from eventstore_actors.actors.supervised import Crash
from eventstore_actors.lifecycle import scavenger
from eventstore_actors.sql import statement
from eventstore_actors.storage import retention

#: Seconds within which hidden rows must be gone (the spec: within a minute).
GONE = 30.0


def stored_versions(dsn: str, schema: str, stream: str) -> list[int]:
    found = query(
        dsn,
        schema,
        "SELECT e.stream_version FROM events AS e JOIN streams AS s USING (stream_id) "
        "WHERE s.stream_uuid = %s ORDER BY 1",
        stream,
    )
    return [int(r[0]) for r in found]


def stream_of(store: EventStore, count: int, stream: str | None = None) -> str:
    stream = stream or new_stream()
    store.append_to_stream(stream, ANY_VERSION, make_events(count))
    return stream


def test_truncated_rows_links_and_parked_entries_are_deleted(
    store: EventStore, dsn: str, schema: str
) -> None:
    source = stream_of(store, 10)  # event_ids 1-10
    linking = new_stream()
    store.link_to_stream(linking, 0, [2, 3, 9])
    query(
        dsn,
        schema,
        "INSERT INTO parked_events (stream_uuid, subscription_name, event_id, reason) "
        "VALUES ('$all', 'p', 3, 'test'), ('$all', 'p', 9, 'test')",
    )
    assert store.truncate_stream(source, 6) == 5
    wait_until(lambda: stored_versions(dsn, schema, source) == [6, 7, 8, 9, 10], GONE)
    assert query(dsn, schema, "SELECT event_id FROM links ORDER BY 1") == [(9,)]
    assert query(dsn, schema, "SELECT event_id FROM parked_events") == [(9,)]
    # The stream itself stays, at its version; reads and appends are as before.
    info = store.stream_info(source)
    assert (info.stream_version, info.first_version) == (10, 6)
    assert versions(store.read_stream_forward(source)) == [6, 7, 8, 9, 10]
    assert [e.event_id for e in store.read_stream_forward(linking)] == [9]
    store.append_to_stream(source, 10, make_events(1))
    assert store.metrics()["scavenged_rows_total"] >= 5


def test_rows_beyond_max_count_are_deleted_as_the_stream_grows(
    store: EventStore, dsn: str, schema: str
) -> None:
    stream = stream_of(store, 5)
    store.set_stream_retention(stream, max_count=2)
    wait_until(lambda: stored_versions(dsn, schema, stream) == [4, 5], GONE)
    store.append_to_stream(stream, 5, make_events(3))
    # Not woken by the append: the next periodic pass finds them.
    wait_until(lambda: stored_versions(dsn, schema, stream) == [7, 8], GONE)


def test_a_linking_streams_hidden_positions_are_deleted(
    store: EventStore, dsn: str, schema: str
) -> None:
    source = stream_of(store, 4)
    linking = new_stream()
    store.link_to_stream(linking, 0, [1, 2, 3, 4])
    store.truncate_stream(linking, 3)
    count = "SELECT count(*) FROM links"
    wait_until(lambda: query(dsn, schema, count) == [(2,)], GONE)
    assert stored_versions(dsn, schema, source) == [1, 2, 3, 4], "the linked events stay"


def test_one_batch_deletes_at_most_its_size(store: EventStore, dsn: str, schema: str) -> None:
    """The storage step the actor repeats: a bounded batch, the lowest positions first."""
    stream = stream_of(store, 30)
    (stream_id,) = query(
        dsn, schema, "SELECT stream_id FROM streams WHERE stream_uuid = %s", stream
    )[0]
    settings = store.settings
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(pgsql.SQL("SET search_path TO {}").format(pgsql.Identifier(schema)))
        key = f"tests.{uuid.uuid4()}"
        assert retention.purge(conn, key, stream_id, 21, 7) == (7, True, 8)
        assert stored_versions(dsn, schema, stream)[0] == 8
        # The next batch starts where the last one stopped; the last one stops at the bound.
        assert retention.purge(conn, key, stream_id, 21, 7, 8) == (7, True, 15)
        assert retention.purge(conn, key, stream_id, 21, 7, 15) == (6, True, 21)
        assert retention.purge(conn, key, stream_id, 21, 7, 21) == (0, True, 21)
        assert retention.purge(conn, key, stream_id, 21, 7) == (0, True, 21), "from the start"
        assert stored_versions(dsn, schema, stream) == list(range(21, 31))
        # Another process holding the scavenger's lock: nothing is done, and it says so.
        key = "tests.held"
        with psycopg.connect(dsn, autocommit=True) as other, other.transaction():
            other.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))
            assert retention.purge(conn, key, stream_id, 31, 7) == (0, False, 1)
        assert stored_versions(dsn, schema, stream)[0] == 21
    assert settings.schema == schema


def test_the_actor_works_through_many_batches(
    store: EventStore, dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scavenger, "BATCH", 10)
    streams = [stream_of(store, 45) for _ in range(3)]
    for stream in streams:
        store.truncate_stream(stream, 41)
    for stream in streams:
        wait_until(lambda s=stream: stored_versions(dsn, schema, s) == [41, 42, 43, 44, 45], GONE)  # type: ignore[misc]


def test_the_actor_takes_at_most_its_share_of_the_time_it_works(
    store: EventStore, dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After each batch it rests long enough that its batches take at most SHARE of the
    time from the first batch to the last rest, whatever the batches cost."""
    monkeypatch.setattr(scavenger, "BATCH", 20)
    stream = stream_of(store, 400)
    store.truncate_stream(stream, 401)
    wait_until(lambda: stored_versions(dsn, schema, stream) == [], GONE)
    actor = store._registry.peek(scavenger.CHILD_ID).proxy()
    working, resting = actor.working.get(), actor.resting.get()
    assert working > 0
    assert working / (working + resting) <= scavenger.SHARE * 1.01


def test_batches_shrink_when_slow_and_grow_back_when_fast() -> None:
    """So that the rest after a batch never needs cutting short on a loaded machine (which
    would raise the share) and a stop waits for one short batch and its rest at most."""
    slow, fast, rests = scavenger.SLOW * 1.5, scavenger.SLOW / 10, 1 / scavenger.SHARE - 1
    assert slow * rests < scavenger.MAX_REST
    assert scavenger.pace(1000, slow) == (500, slow * rests)
    assert scavenger.pace(scavenger.MIN_BATCH, slow)[0] == scavenger.MIN_BATCH
    assert scavenger.pace(500, fast) == (1000, fast * rests)
    assert scavenger.pace(scavenger.BATCH, fast)[0] == scavenger.BATCH
    assert scavenger.pace(800, scavenger.SLOW / 2)[0] == 800, "near SLOW: unchanged"
    assert scavenger.pace(50, 10.0)[1] == scavenger.MAX_REST, "a stalled server"


def test_batches_cover_a_streams_events_and_links_together(
    store: EventStore, dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Positions are shared by a stream's own events and its links: each batch is a range of
    them, whichever kind each holds."""
    monkeypatch.setattr(scavenger, "BATCH", 3)
    source = stream_of(store, 5)  # event_ids 1-5
    mixed = new_stream()
    for n in range(5):  # positions: own event (event_ids 6-10), link to n + 1, ...
        store.append_to_stream(mixed, 2 * n, make_events(1))
        store.link_to_stream(mixed, 2 * n + 1, [n + 1])
    assert store.truncate_stream(mixed, 8) == 7
    links = "SELECT event_number FROM links ORDER BY 1"
    wait_until(
        lambda: (
            stored_versions(dsn, schema, mixed) == [9]
            and query(dsn, schema, links) == [(8,), (10,)]
        ),
        GONE,
    )
    assert stored_versions(dsn, schema, source) == [1, 2, 3, 4, 5], "the linked events stay"
    assert [e.event_id for e in store.read_stream_forward(mixed)] == [4, 10, 5]


def test_the_scavenger_is_restarted_after_a_crash(store: EventStore, dsn: str, schema: str) -> None:
    registry = store._registry
    first = wait_until(lambda: registry.peek(scavenger.CHILD_ID))
    first.tell(Crash(RuntimeError("injected bug")))
    second = wait_until(
        lambda: (
            (ref := registry.peek(scavenger.CHILD_ID)) is not None
            and ref.actor_urn != first.actor_urn
            and ref.is_alive()
            and ref
        ),
        what="a new scavenger",
    )
    assert second
    stream = stream_of(store, 6)
    store.truncate_stream(stream, 5)
    wait_until(lambda: stored_versions(dsn, schema, stream) == [5, 6], GONE)


def test_the_scavenger_reconnects_after_losing_its_connection(
    store: EventStore, dsn: str, schema: str
) -> None:
    stream = stream_of(store, 6)
    store.truncate_stream(stream, 3)
    wait_until(lambda: stored_versions(dsn, schema, stream) == [3, 4, 5, 6], GONE)
    first = store._registry.peek(scavenger.CHILD_ID)
    # Its last statement was the (empty) look-up that ended its pass.
    own = wait_until(
        lambda: [pid for pid, text in process_backends(dsn).items() if "scavenger" in text],
        what="the scavenger's backend",
    )
    assert kill_backends(dsn, own) == 1
    store.truncate_stream(stream, 5)
    wait_until(lambda: stored_versions(dsn, schema, stream) == [5, 6], GONE)
    assert store._registry.peek(scavenger.CHILD_ID) is first, "reconnected, not restarted"


def test_a_pass_after_a_crash_redoes_the_deletes_the_crash_lost(
    store: EventStore, dsn: str, schema: str
) -> None:
    """The scavenger commits without waiting for the disk, so a server crash may lose its last
    batches: their rows come back, still hidden (reads never return them), and every
    connection is gone. Here: the rows of a finished purge put back while the scavenger's
    session is killed. Its next pass, on a new connection, must not trust the positions it
    had learnt were empty: it deletes the rows again."""
    stream = stream_of(store, 30)
    (stream_id,) = query(
        dsn, schema, "SELECT stream_id FROM streams WHERE stream_uuid = %s", stream
    )[0]
    saved = f"saved_{uuid.uuid4().hex}"
    query(
        dsn,
        schema,
        pgsql.SQL(
            "CREATE TABLE {} AS SELECT * FROM events "
            "WHERE stream_id = %s AND stream_version BETWEEN 11 AND 20"
        ).format(pgsql.Identifier(saved)),  # type: ignore[arg-type]
        stream_id,
    )
    store.truncate_stream(stream, 21)
    wait_until(lambda: stored_versions(dsn, schema, stream) == list(range(21, 31)), GONE)
    first = store._registry.peek(scavenger.CHILD_ID)
    own = wait_until(
        lambda: [pid for pid, text in process_backends(dsn).items() if "scavenger" in text],
        what="the scavenger's backend",
    )
    # The crash: the last batches' commits lost (rows 11-20 back), the connection gone.
    query(
        dsn,
        schema,
        pgsql.SQL("INSERT INTO events SELECT * FROM {}").format(pgsql.Identifier(saved)),  # type: ignore[arg-type]
    )
    assert kill_backends(dsn, own) == 1
    assert versions(store.read_stream_forward(stream)) == list(range(21, 31)), "still hidden"
    scavenger.wake(store._registry)  # its first pass notices the lost connection
    wait_until(lambda: stored_versions(dsn, schema, stream) == list(range(21, 31)), GONE)
    assert store._registry.peek(scavenger.CHILD_ID) is first, "reconnected, not restarted"


def test_a_scavenger_batch_commits_without_waiting_for_the_disk(
    store: EventStore, dsn: str, schema: str
) -> None:
    """Its commits never queue appends behind a WAL flush of its own; for its transactions
    only (the next transaction on the connection is durable again)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(pgsql.SQL("SET search_path TO {}").format(pgsql.Identifier(schema)))
        with conn.transaction():
            conn.execute(statement("retention/begin_purge"))
            assert conn.execute("SHOW synchronous_commit").fetchone() == ("off",)
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
    assert store.settings.schema == schema


def test_streams_with_nothing_hidden_keep_every_row(
    store: EventStore, dsn: str, schema: str
) -> None:
    kept = stream_of(store, 3)
    store.set_stream_retention(kept, max_count=10)  # visited first (lower stream_id)
    cut = stream_of(store, 3)
    store.truncate_stream(cut, 3)
    wait_until(lambda: stored_versions(dsn, schema, cut) == [3], GONE)
    assert stored_versions(dsn, schema, kept) == [1, 2, 3]


def test_a_batch_killed_midway_leaves_every_row_or_none(
    store: EventStore, dsn: str, schema: str
) -> None:
    """A scavenger killed in the middle of a batch (here: its session, while the batch waits
    for a link row another session holds) deletes nothing of it; the next pass does it all."""
    source = stream_of(store, 10)  # event_ids 1-10
    linking = new_stream()
    store.link_to_stream(linking, 0, [3])
    with psycopg.connect(dsn) as holder:
        holder.execute(pgsql.SQL("SET search_path TO {}").format(pgsql.Identifier(schema)))
        holder.execute("SELECT 1 FROM links WHERE event_id = 3 FOR UPDATE")
        store.truncate_stream(source, 6)
        # The batch (one statement) deleted events 1-5 uncommitted and waits for the link to 3.
        waiting = wait_until(
            lambda: [
                pid
                for pid, text in process_backends(dsn).items()
                if "One scavenger batch" in text and lock_waiting(dsn, pid)
            ],
            GONE,
            what="the scavenger's batch waiting for the link row",
        )
        assert versions(store.read_stream_forward(source)) == [6, 7, 8, 9, 10]
        assert kill_backends(dsn, waiting) == 1
        # Nothing of the killed batch is gone: every event and the link are still stored
        # (a batch of the next pass, if one started, waits for the same row uncommitted).
        assert stored_versions(dsn, schema, source) == list(range(1, 11))
        assert query(dsn, schema, "SELECT event_id FROM links") == [(3,)]
        holder.rollback()
    wait_until(lambda: stored_versions(dsn, schema, source) == [6, 7, 8, 9, 10], GONE)
    assert query(dsn, schema, "SELECT event_id FROM links") == []
    assert versions(store.read_stream_forward(source)) == [6, 7, 8, 9, 10]


def lock_waiting(dsn: str, pid: int) -> bool:
    """Whether backend `pid` waits for a lock."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()
    return bool(row and row[0] == "Lock")
