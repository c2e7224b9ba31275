"""Name resolution is fixed (API part 3, "Rules tightened"; issue 17 item 5).

A temporary table named like one of the store's tables, on a connection the store writes
through (the application's own with `conn=`, a PgBouncer server connection that another client
left one on, the store's own sessions), receives nothing and hides nothing: every function
and session of the store resolves names in its schema first and in pg_temp last. A store
created by release 2 (commit 53fa9d5, whose functions did not) gets this from `migrate`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from support.factory import make_events, new_stream
from support.pgbouncer import PgBouncer, missing
from support.release1 import RELEASE_2, release_tree, run_release

from eventstore_actors import EventStore, StreamNotFoundError, admin
from eventstore_actors.storage.migrations import SCHEMA_VERSION

#: The store's tables an application might well name its own temporary tables after.
NAMESAKES = ("events", "streams", "links", "subscriptions", "parked_events")


def temp_namesakes(conn: psycopg.Connection[Any], schema: str) -> None:
    """Temporary tables shaped like the store's, so that a write resolved to them succeeds."""
    for table in NAMESAKES:
        conn.execute(
            sql.SQL("CREATE TEMP TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(
                sql.Identifier(table), sql.Identifier(schema, table)
            )
        )


def temp_rows(conn: psycopg.Connection[Any]) -> dict[str, int]:
    found = {}
    for table in NAMESAKES:
        query = sql.SQL("SELECT count(*) FROM pg_temp.{}").format(sql.Identifier(table))
        row = conn.execute(query).fetchone()
        assert row is not None
        found[table] = int(row[0])
    return found


def hard_delete_on(conn: psycopg.Connection[Any], schema: str, stream: str) -> int:
    """The store's delete function called on `conn`, as the store calls it (schema-qualified)."""
    row = conn.execute(
        sql.SQL("SELECT status FROM {}.delete_stream(%s, -1, true, 'test', 'test')").format(
            sql.Identifier(schema)
        ),
        (stream,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def check_conn_append_and_delete(store: EventStore, dsn: str, schema: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:  # the application's, its search_path
        temp_namesakes(conn, schema)
        stream = new_stream()
        with conn.transaction():
            result = store.append_to_stream(stream, 0, make_events(3), conn=conn)
        assert [e.stream_version for e in store.read_stream_forward(stream)] == [1, 2, 3]
        assert [e.event_id for e in store.read_stream_forward(stream)] == list(
            range(result.first_event_id, result.last_event_id + 1)
        )
        assert temp_rows(conn) == dict.fromkeys(NAMESAKES, 0)

        with conn.transaction():
            assert hard_delete_on(conn, schema, stream) == 0  # found, and deleted
        with pytest.raises(StreamNotFoundError):
            store.read_stream_forward(stream)
        assert temp_rows(conn) == dict.fromkeys(NAMESAKES, 0)


def test_temp_tables_on_the_callers_connection_change_nothing(
    make_store: Callable[..., EventStore], dsn: str, schema: str
) -> None:
    store = make_store(enable_hard_deletes=True)
    check_conn_append_and_delete(store, dsn, schema)


def test_the_stores_sessions_search_pg_temp_last(
    make_store: Callable[..., EventStore], dsn: str, schema: str
) -> None:
    store = make_store()
    store.append_to_stream(new_stream(), 0, make_events(2))
    # A session as the store opens them (on the server itself: PgBouncer refuses `options`).
    with psycopg.connect(dsn, **store.settings.connect_kwargs()) as conn:
        temp_namesakes(conn, schema)
        row = conn.execute("SELECT count(*) FROM events").fetchone()
    assert row == (2,)  # the store's table, not the empty temporary one


@pytest.fixture
def one_server_bouncer(dsn: str) -> Iterator[PgBouncer]:
    """A PgBouncer with a single server connection: every client shares it."""
    reason = missing()
    if reason is not None:
        pytest.skip(reason)
    with PgBouncer(dsn, pool_size=1) as running:
        yield running


def test_a_temp_table_left_on_a_pgbouncer_server_connection_changes_nothing(
    one_server_bouncer: PgBouncer, dsn: str, schema: str
) -> None:
    pooled = one_server_bouncer.dsn(dsn)
    with psycopg.connect(pooled, autocommit=True, prepare_threshold=None) as other:
        temp_namesakes(other, schema)  # stays on the (only) server connection
        store = EventStore.start(
            pooled, schema=schema, session_dsn=dsn, pool_size=1, enable_hard_deletes=True
        )
        try:
            stream = new_stream()
            store.append_to_stream(stream, 0, make_events(3))
            assert [e.stream_version for e in store.read_stream_forward(stream)] == [1, 2, 3]
            store.delete_stream(stream, 3, hard=True)
            with pytest.raises(StreamNotFoundError):
                store.read_stream_forward(stream)
            assert temp_rows(other) == dict.fromkeys(NAMESAKES, 0)
        finally:
            store.stop()
            # The server connection outlives this client: drop what it would keep there.
            for table in NAMESAKES:
                other.execute(sql.SQL("DROP TABLE pg_temp.{}").format(sql.Identifier(table)))


@pytest.fixture(scope="session")
def release_2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Release 2's package and SQL, from the git history (skips without git or the commit)."""
    return release_tree(tmp_path_factory.mktemp("release-2"), RELEASE_2)


@pytest.fixture
def v2_schema(dsn: str, release_2: Path) -> Iterator[str]:
    """A schema created by release 2's own `admin.init`, in a release-2 process."""
    name = f"r2_{new_stream().replace('-', '')[:12]}"
    version = run_release(
        release_2,
        "import sys; from eventstore_actors import admin; "
        "from eventstore_actors.storage.migrations import SCHEMA_VERSION; "
        "admin.init(sys.argv[1], sys.argv[2]); print(SCHEMA_VERSION)",
        dsn,
        name,
    )
    assert version.split()[-1] == "2"
    try:
        yield name
    finally:
        admin.drop(dsn, name)


def test_migrate_from_release_2_fixes_name_resolution(dsn: str, v2_schema: str) -> None:
    assert admin.migrate(dsn, v2_schema) == SCHEMA_VERSION
    with psycopg.connect(dsn, autocommit=True) as conn:
        configs = conn.execute(
            "SELECT p.proname::text, p.proconfig FROM pg_proc AS p "
            "WHERE p.pronamespace = %s::regnamespace",
            (v2_schema,),
        ).fetchall()
    for name, config in configs:
        assert config == [f"search_path={v2_schema}, pg_temp"], name
    with EventStore.start(dsn, schema=v2_schema, enable_hard_deletes=True) as store:
        check_conn_append_and_delete(store, dsn, v2_schema)
