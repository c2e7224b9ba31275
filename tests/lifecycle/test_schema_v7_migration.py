"""Schema version 7: a store made and used by the previous release (commit a568f8c, schema
version 6) is migrated in place. It gets its identity (store_identity) and the tombstones of
hard deletes (hard_deletes, written by delete_stream() from now on, whoever calls it); the
hard deletes of before the migration left none, so for the events appended before it the
rule of version 6 still applies, and a stream created since cannot own them. Its archive
target, written by release 6 without a marker, is adopted by the next archive."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest
from support import events, query, wait_until
from support.release1 import release_tree, run_release

from eventstore_actors import ANY_VERSION, EventNotFoundError, EventStore, admin
from eventstore_actors.lifecycle.archive.owner import MARKER
from eventstore_actors.storage.migrations import SCHEMA_VERSION

pytest.importorskip("pyarrow.parquet")

#: The last commit of the previous release (schema version 6).
RELEASE_6 = "a568f8c"

_RELEASE_6 = """
import sys
from eventstore_actors import ANY_VERSION, EventData, EventStore, admin
from eventstore_actors.storage.migrations import SCHEMA_VERSION
dsn, schema, target = sys.argv[1:4]
admin.init(dsn, schema)
with EventStore.start(dsn, schema=schema, enable_hard_deletes=True, archive=target) as store:
    store.append_to_stream("r", 0, [EventData({"n": n}) for n in range(3)])  # 1-3
    store.append_to_stream("x", 0, [EventData({"n": 9})])  # 4
    assert store.archive(before_event_id=5).events == 4
    store.delete_stream("r", ANY_VERSION, hard=True)  # no tombstone in version 6
    store.append_to_stream("x", ANY_VERSION, [EventData({"n": 10})])  # 5
print(SCHEMA_VERSION, flush=True)
"""


@pytest.fixture(scope="module")
def release_6(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return release_tree(tmp_path_factory.mktemp("release-6"), RELEASE_6)


def test_a_release_6_store_migrates_to_version_7(dsn: str, release_6: Path, tmp_path: Path) -> None:
    name = f"r6_{uuid.uuid4().hex[:12]}"
    target = tmp_path / "archive"
    # An application transaction begun before release 6 wrote anything: its now() is older
    # than every event of the first life of "r".
    with psycopg.connect(dsn) as caller:
        ((began,),) = caller.execute("SELECT now()").fetchall()
        with psycopg.connect(dsn, autocommit=True) as other:
            wait_until(
                lambda: (
                    other.execute("SELECT clock_timestamp() > %s", (began,)).fetchall() == [(True,)]
                )
            )
        try:
            assert run_release(release_6, _RELEASE_6, dsn, name, str(target)).split() == ["6"]
            assert not (target / MARKER).exists()
            assert SCHEMA_VERSION >= 7
            assert admin.migrate(dsn, name) == SCHEMA_VERSION
            assert admin.migrate(dsn, name) == SCHEMA_VERSION  # again: nothing left to do
            ((store_id, legacy_events, legacy_streams),) = query(
                dsn,
                name,
                "SELECT store_id, legacy_event_id, legacy_stream_id FROM store_identity",
            )
            assert store_id is not None and legacy_events == 5 and legacy_streams >= 2
            assert query(dsn, name, "SELECT * FROM hard_deletes") == []
            with EventStore.start(
                dsn, schema=name, enable_hard_deletes=True, archive=str(target)
            ) as store:
                before = [(e.event_id, e.stream_uuid) for e in store.read_all_streams_forward()]
                assert before == [(4, "x"), (5, "x")]
                # "r" created again in the old transaction: its row's created_at is older
                # than its first life's archived events, hard-deleted before the migration
                # (no tombstone); a stream created since the migration owns none of them.
                store.append_to_stream("r", 0, events(1), conn=caller)  # 6
                caller.commit()
                got = [(e.event_id, e.stream_uuid) for e in store.read_all_streams_forward()]
                assert got == [(4, "x"), (5, "x"), (6, "r")]
                assert [e.event_id for e in store.read_stream_forward("r")] == [6]
                with pytest.raises(EventNotFoundError):
                    store.link_to_stream("l", ANY_VERSION, [2])
                # The next archive adopts the target of release 6 and marks it.
                assert store.archive(before_event_id=7).events == 2
                assert (target / MARKER).exists()
                assert [e.event_id for e in store.read_stream_forward("r")] == [6]
                assert [e.event_id for e in store.read_stream_forward("x")] == [4, 5]
                # A hard delete now writes its tombstone: the counter when it ran.
                store.append_to_stream("x", ANY_VERSION, events(1, start=20))  # 7
                store.delete_stream("x", ANY_VERSION, hard=True)
                assert query(dsn, name, "SELECT stream_uuid, upto FROM hard_deletes") == [("x", 7)]
                store.append_to_stream("x", 0, events(1, start=30))  # 8
                assert [e.event_id for e in store.read_stream_forward("x")] == [8]
                assert [e.event_id for e in store.read_all_streams_forward()] == [6, 8]
        finally:
            admin.drop(dsn, name)
