"""Migrations: a store created by release 1 (commit 9f5705b) is upgraded in place.

The version 1 store is built from that release's own schema file (sql/schema/v1.sql, which
never changes: a test pins its hash) and filled through that schema's own append function,
with a checkpoint and a snapshot, as release 1 would have left it. Ported in spirit from the Elixir
suite's test/migrate_event_store_test.exs.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from support import QueueSubscriber
from support.release1 import Release1Process, release_1_tree

from eventstore_actors import (
    ConfigError,
    EventData,
    EventStore,
    HardDeletesDisabledError,
    SnapshotData,
    StreamNotFoundError,
    admin,
)
from eventstore_actors.storage.migrations import SCHEMA_VERSION

#: Release 1's schema file: sql/schema/v1.sql is the base every store is built on and must
#: never change (see the hash test below), so it is release 1's own text.
V1_SQL = (Path(__file__).resolve().parents[2] / "sql" / "schema" / "v1.sql").read_text(
    encoding="utf-8"
)
#: SHA-256 of sql/schema/v1.sql at commit 9f5705b (release 1).
RELEASE_1_SHA256 = "1bffc4dbfc3854b04377c460f6c1f16fcd053b29c32d2ed5bab54266411b9e4a"


def test_the_base_schema_is_release_1s_own_file() -> None:
    assert hashlib.sha256(V1_SQL.encode("utf-8")).hexdigest() == RELEASE_1_SHA256


@pytest.fixture
def v1_schema(dsn: str) -> Iterator[str]:
    """A schema holding a release-1 store with 3 streams, 250 events, a checkpoint and a
    snapshot; dropped afterwards."""
    name = f"m_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
        with conn.transaction():
            conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(name)))
            conn.execute(V1_SQL)
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(name)))
        for stream, count in (("order-1", 100), ("order-2", 100), ("audit", 50)):
            data = [json.dumps({"stream": stream, "n": n}).encode() for n in range(count)]
            conn.execute(
                "SELECT * FROM append_events(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    [stream],
                    [0],
                    [count],
                    ["tests.V1"] * count,
                    ["corr"] * count,
                    [None] * count,
                    data,
                    [None] * count,
                    "v1-channel",
                    "v1-origin",
                ),
            )
        conn.execute(
            "INSERT INTO subscriptions (stream_uuid, subscription_name, last_seen) "
            "VALUES ('$all', 'projection', 120), ('order-1', 'orders', 40)"
        )
        conn.execute(
            "INSERT INTO snapshots (source_uuid, source_version, source_type, data) "
            "VALUES ('order-1', 100, 'tests.Snap', %s)",
            (json.dumps({"total": 100}).encode(),),
        )
    try:
        yield name
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def version_of(dsn: str, schema: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            sql.SQL("SELECT max(version) FROM {}.schema_version").format(sql.Identifier(schema))
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_start_on_a_v1_store_names_the_migrate_command(dsn: str, v1_schema: str) -> None:
    with pytest.raises(ConfigError, match=r"eventstore-actors migrate --schema " + v1_schema):
        EventStore.start(dsn, schema=v1_schema)


def test_init_does_not_upgrade_behind_the_users_back(dsn: str, v1_schema: str) -> None:
    with pytest.raises(ConfigError, match="migrate"):
        admin.init(dsn, v1_schema)
    assert version_of(dsn, v1_schema) == 1


def test_migrate_keeps_every_event_checkpoint_and_snapshot(dsn: str, v1_schema: str) -> None:
    assert admin.migrate(dsn, v1_schema) == SCHEMA_VERSION
    assert version_of(dsn, v1_schema) == SCHEMA_VERSION

    with EventStore.start(dsn, schema=v1_schema) as store:
        events = list(store.stream_all_forward())
        assert [e.event_id for e in events] == list(range(1, 251))
        assert [e.stream_version for e in events if e.stream_uuid == "order-2"] == list(
            range(1, 101)
        )
        assert events[0].data == {"stream": "order-1", "n": 0}
        assert events[0].correlation_id == "corr"
        snapshot = store.read_snapshot("order-1")
        assert (snapshot.source_version, snapshot.data) == (100, {"total": 100})

        # The store carries on where release 1 left it: ids and versions continue.
        store.append_to_stream("order-1", 100, [EventData({"n": 100}, event_type="tests.V2")])
        last = store.read_stream_forward("order-1", 101)
        assert [(e.event_id, e.stream_version) for e in last] == [(251, 101)]

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(v1_schema)))
        checkpoints = dict(
            conn.execute(
                "SELECT stream_uuid || '/' || subscription_name, last_seen FROM subscriptions"
            ).fetchall()
        )
        assert checkpoints == {"$all/projection": 120, "order-1/orders": 40}
        uuids = conn.execute("SELECT count(DISTINCT event_uuid), count(*) FROM events").fetchone()
        assert uuids == (251, 251)  # every old event got its own UUID
        # Still immutable after the migration.
        with pytest.raises(psycopg.errors.RestrictViolation):
            conn.execute("UPDATE events SET event_type = 'x' WHERE event_id = 1")
        with pytest.raises(psycopg.errors.RestrictViolation):
            conn.execute("DELETE FROM events WHERE event_id = 1")


def test_migrate_is_idempotent(dsn: str, v1_schema: str) -> None:
    assert admin.migrate(dsn, v1_schema) == SCHEMA_VERSION
    assert admin.migrate(dsn, v1_schema) == SCHEMA_VERSION
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            sql.SQL("SELECT version FROM {}.schema_version ORDER BY version").format(
                sql.Identifier(v1_schema)
            )
        ).fetchall()
    assert [r[0] for r in rows] == list(range(1, SCHEMA_VERSION + 1))


def test_concurrent_migrations_wait_for_each_other(dsn: str, v1_schema: str) -> None:
    results: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def run() -> None:
        barrier.wait()
        try:
            results.append(admin.migrate(dsn, v1_schema))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert results == [SCHEMA_VERSION] * 4
    with EventStore.start(dsn, schema=v1_schema) as store:
        assert len(store.read_all_streams_forward(count=1000)) == 250


def test_a_fresh_store_is_at_the_latest_version(dsn: str, schema: str) -> None:
    assert version_of(dsn, schema) == SCHEMA_VERSION
    assert admin.migrate(dsn, schema) == SCHEMA_VERSION  # nothing to do


def test_migrate_of_a_missing_store_says_how_to_create_one(dsn: str) -> None:
    with pytest.raises(ConfigError, match="not initialised"):
        admin.migrate(dsn, f"m_{uuid.uuid4().hex[:12]}")


def test_a_store_newer_than_the_package_is_refused(dsn: str, schema: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("INSERT INTO {}.schema_version (version) VALUES (%s)").format(
                sql.Identifier(schema)
            ),
            (SCHEMA_VERSION + 1,),
        )
    with pytest.raises(ConfigError, match="upgrade the eventstore-actors package"):
        EventStore.start(dsn, schema=schema)
    with pytest.raises(ConfigError, match="upgrade the eventstore-actors package"):
        admin.migrate(dsn, schema)


def test_snapshots_round_trip_after_migration(dsn: str, v1_schema: str) -> None:
    admin.migrate(dsn, v1_schema)
    with EventStore.start(dsn, schema=v1_schema) as store:
        store.record_snapshot(SnapshotData("s-2", 3, "tests.Snap", {"x": 1}))
        assert store.read_snapshot("s-2").data == {"x": 1}


def test_cli_migrate(dsn: str, v1_schema: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "eventstore_actors.cli",
            "migrate",
            "--dsn",
            dsn,
            "--schema",
            v1_schema,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"version {SCHEMA_VERSION}" in done.stdout
    assert version_of(dsn, v1_schema) == SCHEMA_VERSION


def test_drop_removes_a_store_that_was_never_migrated(dsn: str, v1_schema: str) -> None:
    assert admin.drop(dsn, v1_schema) is True
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (v1_schema,))
        assert row.fetchone() is None


@pytest.fixture(scope="session")
def release_1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Release 1's package and SQL, from the git history (skips without git or the commit)."""
    return release_1_tree(tmp_path_factory.mktemp("release-1"))


def count_events(dsn: str, schema: str, stream: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            sql.SQL(
                "SELECT count(*) FROM {0}.events AS e JOIN {0}.streams AS s "
                "ON s.stream_id = e.stream_id WHERE s.stream_uuid = %s"
            ).format(sql.Identifier(schema)),
            (stream,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def wait_for_events(dsn: str, schema: str, stream: str, at_least: int) -> None:
    deadline = time.monotonic() + 30
    while count_events(dsn, schema, stream) < at_least:
        assert time.monotonic() < deadline, f"{stream} never reached {at_least} events"
        time.sleep(0.02)


def test_migrate_completes_while_release_1_writers_append(
    dsn: str, v1_schema: str, release_1: Path
) -> None:
    """A rolling upgrade: release-1 processes keep appending while `migrate` runs. The
    migration takes its locks in the writers' order, so neither side meets a deadlock."""
    streams = [f"r1-{n}" for n in range(4)]
    with Release1Process(release_1, dsn, v1_schema) as r1:
        r1.ok({"cmd": "write", "streams": streams})
        for stream in streams:
            wait_for_events(dsn, v1_schema, stream, 5)
        assert admin.migrate(dsn, v1_schema) == SCHEMA_VERSION
        after = {stream: count_events(dsn, v1_schema, stream) for stream in streams}
        for stream in streams:  # release 1 goes on writing on the migrated schema
            wait_for_events(dsn, v1_schema, stream, after[stream] + 5)
        done = r1.ok({"cmd": "write_stop"}, timeout=90)
    assert done["errors"] == [] and not done["alive"], done
    with EventStore.start(dsn, schema=v1_schema) as store:
        for stream in streams:
            stored = [e.stream_version for e in store.stream_forward(stream)]
            assert stored == done["written"][stream]  # every append that returned, in order


def test_release_1_writers_cannot_append_to_a_stream_soft_deleted_after_the_migration(
    dsn: str, v1_schema: str, release_1: Path
) -> None:
    """Release 1 knows nothing of soft deletes; the migrated schema refuses its appends to a
    deleted stream, on each of its append paths (one statement, COPY, its append_events
    function), and release 1 reports a wrong expected version."""
    with Release1Process(release_1, dsn, v1_schema) as r1:
        r1.ok({"cmd": "append", "stream": "r1-doomed", "expected": 0, "count": 2})
        assert admin.migrate(dsn, v1_schema) == SCHEMA_VERSION
        with EventStore.start(dsn, schema=v1_schema) as store:
            store.delete_stream("r1-doomed", 2)
            for count in (1, 100):  # one statement; COPY (more than 64 events)
                reply = r1.ok(
                    {"cmd": "append", "stream": "r1-doomed", "expected": 2, "count": count}
                )
                assert reply.get("error") == "WrongExpectedVersionError", reply
            r1.ok(
                {"cmd": "append", "stream": "r1-alive", "expected": 0, "count": 1}
            )  # others go on
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(v1_schema)))
        with pytest.raises(psycopg.errors.RestrictViolation, match="is deleted"):
            conn.execute(
                "SELECT * FROM append_events(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (["r1-doomed"], [2], [1], ["t"], [None], [None], [b"{}"], [None], "c", "o"),
            )
        rows = conn.execute(
            "SELECT s.stream_uuid, s.stream_version, count(e.event_id), s.deleted_at IS NOT NULL "
            "FROM streams AS s LEFT JOIN events AS e ON e.stream_id = s.stream_id "
            "WHERE s.stream_uuid LIKE 'r1-%' GROUP BY 1, 2, 4 ORDER BY 1"
        ).fetchall()
    assert rows == [("r1-alive", 1, 1, False), ("r1-doomed", 2, 2, True)]


def release_1_receives(r1: Release1Process, up_to: int, timeout: float = 20.0) -> list[int]:
    """The event_ids a release-1 subscription delivers until it reaches `up_to`."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while not seen or seen[-1] < up_to:
        seen.extend(r1.events(max(0.1, deadline - time.monotonic())))
    return seen


def test_hard_deletes_are_refused_while_release_1_subscriptions_run(
    dsn: str, v1_schema: str, release_1: Path
) -> None:
    """Release 1 cannot read past the gap a hard delete leaves in $all (its subscription
    stops), so a hard delete is refused, saying why, while a release-1 process holds a
    subscription; once none does, it goes through (this release's subscriptions do not stop it)."""
    with Release1Process(release_1, dsn, v1_schema) as r1:
        r1.ok({"cmd": "subscribe", "name": "r1-live"}, timeout=60)
        assert release_1_receives(r1, 250) == list(range(1, 251))
        assert admin.migrate(dsn, v1_schema) == SCHEMA_VERSION
        with EventStore.start(dsn, schema=v1_schema, enable_hard_deletes=True) as store:
            with pytest.raises(HardDeletesDisabledError, match=r"earlier release.*'r1-live'"):
                store.delete_stream("order-2", 100, hard=True)
            assert len(store.read_stream_forward("order-2", count=200)) == 100
            store.append_to_stream("later", 0, [EventData({"n": 1})])
            assert release_1_receives(r1, 251) == [251]
            # A release-1 subscription that starts behind the (refused) gap reads on.
            r1.ok({"cmd": "subscribe", "name": "projection"}, timeout=60)  # checkpoint 120
            assert release_1_receives(r1, 251) == list(range(121, 252))
    with EventStore.start(dsn, schema=v1_schema, enable_hard_deletes=True) as store:
        mine = store.subscribe_to_all_streams("v3", QueueSubscriber(), start_from="current")
        store.delete_stream("order-2", 100, hard=True)  # only this release's subscription runs
        mine.unsubscribe()
        with pytest.raises(StreamNotFoundError):
            store.read_stream_forward("order-2")
