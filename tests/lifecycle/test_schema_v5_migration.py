"""Schema version 5: a store made, filled and archived by the previous release (commit 6cae651,
schema version 4) is migrated in place; its archived events can then be linked, a release-4
process still running keeps working (its own links still refuse archived events, as before),
and parked_events gets its index on event_id, which a fresh install has too and the
scavenger's batches use."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql as pgsql
from support.release1 import release_tree
from support.storage_sql import sql

from eventstore_actors import ANY_VERSION, EventNotFoundError, EventStore, admin
from eventstore_actors.sql import statement
from eventstore_actors.storage.migrations import SCHEMA_VERSION

pytest.importorskip("pyarrow.parquet")

#: The last commit of the previous release (schema version 4).
RELEASE_4 = "6cae651"
INDEX = "parked_events_event_id_idx"

_RELEASE_4 = """
import sys
from eventstore_actors import ANY_VERSION, EventData, EventNotFoundError, EventStore, admin
from eventstore_actors.storage.migrations import SCHEMA_VERSION
dsn, schema, target = sys.argv[1:4]

def link(store, stream, ids):
    try:
        store.link_to_stream(stream, ANY_VERSION, ids)
        print("linked", flush=True)
    except EventNotFoundError as exc:
        print("refused", exc.event_id, flush=True)

admin.init(dsn, schema)
with EventStore.start(dsn, schema=schema, archive=target) as store:
    store.append_to_stream("a", 0, [EventData({"n": n}, "t") for n in range(5)])  # 1-5
    store.append_to_stream("b", 0, [EventData({"n": n}, "t") for n in range(3)])  # 6-8
    store.link_to_stream("l", 0, [2, 7])
    print(SCHEMA_VERSION, store.archive(before_event_id=5).events, flush=True)  # 1-4
    link(store, "x", [3])  # the defect: an archived event cannot be linked
    sys.stdin.readline()  # migrated meanwhile
    link(store, "r4", [5, 8])
    link(store, "r4", [3])
    store.append_to_stream("b", ANY_VERSION, [EventData({"n": 9}, "t")])  # 9
    print("ok", flush=True)
"""


@pytest.fixture(scope="module")
def release_4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return release_tree(tmp_path_factory.mktemp("release-4"), RELEASE_4)


def index_valid(dsn: str, schema: str) -> bool | None:
    """Whether the index exists and is valid (None: it does not exist)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT i.indisvalid FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid "
            "JOIN pg_namespace AS n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s",
            (schema, INDEX),
        ).fetchone()
    return None if row is None else bool(row[0])


def test_a_release_4_store_with_archived_events_migrates_to_version_5(
    dsn: str, release_4: Path, tmp_path: Path
) -> None:
    assert SCHEMA_VERSION >= 5
    name = f"r4_{uuid.uuid4().hex[:12]}"
    child = subprocess.Popen(
        [sys.executable, "-c", _RELEASE_4, dsn, name, str(tmp_path / "archive")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=release_4,  # not this checkout's package
        env={**os.environ, "PYTHONPATH": str(release_4)},
    )
    assert child.stdout is not None and child.stdin is not None
    try:
        assert child.stdout.readline().split() == ["4", "4"]
        assert child.stdout.readline().split() == ["refused", "3"]
        with sql(dsn, name) as conn:
            conn.execute(
                "INSERT INTO parked_events (stream_uuid, subscription_name, event_id, reason) "
                "VALUES ('$all', 'p', 3, 'test'), ('$all', 'p', 6, 'test')"
            )
        assert index_valid(dsn, name) is None
        assert admin.migrate(dsn, name) == SCHEMA_VERSION
        assert admin.migrate(dsn, name) == SCHEMA_VERSION  # idempotent
        assert index_valid(dsn, name) is True
        # The release-4 process goes on: links to stored events work, archived ones are
        # refused by its own function (unchanged) as before, its appends work.
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().split() == ["linked"]
        assert child.stdout.readline().split() == ["refused", "3"]
        assert child.stdout.readline().split() == ["ok"]
        with EventStore.start(dsn, schema=name) as store:
            everything = store.read_all_streams_forward(0, 100)
            assert [e.event_id for e in everything] == list(range(1, 10))
            result = store.link_to_stream("x", ANY_VERSION, [3, 1, 8])
            assert (result.first_version, result.last_version) == (1, 3)
            forward = store.read_stream_forward("x")
            assert [(e.event_id, e.event_number) for e in forward] == [(3, 1), (1, 2), (8, 3)]
            assert [(e.stream_uuid, e.stream_version) for e in forward] == [
                ("a", 3),
                ("a", 1),
                ("b", 3),
            ]
            assert [e.data for e in forward] == [{"n": 2}, {"n": 0}, {"n": 2}]
            assert store.read_stream_backward("x") == forward[::-1]
            assert [e.event_id for e in store.read_stream_forward("l")] == [2, 7]
            assert [e.event_id for e in store.read_stream_forward("r4")] == [5, 8]
            assert store.read_all_streams_forward(0, 100) == everything
            with pytest.raises(EventNotFoundError):
                store.link_to_stream("x", 3, [4, 99])
            assert store.stream_info("x").stream_version == 3
    finally:
        child.kill()
        child.wait(timeout=30)
        admin.drop(dsn, name)


def test_a_fresh_store_has_the_index_and_the_scavenger_uses_it(dsn: str, schema: str) -> None:
    assert index_valid(dsn, schema) is True
    with sql(dsn, schema) as conn:
        conn.execute(
            "INSERT INTO parked_events (stream_uuid, subscription_name, event_id, reason) "
            "SELECT '$all', 'sub-' || (g % 10), g, 'test' FROM generate_series(1, 20000) AS g"
        )
        conn.execute("ANALYZE parked_events")
        purge = statement("retention/purge").rstrip().rstrip(";")
        args = {"stream_id": 1, "low": 1, "bound": 1000, "batch": 500, "key": "tests.plan"}
        for mode in ("auto", "force_generic_plan"):
            conn.execute(pgsql.SQL("SET plan_cache_mode = {}").format(pgsql.Literal(mode)))
            rows = conn.execute("EXPLAIN " + purge, args).fetchall()
            text = "\n".join(str(r[0]) for r in rows)
            parked = text[text.index("CTE parked") : text.index("CTE linked")]
            assert INDEX in parked, text
