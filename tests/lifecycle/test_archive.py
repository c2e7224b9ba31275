"""Archiving to Parquet (issue 20, API.md part 3 "Archiving to Parquet"): events moved to
plain Parquet files read back transparently, every step crash-safe, bad input refused before
anything changes. Real PostgreSQL, real Parquet files (pyarrow)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from support import QueueSubscriber, events, wait_until
from support.storage_sql import plan_nodes

from eventstore_actors import (
    ANY_VERSION,
    ArchiveResult,
    ConfigError,
    EventData,
    EventStore,
    RecordedEvent,
    StoreUnavailableError,
    admin,
)
from eventstore_actors.lifecycle.archive import writer
from eventstore_actors.lifecycle.archive.owner import MARKER
from eventstore_actors.sql import statement

pq = pytest.importorskip("pyarrow.parquet")

ROOT = Path(__file__).resolve().parents[2]


def fill(store: EventStore) -> None:
    """Streams of own events interleaved, links to early and late events, a soft-deleted
    stream and a stream hard-deleted later by the tests that need it."""
    for i in range(12):
        store.append_to_stream(f"s-{i % 3}", ANY_VERSION, events(5, start=i * 5))
    store.append_to_stream("gone", ANY_VERSION, events(3, start=900))
    store.append_to_stream("soft", ANY_VERSION, events(2, start=950))
    store.link_to_stream("links", ANY_VERSION, [1, 7, 40, 62])
    store.append_to_stream("links", ANY_VERSION, events(2, start=990))
    store.link_to_stream("links", ANY_VERSION, [3, 61])
    store.delete_stream("soft", ANY_VERSION)


def snapshot(store: EventStore) -> dict[str, Any]:
    """Every way of reading the store, to compare before and after an archive."""
    streams = ["s-0", "s-1", "s-2", "links", "gone"]
    out: dict[str, Any] = {
        "all": store.read_all_streams_forward(0, 10_000),
        "all_back": store.read_all_streams_backward(-1, 10_000),
        "all_pages": list(store.stream_all_forward(0, 7)),
        "all_pages_back": list(store.stream_all_backward(-1, 7)),
        "all_mid": store.read_all_streams_forward(20, 9),
        "all_mid_back": store.read_all_streams_backward(30, 9),
        "typed": store.read_all_streams_forward(0, 10_000, event_types=["tests.Numbered"]),
        "prefix": store.read_all_streams_forward(0, 10_000, stream_prefix="s-1"),
    }
    for s in streams:
        out[s] = store.read_stream_forward(s)
        out[s + "<"] = store.read_stream_backward(s)
        out[s + "~"] = list(store.stream_forward(s, 0, 3))
        out[s + "~<"] = list(store.stream_backward(s, -1, 3))
        out[s + "@3"] = store.read_stream_forward(s, 3, 4)
        out[s + "@5<"] = store.read_stream_backward(s, 5, 2)
    return out


def assert_same(before: dict[str, Any], after: dict[str, Any]) -> None:
    for key, value in before.items():
        assert after[key] == value, key


def pg_event_ids(dsn: str, schema: str) -> list[int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            sql.SQL("SELECT event_id FROM {}.events ORDER BY event_id").format(
                sql.Identifier(schema)
            )
        ).fetchall()
    return [int(r[0]) for r in rows]


def manifest(dsn: str, schema: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            sql.SQL(
                "SELECT first_event_id, last_event_id, event_count, state FROM {}.archive_files "
                "ORDER BY first_event_id"
            ).format(sql.Identifier(schema))
        ).fetchall()


# The files ------------------------------------------------------------------------------------
def test_the_file_is_plain_parquet_with_the_bytes_as_stored(
    make_store: Callable[..., EventStore], dsn: str, schema: str, tmp_path: Path
) -> None:
    store = make_store()
    fill(store)
    with psycopg.connect(dsn) as conn:
        stored = conn.execute(
            sql.SQL(
                "SELECT event_id, data, metadata, event_uuid::text FROM {}.events "
                "WHERE event_id < 20 ORDER BY event_id"
            ).format(sql.Identifier(schema))
        ).fetchall()
    result = store.archive(before_event_id=20, target=str(tmp_path))
    assert result == ArchiveResult(1, 19, 19, result.files)
    assert len(result.files) == 1 and Path(result.files[0]).parent == tmp_path
    table = pq.read_table(result.files[0])  # any Parquet reader: no schema of ours needed
    assert table.column_names == [
        "event_id",
        "stream_uuid",
        "stream_version",
        "event_uuid",
        "event_type",
        "correlation_id",
        "causation_id",
        "data",
        "metadata",
        "subject",
        "created_at",
    ]
    assert str(table.schema.field("created_at").type) == "timestamp[us, tz=UTC]"
    rows = table.to_pylist()
    assert [(r["event_id"], r["data"], r["metadata"], r["event_uuid"]) for r in rows] == [
        tuple(s) for s in stored
    ]
    assert rows[0]["stream_uuid"] == "s-0" and rows[0]["stream_version"] == 1
    assert json.loads(rows[0]["data"]) == {"n": 0}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    assert pg_event_ids(dsn, schema)[0] == 20


# Transparent reads ----------------------------------------------------------------------------
def test_every_read_is_the_same_before_and_after_archives(
    make_store: Callable[..., EventStore], dsn: str, schema: str, tmp_path: Path
) -> None:
    store = make_store(archive=str(tmp_path), enable_hard_deletes=True)
    fill(store)
    before = snapshot(store)
    for cut in (1, 9, 30, 45):  # nothing, then prefixes of growing size
        store.archive(before_event_id=cut)
        assert_same(before, snapshot(store))
    # Another store (other connections, cold caches) reads the same.
    other = make_store()
    assert_same(before, snapshot(other))
    # Every event archived, links and all.
    result = store.archive(before_event_id=10_000)
    assert result.events > 0 and pg_event_ids(dsn, schema) == []
    assert_same(before, snapshot(store))
    assert_same(before, snapshot(other))


def test_versions_appends_and_deletes_keep_their_meaning(
    make_store: Callable[..., EventStore], dsn: str, schema: str, tmp_path: Path
) -> None:
    store = make_store(archive=str(tmp_path), enable_hard_deletes=True)
    fill(store)
    store.archive(before_event_id=10_000)
    # Appends carry on from the stream's version; the new event is read after the archived.
    assert store.stream_info("s-0").stream_version == 20
    store.append_to_stream("s-0", 20, events(1, start=5000))
    assert [e.stream_version for e in store.read_stream_forward("s-0")] == list(range(1, 22))
    # A soft-deleted stream stays deleted; its events stay in $all.
    with pytest.raises(Exception, match="deleted"):
        store.read_stream_forward("soft")
    assert [e for e in store.read_all_streams_forward(0, 10_000) if e.stream_uuid == "soft"]
    # A hard delete removes archived events from every read, and from linking streams.
    gone = store.read_stream_forward("gone")
    store.delete_stream("gone", ANY_VERSION, hard=True)
    ids = {e.event_id for e in gone}
    assert not ids & {e.event_id for e in store.read_all_streams_forward(0, 10_000)}
    assert not ids & {e.event_id for e in store.read_all_streams_backward(-1, 10_000)}
    # The links to two of them leave gaps, as a hard delete of rows in PostgreSQL does.
    linked = [e.event_id for e in store.read_stream_forward("links")]
    assert {61, 62} <= ids and linked == [1, 7, 40, 66, 67, 3]
    assert [e.event_number for e in store.read_stream_forward("links")] == [1, 2, 3, 5, 6, 7]
    for size in (1, 2, 3, 4):  # pages whose positions are dropped still lead to the next
        assert list(store.stream_forward("links", 0, size)) == store.read_stream_forward("links")
        assert list(store.stream_backward("links", -1, size)) == store.read_stream_backward("links")
    # A stream created again under the name starts afresh: the archived events stay gone.
    store.append_to_stream("gone", 0, events(1, start=7000))
    assert [e.data["n"] for e in store.read_stream_forward("gone")] == [7000]


def test_subscription_catch_up_from_the_origin_is_unchanged(
    make_store: Callable[..., EventStore], tmp_path: Path
) -> None:
    store = make_store(archive=str(tmp_path))
    fill(store)
    expected_all = store.read_all_streams_forward(0, 10_000)
    expected_links = store.read_stream_forward("links")
    store.archive(before_event_id=50)

    def receive(subscriber: QueueSubscriber, sub: Any, count: int) -> list[RecordedEvent]:
        got: list[RecordedEvent] = []
        while len(got) < count:
            batch = subscriber.batch()
            got.extend(batch)
            sub.ack(batch[-1])
        return got

    everything = QueueSubscriber()
    sub = store.subscribe_to_all_streams("all", everything, start_from="origin")
    everything.subscribed()
    assert receive(everything, sub, len(expected_all)) == expected_all
    one = QueueSubscriber()
    sub = store.subscribe_to_stream("links", "links-sub", one, start_from="origin")
    one.subscribed()
    assert receive(one, sub, len(expected_links)) == expected_links
    # Live events still follow.
    store.append_to_stream("links", ANY_VERSION, events(1, start=8000))
    assert one.batch()[0].data["n"] == 8000


def test_older_than_moves_the_old_prefix_only(
    make_store: Callable[..., EventStore], dsn: str, schema: str, tmp_path: Path
) -> None:
    store = make_store(archive=str(tmp_path))
    store.append_to_stream("old", ANY_VERSION, events(4))
    old = store.read_stream_forward("old")
    wait_until(
        lambda: datetime.now(UTC) > old[-1].created_at + timedelta(seconds=1.5),
        what="time to pass",
    )
    store.append_to_stream("new", ANY_VERSION, events(3))
    assert store.archive(older_than=timedelta(days=1)).events == 0
    new = store.read_stream_forward("new")
    age = datetime.now(UTC) - (old[-1].created_at + (new[0].created_at - old[-1].created_at) / 2)
    result = store.archive(older_than=age)
    assert (result.first_event_id, result.last_event_id, result.events) == (1, 4, 4)
    assert pg_event_ids(dsn, schema) == [5, 6, 7]
    assert store.read_stream_forward("old") == old


# Bad input ------------------------------------------------------------------------------------
def test_bad_input_is_refused_before_anything_changes(
    make_store: Callable[..., EventStore], dsn: str, schema: str, tmp_path: Path
) -> None:
    store = make_store()
    store.append_to_stream("s", ANY_VERSION, events(5))
    with pytest.raises(ValueError, match="exactly one"):
        store.archive(before_event_id=3, older_than=timedelta(days=1), target=str(tmp_path))
    with pytest.raises(ValueError, match="exactly one"):
        store.archive(target=str(tmp_path))
    for bad in (0, -1, 2**63, True, "3", 1.5):
        with pytest.raises(ValueError, match="before_event_id"):
            store.archive(before_event_id=bad, target=str(tmp_path))
    for age in (timedelta(0), timedelta(seconds=-1), 30):
        with pytest.raises(ValueError, match="older_than"):
            store.archive(older_than=age, target=str(tmp_path))
    with pytest.raises(ConfigError, match="no archive target"):
        store.archive(before_event_id=3)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="not writable"):
        store.archive(before_event_id=3, target=str(blocker / "archive"))
    with pytest.raises(ConfigError, match="archive"):
        make_store(archive=42)
    from eventstore_actors.config import Settings

    with pytest.raises(ConfigError, match="no_store_here"):  # as the command line runs it
        writer.archive(
            Settings(dsn=dsn, schema="no_store_here"), before_event_id=3, target=str(tmp_path)
        )
    assert pg_event_ids(dsn, schema) == [1, 2, 3, 4, 5]
    assert manifest(dsn, schema) == []
    assert list(tmp_path.iterdir()) == [blocker]
    # Nothing to move: before the first event, or again at the same point.
    assert store.archive(before_event_id=1, target=str(tmp_path)) == ArchiveResult(0, 0, 0, [])
    assert store.archive(before_event_id=3, target=f"file://{tmp_path}").events == 2
    assert store.archive(before_event_id=3, target=str(tmp_path)).events == 0
    assert store.read_stream_forward("s") == store.read_stream_forward("s", 0, 10)
    assert [e.event_id for e in store.read_stream_forward("s")] == [1, 2, 3, 4, 5]


def test_archived_parked_events_are_neither_counted_nor_replayed(
    make_store: Callable[..., EventStore], dsn: str, schema: str, tmp_path: Path
) -> None:
    """`parked_events` no longer lists an archived parked event (its row is kept): the parked
    counts (subscription info, `status`), `replay_parked` and `forget_parked` agree with it."""
    from eventstore_actors.status import report

    store = make_store()
    store.append_to_stream("s1", ANY_VERSION, events(2))  # event_ids 1, 2
    store.append_to_stream("s2", ANY_VERSION, events(3, start=3))  # 3, 4, 5
    for name, stream, parked_id, count in [("a", "s1", 1, 2), ("b", "s2", 3, 3)]:
        subscriber = QueueSubscriber()
        sub = store.subscribe_to_stream(stream, name, subscriber)
        subscriber.subscribed()
        first = subscriber.batch()[0]
        assert first.event_id == parked_id
        sub.nack(first, "park", "no")
        subscriber.collect(sub, count - 1)
        wait_until(lambda: store.subscription_info(name, stream).checkpoint == count)  # noqa: B023
        store.unsubscribe_from_stream(stream, name)
    assert [store.subscription_info(n, s).parked for n, s in [("a", "s1"), ("b", "s2")]] == [1, 1]

    assert store.archive(before_event_id=3, target=str(tmp_path)).events == 2
    assert store.parked_events("a", "s1") == []
    assert [p.event.event_id for p in store.parked_events("b", "s2")] == [3]
    assert store.subscription_info("a", "s1").parked == 0
    assert store.subscription_info("b", "s2").parked == 1
    shown = json.loads(report(dsn, schema, as_json=True)[0])["subscriptions"]
    assert {(r["subscription_name"], r["parked"]) for r in shown} == {("a", 0), ("b", 1)}
    assert store.replay_parked("a", "s1") == 0
    assert store.replay_parked("b", "s2") == 1
    # forget_parked counts what parked_events listed: the archived entry goes, uncounted.
    assert store.forget_parked("a", "s1") == 0
    assert store.forget_parked("a", "s1", [1]) == 0
    assert store.forget_parked("b", "s2") == 1


def test_no_store_or_no_server_leaves_no_target_directory(dsn: str, tmp_path: Path) -> None:
    """The schema and the connection are checked before the target, whose check creates it:
    a wrong --schema or an unreachable server leaves nothing behind (as the command line and
    `writer.archive` run it)."""
    from support.cli import cli

    from eventstore_actors.config import Settings

    target = tmp_path / "new" / "deep" / "dir"
    refused = cli(
        "archive",
        "--dsn",
        dsn,
        "--schema",
        "no_store_here",
        "--before",
        "5",
        "--target",
        str(target),
    )
    assert refused.returncode == 1 and "no_store_here" in refused.stderr, refused.stderr
    assert list(tmp_path.iterdir()) == []
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    closed = psycopg.conninfo.make_conninfo(dsn, host="127.0.0.1", port=port)
    with pytest.raises(StoreUnavailableError):
        writer.archive(Settings(dsn=closed), before_event_id=5, target=str(target))
    assert list(tmp_path.iterdir()) == []


# Crash safety ---------------------------------------------------------------------------------
_CRASHING = textwrap.dedent(
    """
    import os, sys
    from eventstore_actors import EventStore
    from eventstore_actors.lifecycle.archive import writer

    dsn, schema, target, step, before = sys.argv[1:6]
    writer.DELETE_BATCH = 7
    seen = []

    def crash(name):
        seen.append(name)
        if name == step and (step != "deleting" or seen.count("deleting") == 2):
            os._exit(17)  # killed between two steps: nothing cleans up

    writer.FAULT.append(crash)
    with EventStore.start(dsn, schema=schema) as store:
        store.archive(before_event_id=int(before), target=target)
    sys.exit(3)  # the step never came
    """
)


@pytest.mark.parametrize("step", ["written", "recorded", "deleting", "deleted"])
def test_a_process_killed_between_steps_loses_and_duplicates_nothing(
    make_store: Callable[..., EventStore], dsn: str, schema: str, tmp_path: Path, step: str
) -> None:
    store = make_store(archive=str(tmp_path))
    fill(store)
    before = snapshot(store)
    proc = subprocess.run(
        [sys.executable, "-c", _CRASHING, dsn, schema, str(tmp_path), step, "60"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 17, proc.stderr.decode()[-2000:]
    remaining = pg_event_ids(dsn, schema)
    if step == "written":
        assert manifest(dsn, schema) == [] and remaining[0] == 1
    elif step == "recorded":
        assert manifest(dsn, schema) == [(1, 59, 59, "recorded")] and remaining[0] == 1
    elif step == "deleting":
        assert manifest(dsn, schema)[0][3] == "recorded" and remaining[0] == 15
    else:
        assert manifest(dsn, schema) == [(1, 59, 59, "deleted")] and remaining[0] == 60
    assert_same(before, snapshot(store))  # every event exactly once, in order
    assert_same(before, snapshot(make_store()))
    # The next archive finishes the job (or redoes the unlisted file) and moves on.
    store.archive(before_event_id=66)
    assert [m[3] for m in manifest(dsn, schema)] == ["deleted"] * len(manifest(dsn, schema))
    assert manifest(dsn, schema)[-1][1] == 65
    assert pg_event_ids(dsn, schema)[0] == 66
    assert_same(before, snapshot(store))
    # Only the listed files stay: an unlisted one of the crashed run (another range than
    # the next archive's) is removed, not left with data nothing lists.
    listed = {f"events-{m[0]:020d}-{m[1]:020d}.parquet" for m in manifest(dsn, schema)}
    assert {p.name for p in tmp_path.iterdir()} == listed | {MARKER}  # the store's own


_READER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from eventstore_actors import EventStore

    dsn, schema, expected_path, stop_path = sys.argv[1:5]
    expected = json.loads(Path(expected_path).read_text())
    reads = 0
    with EventStore.start(dsn, schema=schema, pool_size=2) as store:
        while True:
            stop = Path(stop_path).exists()
            got = [e.event_id for e in store.read_all_streams_forward(0, 100000)]
            back = [e.event_id for e in store.read_all_streams_backward(-1, 100000)]
            paged = [e.event_id for e in store.stream_all_forward(0, 13)]
            stream = [e.event_id for e in store.read_stream_forward("s-1")]
            links = [e.event_id for e in store.read_stream_forward("links")]
            actual = {"all": got, "back": back[::-1], "paged": paged, "s-1": stream,
                      "links": links}
            for key, value in actual.items():
                if value != expected[key]:
                    print(json.dumps({"bad": key, "got": value}), flush=True)
                    sys.exit(1)
            reads += 1
            if stop:
                break
    print(json.dumps({"reads": reads}), flush=True)
    """
)


def test_a_second_process_reading_during_archives_sees_every_event_once(
    make_store: Callable[..., EventStore],
    dsn: str,
    schema: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = make_store(archive=str(tmp_path / "files"))
    for i in range(40):
        store.append_to_stream(f"s-{i % 3}", ANY_VERSION, events(10, start=i * 10))
    store.link_to_stream("links", ANY_VERSION, [2, 150, 390])
    ids = [e.event_id for e in store.read_all_streams_forward(0, 100_000)]
    expected = {
        "all": ids,
        "back": ids,
        "paged": ids,
        "s-1": [e.event_id for e in store.read_stream_forward("s-1")],
        "links": [2, 150, 390],
    }
    (tmp_path / "expected.json").write_text(json.dumps(expected))
    stop = tmp_path / "stop"
    reader = subprocess.Popen(
        [sys.executable, "-c", _READER, dsn, schema, str(tmp_path / "expected.json"), str(stop)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        # A streaming read started before the archive goes on after it.
        started = store.stream_all_forward(0, 25)
        first = [next(started) for _ in range(30)]
        monkeypatch.setattr(writer, "DELETE_BATCH", 9)  # many small deletes to read between
        for cut in (50, 120, 121, 260, 401):
            store.archive(before_event_id=cut)
        assert [e.event_id for e in first + list(started)] == ids
    finally:
        stop.touch()
        out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, (out.decode()[-2000:], err.decode()[-2000:])
    assert json.loads(out.decode().splitlines()[-1])["reads"] >= 1
    assert pg_event_ids(dsn, schema) == []


# Other entry points ---------------------------------------------------------------------------
def test_asyncio_archive(make_store: Callable[..., EventStore], tmp_path: Path) -> None:
    import asyncio

    from eventstore_actors.aio import AsyncEventStore

    store = make_store()
    store.append_to_stream("s", ANY_VERSION, events(3))

    async def run() -> ArchiveResult:
        return await AsyncEventStore(store).archive(before_event_id=3, target=str(tmp_path))

    assert asyncio.run(run()).events == 2
    assert [e.event_id for e in store.read_stream_forward("s")] == [1, 2, 3]


def test_cli_archive_and_status(
    make_store: Callable[..., EventStore], dsn: str, schema: str, tmp_path: Path
) -> None:
    store = make_store()
    store.append_to_stream("s", ANY_VERSION, events(6))
    expected = store.read_stream_forward("s")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "eventstore_actors.cli",
                *args,
                "--dsn",
                dsn,
                "--schema",
                schema,
            ],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
        )

    done = cli("archive", "--before", "4", "--target", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "moved 3 events (event_ids 1..3)" in done.stderr + done.stdout
    assert cli("archive", "--older-than", "30d", "--target", str(tmp_path)).returncode == 0
    refused = cli("archive", "--older-than", "soon", "--target", str(tmp_path))
    assert refused.returncode == 2 and "not an age" in refused.stderr
    assert cli("archive", "--target", str(tmp_path)).returncode == 2  # neither
    status = cli("status")
    assert "archived event_ids 1..3: 3 events in " in status.stdout
    report = json.loads(cli("status", "--json").stdout)
    assert report["archived"][0]["last_event_id"] == 3
    assert report["archived"][0]["state"] == "deleted"
    assert store.read_stream_forward("s") == expected


def test_migration_from_schema_v3(dsn: str, tmp_path: Path) -> None:
    """A store created by the previous release (schema v3, commit 726adba) is migrated to v4;
    its events are archived and read back."""
    from support.release1 import release_tree

    tree = release_tree(tmp_path, "726adba")
    name = f"m_{os.urandom(6).hex()}"
    script = textwrap.dedent(
        """
        import sys
        from eventstore_actors import ANY_VERSION, EventData, EventStore, admin
        dsn, schema = sys.argv[1:3]
        admin.init(dsn, schema)
        with EventStore.start(dsn, schema=schema) as store:
            for i in range(4):
                store.append_to_stream(f"s{i % 2}", ANY_VERSION,
                                       [EventData({"i": i, "j": j}, "t") for j in range(3)])
            store.link_to_stream("l", ANY_VERSION, [1, 12])
        """
    )
    made = subprocess.run(
        [sys.executable, "-c", script, dsn, name],
        env={**os.environ, "PYTHONPATH": str(tree)},
        cwd=str(tree),  # not this checkout's package
        capture_output=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr.decode()[-2000:]
    try:
        with psycopg.connect(dsn) as conn:
            v = conn.execute(
                sql.SQL("SELECT max(version) FROM {}.schema_version").format(sql.Identifier(name))
            ).fetchone()
        assert v is not None and v[0] == 3
        admin.migrate(dsn, name)
        with EventStore.start(dsn, schema=name) as store:
            before = (
                store.read_all_streams_forward(0, 100),
                store.read_stream_forward("l"),
                store.read_stream_backward("s1"),
            )
            assert store.archive(before_event_id=10, target=str(tmp_path / "a")).events == 9
            after = (
                store.read_all_streams_forward(0, 100),
                store.read_stream_forward("l"),
                store.read_stream_backward("s1"),
            )
            assert after == before
        assert pq.read_table(str(next((tmp_path / "a").glob("*.parquet")))).num_rows == 9
    finally:
        admin.drop(dsn, name)


def test_reads_without_an_archive_cost_no_extra_statement(
    make_store: Callable[..., EventStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a connection has looked at the (empty) manifest, reads that find their events
    where they expect them run only their own statement (the manifest is not read again)."""
    from eventstore_actors.storage import archive as hook

    store = make_store(pool_size=1)
    store.append_to_stream("s", ANY_VERSION, events(10))
    calls: list[int] = []
    real = hook.manifest

    def counted(conn: Any) -> Any:
        calls.append(1)
        return real(conn)

    monkeypatch.setattr(hook, "manifest", counted)
    for _ in range(5):
        store.read_stream_forward("s")
        store.read_all_streams_forward(0, 5)
        store.read_all_streams_backward(-1, 5)
        store.read_stream_backward("s", -1, 3)
        list(store.stream_all_forward(0, 4))
    assert len(calls) <= 1  # the first look of the one pooled connection


def test_reads_take_only_the_row_groups_they_need(
    make_store: Callable[..., EventStore], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files are read a row group at a time: a page in the middle of a file reads the groups
    holding it, and a replay of the whole archive holds at most a page (constant memory)."""
    monkeypatch.setattr(writer, "ROW_GROUP", 50)
    store = make_store(archive=str(tmp_path))
    for i in range(10):
        store.append_to_stream(f"s-{i}", ANY_VERSION, events(100, start=i * 100))
    expected = store.read_all_streams_forward(0, 10_000)
    result = store.archive(before_event_id=1001)
    assert result.events == 1000
    assert pq.ParquetFile(result.files[0]).metadata.num_row_groups == 20
    reads: list[int] = []
    real = pq.ParquetFile.read_row_group

    def counted(self: Any, i: int, *args: Any, **kwargs: Any) -> Any:
        table = real(self, i, *args, **kwargs)
        reads.append(table.num_rows)
        return table

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", counted)
    assert store.read_all_streams_forward(520, 10) == expected[519:529]
    assert reads == [50]  # event_ids 501..550: one group of the twenty
    reads.clear()
    assert store.read_all_streams_backward(75, 30) == expected[45:75][::-1]
    assert reads == [50, 50]
    reads.clear()
    assert list(store.stream_all_forward(0, 100)) == expected
    assert len(reads) == 20  # each group read once, by the page that needs it


def test_an_fsspec_url_target(make_store: Callable[..., EventStore], dsn: str, schema: str) -> None:
    """Any fsspec URL works as a target (here fsspec's in-memory filesystem, standing in for
    s3:// and the like): written under a temporary name, moved in place, read back."""
    fsspec = pytest.importorskip("fsspec")
    store = make_store()
    fill(store)
    before = snapshot(store)
    url = f"memory://archive-tests/{schema}"
    result = store.archive(before_event_id=40, target=url)
    assert result.events == 39 and result.files[0].startswith(url + "/events-")
    fs = fsspec.filesystem("memory")
    names = [p.rsplit("/", 1)[-1] for p in fs.ls(f"/archive-tests/{schema}", detail=False)]
    # No temporary or probe left; the marker naming the store (test_archive_targets.py).
    assert sorted(names) == sorted([result.files[0].rsplit("/", 1)[-1], MARKER])
    assert_same(before, snapshot(store))
    with fs.open(result.files[0][len("memory://") :], "rb") as f:
        assert pq.read_table(f).num_rows == 39


def test_filtered_catch_up_reads_of_a_stream_page_through_the_archive(
    make_store: Callable[..., EventStore], dsn: str, schema: str, tmp_path: Path
) -> None:
    """Catch-up of a stream with an event-type filter (storage.reader.read_stream_covered,
    what a filtered stream subscription reads), in small pages: the same events and the same
    coverage before and after its own events and its links were archived."""
    from eventstore_actors import EventData
    from eventstore_actors.storage import reader

    store = make_store(archive=str(tmp_path))
    for i in range(12):
        store.append_to_stream("mix", ANY_VERSION, [EventData({"i": i}, "A" if i % 3 else "B")])
        store.append_to_stream("other", ANY_VERSION, [EventData({"o": i}, "B" if i % 2 else "A")])
    store.link_to_stream("mix", ANY_VERSION, [2, 4, 6, 8, 22])
    store.append_to_stream("mix", ANY_VERSION, [EventData({"i": 99}, "B")])

    def catch_up(size: int) -> list[tuple[int, int]]:
        got: list[tuple[int, int]] = []
        start = 1
        with psycopg.connect(dsn, autocommit=True, options=f"-c search_path={schema}") as conn:
            while True:
                rows, covered, _ = reader.read_stream_covered(
                    conn, "mix", start, size, event_types=["B"]
                )
                got += [(r[0], r[10]) for r in rows]
                if covered < start:
                    return got
                start = covered + 1

    before = {size: catch_up(size) for size in (1, 2, 5, 100)}
    assert len(before[100]) == 4 + 2 + 1  # own B events, linked B events, the last one
    assert all(value == before[100] for value in before.values())
    store.archive(before_event_id=20)
    assert {size: catch_up(size) for size in (1, 2, 5, 100)} == before


def test_two_archives_at_once_take_turns(
    make_store: Callable[..., EventStore], dsn: str, schema: str, tmp_path: Path
) -> None:
    """Archives of one schema run one at a time (a lock), from threads or processes alike:
    the second moves what the first left, each event lands in exactly one file."""
    import threading

    store = make_store(archive=str(tmp_path))
    fill(store)
    before = snapshot(store)
    results: list[ArchiveResult] = []
    threads = [
        threading.Thread(target=lambda c=cut: results.append(store.archive(before_event_id=c)))
        for cut in (30, 50)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 2 and sum(r.events for r in results) == 49
    ranges = [(m[0], m[1]) for m in manifest(dsn, schema)]
    assert ranges in ([(1, 29), (30, 49)], [(1, 49)])
    total = sum(pq.read_table(f).num_rows for r in results for f in r.files)
    assert total == 49
    assert_same(before, snapshot(store))


def test_retention_hides_archived_events_as_it_hides_rows(
    make_store: Callable[..., EventStore], tmp_path: Path
) -> None:
    """A stream truncated, or limited by max_count, after its events were archived reads
    from its first readable version on: stream reads both ways, $all and streaming."""
    store = make_store(archive=str(tmp_path))
    store.append_to_stream("s", 0, [EventData({"n": n}, "E") for n in range(5)])
    store.append_to_stream("t", 0, [EventData({"n": n}, "E") for n in range(3)])
    assert store.archive(before_event_id=8).events == 7
    assert store.truncate_stream("s", 3) == 2  # archived events it hides count too
    assert store.truncate_stream("s", 3) == 0
    store.set_stream_retention("t", max_count=1)
    assert [e.stream_version for e in store.read_stream_forward("s")] == [3, 4, 5]
    assert [e.stream_version for e in store.read_stream_backward("s")] == [5, 4, 3]
    assert [e.stream_version for e in store.read_stream_forward("t")] == [3]
    expected = [("s", 3), ("s", 4), ("s", 5), ("t", 3)]
    assert [(e.stream_uuid, e.stream_version) for e in store.read_all_streams_forward()] == (
        expected
    )
    assert [(e.stream_uuid, e.stream_version) for e in store.stream_all_forward()] == expected


def numbers(found: list[RecordedEvent]) -> list[int]:
    return [e.event_number for e in found]


def test_max_age_keeps_young_archived_events_readable_through_limit_changes(
    make_store: Callable[..., EventStore], tmp_path: Path
) -> None:
    """A stream with a max_age whose young events are all archived: stream_info says its
    first readable version is the first archived one, a new max_age and cleared limits hide
    none of them (retention/first_version.sql finds no young event in the events table, and
    set_stream_retention kept that as the stream's first_version: every event hidden for
    good), and truncate_stream counts what it hides of them."""
    store = make_store(archive=str(tmp_path))
    store.append_to_stream("m", 0, events(3))
    store.append_to_stream("other", 0, events(1, start=10))
    store.set_stream_retention("m", max_age=timedelta(days=1))
    assert store.archive(before_event_id=4).events == 3
    assert numbers(store.read_stream_forward("m")) == [1, 2, 3]
    assert store.stream_info("m").first_version == 1
    store.set_stream_retention("m", max_age=timedelta(days=2))
    assert numbers(store.read_stream_forward("m")) == [1, 2, 3]
    assert numbers(store.read_stream_backward("m")) == [3, 2, 1]
    assert store.stream_info("m").first_version == 1
    store.set_stream_retention("m")
    assert numbers(store.read_stream_forward("m")) == [1, 2, 3]
    assert store.stream_info("m").first_version == 1
    store.set_stream_retention("m", max_age=timedelta(days=1))
    assert store.truncate_stream("m", 2) == 1
    assert numbers(store.read_stream_forward("m")) == [2, 3]
    assert store.stream_info("m").first_version == 2
    assert store.truncate_stream("m", 2) == 0
    page = store.paginate_streams(search="m").entries
    assert [(i.stream_uuid, i.first_version) for i in page] == [("m", 2)]


def test_a_limit_change_that_cannot_read_the_archive_changes_nothing(
    make_store: Callable[..., EventStore], tmp_path: Path
) -> None:
    """set_stream_retention of a stream with a max_age and young archived events reads the
    files for its first readable position: a file that cannot be read is a
    StoreUnavailableError and the limits stay as they were (not a first_version that hides
    the archived events)."""
    store = make_store(archive=str(tmp_path))
    store.append_to_stream("m", 0, events(3))
    store.set_stream_retention("m", max_age=timedelta(days=1))
    (path,) = store.archive(before_event_id=4).files
    os.rename(path, path + ".away")
    try:
        with pytest.raises(StoreUnavailableError, match="the retention was not changed"):
            store.set_stream_retention("m", max_count=1)
    finally:
        os.rename(path + ".away", path)
    info = store.stream_info("m")
    assert (info.first_version, info.max_count, info.max_age) == (1, None, timedelta(days=1))
    assert numbers(store.read_stream_forward("m")) == [1, 2, 3]


def backdate(dsn: str, schema: str, stream: str, versions: list[int], days: int) -> None:
    """The stream's own events at `versions` (and the stream) made `days` older: events are
    immutable, so with the triggers off for this transaction (session_replication_role)."""
    with psycopg.connect(dsn) as conn, conn.transaction():
        conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
        conn.execute("SET LOCAL session_replication_role = replica")
        ago = timedelta(days=days)
        conn.execute(
            "UPDATE events AS e SET created_at = e.created_at - %s FROM streams AS s "
            "WHERE s.stream_id = e.stream_id AND s.stream_uuid = %s "
            "AND e.stream_version = ANY(%s)",
            (ago, stream, versions),
        )
        conn.execute(
            "UPDATE streams SET created_at = created_at - %s WHERE stream_uuid = %s",
            (ago, stream),
        )


@pytest.mark.parametrize("cut", [5, 6], ids=["last-event-in-postgresql", "all-archived"])
def test_max_age_hides_only_the_old_archived_events_for_good(
    make_store: Callable[..., EventStore], dsn: str, schema: str, tmp_path: Path, cut: int
) -> None:
    """Own events 1-2 three days old, 3-5 young, archived but for the last (or all): with a
    one-day max_age 3-5 are readable and stream_info says 3; a new max_age or cleared limits
    keep 1-2 hidden (what the limit hid) and 3-5 readable (what it did not)."""
    store = make_store(archive=str(tmp_path))
    store.append_to_stream("m", 0, events(5))
    backdate(dsn, schema, "m", [1, 2], days=3)
    assert store.archive(before_event_id=cut).events == cut - 1
    store.set_stream_retention("m", max_age=timedelta(days=1))
    assert numbers(store.read_stream_forward("m")) == [3, 4, 5]
    assert store.stream_info("m").first_version == 3
    store.set_stream_retention("m", max_age=timedelta(days=7))
    assert numbers(store.read_stream_forward("m")) == [3, 4, 5]
    assert store.stream_info("m").first_version == 3
    store.set_stream_retention("m")
    assert numbers(store.read_stream_forward("m")) == [3, 4, 5]
    assert numbers(store.read_stream_backward("m", -1, 2)) == [5, 4]
    assert store.stream_info("m").first_version == 3
    assert store.truncate_stream("m", 5) == 2
    assert numbers(store.read_stream_forward("m")) == [5]


def test_max_age_with_a_link_to_an_archived_event_after_young_archived_own_events(
    make_store: Callable[..., EventStore], dsn: str, schema: str, tmp_path: Path
) -> None:
    """A stream with an old own event (1), a young one (2), a link to an archived event (3)
    and a young own event (4), all archived: the link stays in PostgreSQL, so the first young
    position the tables show is 3. With a one-day max_age 2-4 are readable, and stay so, and 1
    hidden, when the limit changes; truncate_stream counts the own event and the link it
    hides."""
    store = make_store(archive=str(tmp_path))
    store.append_to_stream("other", 0, events(1, start=10))
    store.append_to_stream("m", 0, events(2))
    backdate(dsn, schema, "m", [1], days=3)
    store.link_to_stream("m", 2, [1])
    store.append_to_stream("m", 3, events(1, start=4))
    assert store.archive(before_event_id=5).events == 4
    store.set_stream_retention("m", max_age=timedelta(days=1))
    assert numbers(store.read_stream_forward("m")) == [2, 3, 4]
    assert store.stream_info("m").first_version == 2
    store.set_stream_retention("m", max_age=timedelta(days=2))
    store.set_stream_retention("m")
    found = store.read_stream_forward("m")
    assert [(e.stream_uuid, e.event_number) for e in found] == [("m", 2), ("other", 3), ("m", 4)]
    assert store.stream_info("m").first_version == 2
    assert store.truncate_stream("m", 4) == 2
    assert numbers(store.read_stream_forward("m")) == [4]


def test_a_delete_batch_is_a_range_of_the_primary_key(
    store: EventStore, dsn: str, schema: str
) -> None:
    """sql/archive/delete_batch.sql: the batch's rows are deleted by a range scan up to its
    last event_id, not by joining its ids against the whole table (whose plan scanned every
    row of events for every batch)."""
    for i in range(40):
        store.append_to_stream(f"batch-{i}", 0, events(100))  # 1-4000
    with psycopg.connect(dsn) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        conn.execute("ANALYZE events")
        conn.execute(statement("archive/allow_delete"))
        params = {"low": 101, "high": 3000, "batch": 500}
        row = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + statement("archive/delete_batch"), params
        ).fetchone()
        assert row is not None
        found = list(plan_nodes(row[0][0]["Plan"]))
        assert not [n for n in found if n["Node Type"] == "Seq Scan"], found
        left = conn.execute("SELECT min(event_id), count(*) FROM events").fetchone()
        assert left == (1, 3500), "1-100 below the batch, 601-4000 above it"
        conn.rollback()


def small_reads(store: EventStore, stream: str) -> dict[str, Any]:
    """Reads of one stream of every small size, from every start, both ways, and streamed one
    and two at a time."""
    version = store.stream_info(stream).stream_version
    out: dict[str, Any] = {
        "forward": store.read_stream_forward(stream),
        "backward": store.read_stream_backward(stream),
    }
    for count in (1, 2, 3):
        for start in range(version + 2):
            out[f"@{start},{count}"] = store.read_stream_forward(stream, start, count)
        for start in (-1, *range(1, version + 1)):
            out[f"<@{start},{count}"] = store.read_stream_backward(stream, start, count)
    for size in (1, 2):
        out[f"~{size}"] = list(store.stream_forward(stream, 0, size))
        out[f"~<{size}"] = list(store.stream_backward(stream, -1, size))
    return out


def lives(store: EventStore) -> None:
    """Stream "r" hard-deleted and created again from version 1, its first life (event_ids
    1-3) archived before the delete, its second life 5-7 in PostgreSQL; "x" 4 and 8."""
    store.append_to_stream("r", 0, events(3))
    store.append_to_stream("x", 0, events(1, start=100))
    assert store.archive(before_event_id=5).events == 4
    store.delete_stream("r", ANY_VERSION, hard=True)
    store.append_to_stream("r", 0, events(3, start=10))
    store.append_to_stream("x", ANY_VERSION, events(1, start=101))


SECOND_LIFE = pytest.mark.parametrize(
    "cut", [6, 8], ids=["second-life-archived-in-part", "second-life-archived-whole"]
)


@SECOND_LIFE
def test_a_stream_created_again_reads_only_its_own_life_from_the_files(
    make_store: Callable[..., EventStore], tmp_path: Path, cut: int
) -> None:
    """Both lives of a stream created again archived (the second in part or whole): the files
    hold both at versions 1-3. Reads of every size from every start, both ways, and streamed
    a page of one at a time, return the second life as before its archive: the first life's
    rows take no place in a page."""
    store = make_store(archive=str(tmp_path), enable_hard_deletes=True)
    lives(store)
    before = small_reads(store, "r")
    assert [(e.event_id, e.stream_version) for e in before["forward"]] == [(5, 1), (6, 2), (7, 3)]
    assert [e.event_id for e in before["@0,1"]] == [5] and before["~1"] == before["forward"]
    store.archive(before_event_id=cut)
    assert_same(before, small_reads(store, "r"))


@SECOND_LIFE
def test_truncating_a_stream_created_again_counts_only_its_own_life(
    make_store: Callable[..., EventStore], tmp_path: Path, cut: int
) -> None:
    """truncate_stream of a stream created again, both lives archived: it reports the second
    life's events it hid (archived or not), not none for the first life's in the files."""
    store = make_store(archive=str(tmp_path), enable_hard_deletes=True)
    lives(store)
    store.archive(before_event_id=cut)
    assert store.truncate_stream("r", 3) == 2  # versions 1 and 2 of the second life
    assert store.truncate_stream("r", 3) == 0
    assert [(e.event_id, e.stream_version) for e in store.read_stream_forward("r")] == [(7, 3)]
    assert [e.event_id for e in store.read_stream_forward("r", 1, 1)] == [7]
    assert [e.event_id for e in store.stream_forward("r", 0, 1)] == [7]


def test_retention_hides_archived_events_before_a_small_page_is_counted(
    make_store: Callable[..., EventStore], tmp_path: Path
) -> None:
    """A stream truncated, and one limited by max_count, after their events were archived (the
    hidden events stay in the files): a small read from below the first readable version,
    both ways, and a stream read a page of one at a time, return what the whole read does
    (the hidden events take no place in a page)."""
    store = make_store(archive=str(tmp_path))
    store.append_to_stream("s", 0, events(5))
    store.append_to_stream("t", 0, events(4, start=10))
    assert store.archive(before_event_id=10).events == 9
    assert store.truncate_stream("s", 3) == 2
    store.set_stream_retention("t", max_count=2)
    for stream, readable in (("s", [3, 4, 5]), ("t", [3, 4])):
        got = small_reads(store, stream)
        whole = got["forward"]
        assert [e.stream_version for e in whole] == readable
        expected = dict(got)
        for key in got:
            if key.startswith("~<"):
                expected[key] = whole[::-1]
            elif key.startswith("~"):
                expected[key] = whole
            elif key.startswith("<@"):
                at, count = (int(n) for n in key[2:].split(","))
                expected[key] = [e for e in whole[::-1] if at == -1 or e.event_number <= at][:count]
            elif key.startswith("@"):
                at, count = (int(n) for n in key[1:].split(","))
                expected[key] = [e for e in whole if e.event_number >= at][:count]
        assert_same(expected, got)


@pytest.mark.parametrize("damage", ["not parquet", "cut short", "a row group overwritten"])
def test_a_damaged_archive_file_is_reported_by_every_read_as_unavailable(
    make_store: Callable[..., EventStore], tmp_path: Path, damage: str
) -> None:
    """Missing files were reported (StoreUnavailableError naming the file); a damaged one
    reached the caller as pyarrow's own error, at the open or while reading a row group."""
    store = make_store(archive=str(tmp_path))
    fill(store)
    store.archive(before_event_id=30)
    (path,) = tmp_path.rglob("*.parquet")
    data = path.read_bytes()
    if damage == "not parquet":
        path.write_bytes(b"not a parquet file" * 100)
    elif damage == "cut short":
        path.write_bytes(data[: len(data) // 2])
    else:  # the footer intact, the pages after the magic number garbled
        path.write_bytes(data[:4] + bytes(len(data) // 2 - 4) + data[len(data) // 2 :])
    reads: list[Callable[[], Any]] = [
        lambda: store.read_all_streams_forward(0, 100),
        lambda: store.read_all_streams_backward(-1, 100),
        lambda: list(store.stream_all_forward(0, 7)),
        lambda: store.read_stream_forward("s-0"),
        lambda: store.read_stream_backward("s-1"),
        lambda: store.read_stream_forward("links"),
    ]
    for read in reads:
        with pytest.raises(StoreUnavailableError, match=r"archive file .* cannot be read"):
            read()
    path.write_bytes(data)  # repaired: every read as before
    assert [e.event_id for e in store.read_stream_forward("s-0")][:2] == [1, 2]


# Subscription health counts archived events ---------------------------------------------------
DAY = 86_400.0


def idle_subscriptions(store: EventStore, stream: str) -> None:
    """A durable $all subscription "p" and one "q" on `stream`, both at checkpoint 0 and not
    held (subscribed, then unsubscribed before any event)."""
    sub = QueueSubscriber()
    store.subscribe_to_all_streams("p", sub)
    sub.subscribed()
    store.unsubscribe_from_all_streams("p")
    sub = QueueSubscriber()
    store.subscribe_to_stream(stream, "q", sub)
    sub.subscribed()
    store.unsubscribe_from_stream(stream, "q")


def lags(store: EventStore) -> dict[str, tuple[int, float | None]]:
    """subscription name -> (lag, lag_seconds), from subscriptions() and subscription_info."""
    found = {i.subscription_name: (i.lag, i.lag_seconds) for i in store.subscriptions()}
    for info in (store.subscription_info("p"), store.subscription_info("q", "s")):
        lag, seconds = found[info.subscription_name]
        assert info.lag == lag and seconds is not None and info.lag_seconds is not None
        assert abs(info.lag_seconds - seconds) < 30
    return found


def days_old(seconds: float | None, days: int) -> bool:
    return seconds is not None and days * DAY <= seconds < days * DAY + 60


@pytest.mark.parametrize("cut", [6, 7], ids=["unacked-archived-in-part", "all-unacked-archived"])
def test_lag_seconds_counts_the_archived_unacked_events(
    make_store: Callable[..., EventStore], dsn: str, schema: str, tmp_path: Path, cut: int
) -> None:
    """Subscriptions of $all and of a stream at checkpoint 0, events 1-5 two days old and 6
    new: lag_seconds is the age of event 1 before and after an archive of 1-5 (it became the
    age of event 6) or of all six (it became None, with lag 6)."""
    store = make_store(archive=str(tmp_path))
    idle_subscriptions(store, "s")
    store.append_to_stream("s", 0, events(5))
    backdate(dsn, schema, "s", [1, 2, 3, 4, 5], days=2)
    store.append_to_stream("s", 5, events(1, start=5))
    for lag, seconds in lags(store).values():
        assert lag == 6 and days_old(seconds, 2), seconds
    assert store.archive(before_event_id=cut).events == cut - 1
    for lag, seconds in lags(store).values():
        assert lag == 6 and days_old(seconds, 2), seconds


def test_lag_seconds_counts_only_the_archived_events_reads_return(
    make_store: Callable[..., EventStore], dsn: str, schema: str, tmp_path: Path
) -> None:
    """All unacked events archived: those of a stream hard-deleted since, and a stream's
    events truncated away since, are not read, so the oldest that counts is younger."""
    store = make_store(archive=str(tmp_path), enable_hard_deletes=True)
    idle_subscriptions(store, "s")
    store.append_to_stream("gone", 0, events(2))  # event_ids 1-2
    store.append_to_stream("s", 0, events(4, start=10))  # 3-6
    backdate(dsn, schema, "gone", [1, 2], days=5)
    backdate(dsn, schema, "s", [1, 2], days=4)
    backdate(dsn, schema, "s", [3, 4], days=2)
    store.append_to_stream("s", 4, events(1, start=20))  # 7
    assert store.archive(before_event_id=8).events == 7
    found = lags(store)
    assert days_old(found["p"][1], 5) and days_old(found["q"][1], 4), found
    store.delete_stream("gone", ANY_VERSION, hard=True)
    found = lags(store)
    assert days_old(found["p"][1], 4) and days_old(found["q"][1], 4), found
    assert store.truncate_stream("s", 3) == 2
    found = lags(store)
    assert found["p"][0] == 7 and found["q"][0] == 5, found
    assert days_old(found["p"][1], 2) and days_old(found["q"][1], 2), found


def test_an_unreadable_archive_file_fails_lag_seconds_only_where_it_is_needed(
    make_store: Callable[..., EventStore], tmp_path: Path
) -> None:
    """A subscription whose unacked events are all in PostgreSQL reads no file; one whose
    oldest unacked event is archived in a file that cannot be read is reported as
    StoreUnavailableError (as reads are), not with a lag_seconds that leaves it out."""
    store = make_store(archive=str(tmp_path))
    sub = QueueSubscriber()
    store.subscribe_to_all_streams("p", sub)
    subscription = sub.subscribed()
    store.append_to_stream("s", 0, events(5))
    sub.collect(subscription, 5)
    wait_until(lambda: store.subscription_info("p").checkpoint == 5)
    store.unsubscribe_from_all_streams("p")
    store.append_to_stream("s", 5, events(1, start=5))
    assert store.archive(before_event_id=6).events == 5
    (path,) = tmp_path.rglob("*.parquet")
    data = path.read_bytes()
    path.write_bytes(b"not a parquet file" * 100)
    (found,) = store.subscriptions()
    assert found.lag == 1 and found.lag_seconds is not None
    sub = QueueSubscriber()
    store.subscribe_to_stream("s", "q", sub)
    sub.subscribed()
    store.unsubscribe_from_stream("s", "q")
    with pytest.raises(StoreUnavailableError, match=r"archive file .* cannot be read"):
        store.subscriptions()
    with pytest.raises(StoreUnavailableError, match=r"archive file .* cannot be read"):
        store.subscription_info("q", "s")
    assert store.subscription_info("p").lag == 1
    path.write_bytes(data)  # repaired
    assert store.subscription_info("q", "s").lag_seconds is not None
