"""Schema version 4, personal data block: a store made by release 3 (commit 726adba, schema
version 3) is migrated in place, its events read as before (no subject), and release-3
processes still append to it (their events have no subject)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from support.release1 import release_tree

from eventstore_actors import (
    ANY_VERSION,
    FORGOTTEN,
    Encryption,
    EventData,
    EventStore,
    SnapshotData,
    admin,
)
from eventstore_actors.storage.migrations import SCHEMA_VERSION

#: The last commit of release 3 (schema version 3).
RELEASE_3 = "726adba"

_WRITE = """
import sys
from eventstore_actors import ANY_VERSION, EventData, EventStore, SnapshotData, admin
dsn, schema = sys.argv[1], sys.argv[2]
admin.init(dsn, schema)
with EventStore.start(dsn, schema=schema) as store:
    for _ in range(2):  # before the migration, then after it (a rolling upgrade)
        store.append_to_stream("old", ANY_VERSION, [EventData({"n": i}, "Old") for i in range(3)])
        store.append_to_stream("old", ANY_VERSION, [EventData({"n": i}, "Big") for i in range(70)])
        store.record_snapshot(SnapshotData("src", 3, "T", {"s": 1}))
        print("ok", flush=True)
        sys.stdin.readline()
"""


@pytest.fixture(scope="module")
def release_3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return release_tree(tmp_path_factory.mktemp("release-3"), RELEASE_3)


def test_release_3_store_migrates_to_version_4(dsn: str, release_3: Path) -> None:
    v3_schema = f"p_{uuid.uuid4().hex[:12]}"
    env = {**os.environ, "PYTHONPATH": str(release_3)}
    child = subprocess.Popen(
        [sys.executable, "-c", _WRITE, dsn, v3_schema],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=release_3,
        env=env,
    )
    try:
        _migrated_while_release_3_runs(dsn, v3_schema, child)
    finally:
        child.kill()
        child.wait(timeout=30)
        admin.drop(dsn, v3_schema)


def _migrated_while_release_3_runs(dsn: str, v3_schema: str, child: subprocess.Popen[str]) -> None:
    assert child.stdout is not None and child.stdin is not None
    assert child.stdout.readline().strip() == "ok"
    with psycopg.connect(dsn, autocommit=True) as conn:
        version = conn.execute(
            sql.SQL("SELECT max(version) FROM {}.schema_version").format(sql.Identifier(v3_schema))
        ).fetchone()
    assert version == (3,)
    assert admin.migrate(dsn, v3_schema) == SCHEMA_VERSION
    assert admin.migrate(dsn, v3_schema) == SCHEMA_VERSION  # idempotent
    # The release-3 process still appends (one statement, COPY) to the migrated schema.
    child.stdin.write("go\n")
    child.stdin.flush()
    assert child.stdout.readline().strip() == "ok"
    key = bytes(32)
    with EventStore.start(dsn, schema=v3_schema, encryption=Encryption(master_key=key)) as store:
        old = store.read_stream_forward("old")
        assert len(old) == 146
        assert all(e.subject is None and not e.forgotten for e in old)
        assert old[0].data == {"n": 0}
        assert store.read_snapshot("src").data == {"s": 1}
        store.append_to_stream("new", ANY_VERSION, [EventData({"p": 1}, "P", subject="zoe")])
        store.record_snapshot(SnapshotData("src2", 1, "T", {"p": 1}, subject="zoe"))
        assert store.read_stream_forward("new")[0].data == {"p": 1}
        assert store.forget_subject("zoe") == 1
        assert store.read_stream_forward("new")[0].data is FORGOTTEN
        assert store.read_snapshot("src2").data is FORGOTTEN
        assert store.read_stream_forward("old")[0].data == {"n": 0}
