"""Schema version 5, crypto block: a store made by release 4 (commit 6cae651, schema version
4), with a subject already forgotten, is migrated in place; it gets a forget generation, and
a forget by a release-4 process still running (which
knows nothing of the generation) is honoured by a release-5 instance whose key cache still
holds that subject's key."""

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

from eventstore_actors import FORGOTTEN, Encryption, EventStore, admin
from eventstore_actors.storage.migrations import SCHEMA_VERSION

#: The last commit of release 4 (schema version 4).
RELEASE_4 = "6cae651"
KEY = bytes(range(32))

_RELEASE_4 = """
import sys
from eventstore_actors import ANY_VERSION, Encryption, EventData, EventStore, admin
dsn, schema = sys.argv[1], sys.argv[2]
admin.init(dsn, schema)
encryption = Encryption(master_key=bytes(range(32)))
with EventStore.start(dsn, schema=schema, encryption=encryption) as store:
    for who in ("amy", "bob"):
        events = [EventData({"n": i}, "E", subject=who) for i in range(3)]
        store.append_to_stream(who, ANY_VERSION, events)
    store.forget_subject("amy")
    print("ok", flush=True)
    sys.stdin.readline()  # the schema is migrated meanwhile
    print(store.forget_subject("bob"), flush=True)
    sys.stdin.readline()
"""


@pytest.fixture(scope="module")
def release_4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return release_tree(tmp_path_factory.mktemp("release-4"), RELEASE_4)


def _scalar(dsn: str, schema: str, query: str) -> object:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def test_release_4_store_migrates_to_version_5(dsn: str, release_4: Path) -> None:
    schema = f"p_{uuid.uuid4().hex[:12]}"
    child = subprocess.Popen(
        [sys.executable, "-c", _RELEASE_4, dsn, schema],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=release_4,
        env={**os.environ, "PYTHONPATH": str(release_4)},
    )
    try:
        _migrated_while_release_4_runs(dsn, schema, child)
    finally:
        child.kill()
        child.wait(timeout=30)
        admin.drop(dsn, schema)


def _migrated_while_release_4_runs(dsn: str, schema: str, child: subprocess.Popen[str]) -> None:
    assert child.stdout is not None and child.stdin is not None
    assert child.stdout.readline().strip() == "ok"
    assert _scalar(dsn, schema, "SELECT max(version) FROM schema_version") == 4
    assert admin.migrate(dsn, schema) == SCHEMA_VERSION >= 5
    assert admin.migrate(dsn, schema) == SCHEMA_VERSION  # idempotent
    before = _scalar(dsn, schema, "SELECT generation FROM forget_generation")
    assert isinstance(before, int) and 0 <= before < 2**62
    with EventStore.start(dsn, schema=schema, encryption=Encryption(master_key=KEY)) as store:
        amy = store.read_stream_forward("amy")
        assert all(e.forgotten and e.data is FORGOTTEN for e in amy)
        assert [e.data for e in store.read_stream_forward("bob")] == [{"n": i} for i in range(3)]
        keyring = store.settings.serializer.keyring  # type: ignore[attr-defined]
        assert keyring.cached("bob")
        stale = (keyring.generation, dict(keyring.cache), set(keyring.state[2]))
        # A release-4 process forgets bob: its code knows nothing of the generation.
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "3"
        assert _scalar(dsn, schema, "SELECT generation FROM forget_generation") != before
        keyring.state = stale  # the release-4 notification not handled yet
        bob = store.read_stream_forward("bob")
        assert all(e.forgotten and e.data is FORGOTTEN for e in bob)
        assert not keyring.cached("bob")
