"""Schema v4's retention block, applied to a store created and filled by the previous release
(schema v3, commit 726adba): existing streams keep every event and get no limits; retention
then works on them like on a fresh store."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql as pgsql
from support import wait_until
from support.factory import make_events, versions
from support.release1 import release_tree, run_release

from eventstore_actors import EventStore, admin
from eventstore_actors.storage.migrations import SCHEMA_VERSION

#: The previous release (schema version 3).
RELEASE_3 = "726adba"


@pytest.fixture(scope="session")
def release_3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return release_tree(tmp_path_factory.mktemp("release-3"), RELEASE_3)


@pytest.fixture
def v3_schema(dsn: str, release_3: Path) -> Iterator[str]:
    """A schema created by release 3's `admin.init`, with 2 streams of 5 events and a link
    appended by a release-3 store, in a release-3 process."""
    name = f"r3_{uuid.uuid4().hex[:12]}"
    out = run_release(
        release_3,
        "import sys\n"
        "from eventstore_actors import EventStore, EventData, admin\n"
        "from eventstore_actors.storage.migrations import SCHEMA_VERSION\n"
        "admin.init(sys.argv[1], sys.argv[2])\n"
        "with EventStore.start(sys.argv[1], schema=sys.argv[2]) as store:\n"
        "    for s in ('a', 'b'):\n"
        "        store.append_to_stream(s, 0, [EventData({'n': n}, 't') for n in range(5)])\n"
        "    store.link_to_stream('l', 0, [1, 3, 10])\n"
        "print(SCHEMA_VERSION)\n",
        dsn,
        name,
    )
    assert out.split()[-1] == "3"
    try:
        yield name
    finally:
        admin.drop(dsn, name)


def test_migrating_a_release_3_store_adds_retention(dsn: str, v3_schema: str) -> None:
    assert SCHEMA_VERSION >= 4
    assert admin.migrate(dsn, v3_schema) == SCHEMA_VERSION
    with EventStore.start(dsn, schema=v3_schema) as store:
        info = store.stream_info("a")
        assert (info.stream_version, info.first_version, info.max_count, info.max_age) == (
            5,
            1,
            None,
            None,
        )
        assert versions(store.read_stream_forward("a")) == [1, 2, 3, 4, 5]
        assert [e.event_id for e in store.read_all_streams_forward()] == list(range(1, 11))
        assert store.truncate_stream("a", 3) == 2
        store.set_stream_retention("b", max_count=1)
        assert [e.event_id for e in store.read_stream_forward("l")] == [3, 10]
        assert [e.event_id for e in store.read_all_streams_forward()] == [3, 4, 5, 10]
        store.append_to_stream("a", 5, make_events(1))

        def stored() -> int:
            with psycopg.connect(dsn, autocommit=True) as conn:
                query = pgsql.SQL("SELECT count(*) FROM {}.events").format(
                    pgsql.Identifier(v3_schema)
                )
                row = conn.execute(query).fetchone()
            return int(row[0]) if row else -1

        wait_until(lambda: stored() == 5, 30.0, what="hidden rows deleted")
        assert versions(store.read_stream_forward("a")) == [3, 4, 5, 6]
