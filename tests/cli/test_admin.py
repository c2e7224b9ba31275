"""Administration: admin.create/init/drop/reset, the CLI, start-up errors, schema isolation,
and the database's own guard against changing events.

Ported in part from the Elixir suite (test/storage/database_test.exs,
test/storage/protect_against_update_and_delete_test.exs).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import psycopg.conninfo
import pytest
from psycopg import sql
from support.cli import cli

from eventstore_actors import (
    ConfigError,
    EventData,
    EventStore,
    EventStoreError,
    SnapshotData,
    SnapshotNotFoundError,
    StreamNotFoundError,
    admin,
)

REPO = Path(__file__).resolve().parents[2]
SECRET = "pw-Sekr1t-7f3a9c"  # must never appear in any message, log line or CLI output


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def with_params(dsn: str, **params: str | int) -> str:
    return psycopg.conninfo.make_conninfo(dsn, **{k: str(v) for k, v in params.items()})


def events(count: int) -> list[EventData]:
    return [EventData(data={"n": n}, event_type="tests.Admin") for n in range(count)]


def drop_schema(dsn: str, schema: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def tables_in(dsn: str, schema: str) -> set[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchall()
    return {r[0] for r in rows}


def schema_exists(dsn: str, schema: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return (
            conn.execute(
                "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", (schema,)
            ).fetchone()
            is not None
        )


@pytest.fixture
def fresh_schema(dsn: str) -> Iterator[str]:
    """A schema name that is not initialised (and does not exist); dropped afterwards."""
    name = unique("adm")
    yield name
    drop_schema(dsn, name)


@pytest.fixture
def temp_db_dsn(dsn: str) -> Iterator[str]:
    """The DSN of a database that does not exist yet; dropped afterwards."""
    dbname = unique("esa_test_db")
    yield with_params(dsn, dbname=dbname)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
        )


def start(dsn: str, schema: str, **options: Any) -> EventStore:
    return EventStore.start(dsn, schema=schema, **options)


# --- init -----------------------------------------------------------------------------------------


def test_init_is_idempotent_and_keeps_data(dsn: str, schema: str, store: EventStore) -> None:
    store.append_to_stream("s", 0, events(3))
    store.record_snapshot(SnapshotData("agg", 1, "T", {"x": 1}))

    admin.init(dsn, schema)
    admin.init(dsn, schema)

    assert [e.event_id for e in store.read_stream_forward("s")] == [1, 2, 3]
    assert store.read_snapshot("agg").data == {"x": 1}
    store.append_to_stream("s", 3, events(1))
    assert store.read_stream_forward("s")[-1].event_id == 4


def test_init_creates_a_new_schema(dsn: str, fresh_schema: str) -> None:
    assert not schema_exists(dsn, fresh_schema)
    admin.init(dsn, fresh_schema)
    assert schema_exists(dsn, fresh_schema)
    with start(dsn, fresh_schema) as store:
        store.append_to_stream("s", 0, events(2))
        assert [e.event_id for e in store.read_all_streams_forward()] == [1, 2]


def test_start_on_uninitialised_schema_names_the_init_command(dsn: str, fresh_schema: str) -> None:
    with pytest.raises(ConfigError) as info:
        start(dsn, fresh_schema)
    assert "init" in str(info.value)


def test_config_error_is_an_event_store_error() -> None:
    assert issubclass(ConfigError, EventStoreError)


# --- drop -----------------------------------------------------------------------------------------


def test_drop_is_idempotent(dsn: str, fresh_schema: str) -> None:
    admin.init(dsn, fresh_schema)
    with start(dsn, fresh_schema) as store:
        store.append_to_stream("s", 0, events(1))

    admin.drop(dsn, fresh_schema)
    admin.drop(dsn, fresh_schema)
    assert not schema_exists(dsn, fresh_schema)
    with pytest.raises(ConfigError):
        start(dsn, fresh_schema)


def test_drop_of_a_schema_that_never_existed(dsn: str, fresh_schema: str) -> None:
    admin.drop(dsn, fresh_schema)
    assert not schema_exists(dsn, fresh_schema)


def test_init_after_drop_starts_from_id_1(dsn: str, fresh_schema: str) -> None:
    admin.init(dsn, fresh_schema)
    with start(dsn, fresh_schema) as store:
        store.append_to_stream("s", 0, events(5))
    admin.drop(dsn, fresh_schema)
    admin.init(dsn, fresh_schema)
    with start(dsn, fresh_schema) as store:
        with pytest.raises(StreamNotFoundError):
            store.read_stream_forward("s")
        store.append_to_stream("s", 0, events(1))
        assert store.read_stream_forward("s")[0].event_id == 1


# --- reset ----------------------------------------------------------------------------------------


def test_reset_empties_every_table_and_restarts_ids(
    dsn: str, schema: str, make_store: Callable[..., EventStore]
) -> None:
    store = make_store()
    store.append_to_stream("a", 0, events(3))
    store.append_to_stream("b", 0, events(2))
    store.record_snapshot(SnapshotData("agg", 1, "T", {}))
    store.stop()

    admin.reset(dsn, schema)
    admin.reset(dsn, schema)  # idempotent

    store = make_store()
    assert store.read_all_streams_forward() == []
    with pytest.raises(StreamNotFoundError):
        store.read_stream_forward("a")
    with pytest.raises(SnapshotNotFoundError):
        store.read_snapshot("agg")
    store.append_to_stream("a", 0, events(2))  # the stream can be created again
    assert [e.event_id for e in store.read_all_streams_forward()] == [1, 2]


def test_reset_empties_the_eventsourcing_modules_tables(
    dsn: str, schema: str, store: EventStore
) -> None:
    """Item 12(d) of issue 17: the tracking rows (and snapshots) of eventstore_actors.eventsourcing
    went through a reset: a downstream application then skipped every new notification."""
    tracking = sql.Identifier(schema, "eventsourcing_tracking")
    snaps = sql.Identifier(schema, "eventsourcing_snapshots")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("INSERT INTO {} VALUES ('app', 42)").format(tracking))
        conn.execute(sql.SQL("INSERT INTO {} VALUES ('agg', 1, 't', 'x')").format(snaps))
    store.stop()

    admin.reset(dsn, schema)

    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in (tracking, snaps):
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
            assert row == (0,), table


# --- create ---------------------------------------------------------------------------------------


def test_create_creates_the_database_and_is_idempotent(temp_db_dsn: str) -> None:
    admin.create(temp_db_dsn)
    admin.create(temp_db_dsn)  # Elixir returned :already_up; here: no error, nothing lost
    with psycopg.connect(temp_db_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.application_table (id int)")
    with start(temp_db_dsn, "public") as store:
        store.append_to_stream("s", 0, events(2))
    admin.create(temp_db_dsn)
    with start(temp_db_dsn, "public") as store:
        assert [e.event_id for e in store.read_stream_forward("s")] == [1, 2]

    # With a schema, in the now existing database.
    admin.create(temp_db_dsn, schema="app_store")
    with start(temp_db_dsn, "app_store") as store:
        store.append_to_stream("s", 0, events(1))
        assert store.read_stream_forward("s")[0].event_id == 1
    assert "events" in tables_in(temp_db_dsn, "app_store")

    # Dropping the store in "public" drops its tables, not the schema or other tables.
    assert {"events", "streams", "snapshots"} <= tables_in(temp_db_dsn, "public")
    admin.drop(temp_db_dsn)
    admin.drop(temp_db_dsn)
    assert schema_exists(temp_db_dsn, "public")
    assert tables_in(temp_db_dsn, "public") == {"application_table"}
    with pytest.raises(ConfigError):
        start(temp_db_dsn, "public")
    with start(temp_db_dsn, "app_store") as store:  # the other schema's store is untouched
        assert len(store.read_stream_forward("s")) == 1


def test_create_on_an_existing_database(dsn: str, fresh_schema: str) -> None:
    admin.create(dsn, fresh_schema)
    with start(dsn, fresh_schema) as store:
        store.append_to_stream("s", 0, events(1))


# --- isolation between schemas ------------------------------------------------------------------


def test_stores_in_different_schemas_are_isolated(
    dsn: str, schema: str, store: EventStore, fresh_schema: str
) -> None:
    admin.init(dsn, fresh_schema)
    with start(dsn, fresh_schema) as other:
        store.append_to_stream("same-name", 0, events(3))
        other.append_to_stream("same-name", 0, events(1))
        store.record_snapshot(SnapshotData("agg", 1, "T", {"in": "first"}))

        assert [e.event_id for e in store.read_all_streams_forward()] == [1, 2, 3]
        assert [e.event_id for e in other.read_all_streams_forward()] == [1]
        assert len(other.read_stream_forward("same-name")) == 1
        with pytest.raises(SnapshotNotFoundError):
            other.read_snapshot("agg")
        other.append_to_stream("same-name", 1, events(1))  # its own version, not 3

    admin.reset(dsn, fresh_schema)
    assert len(store.read_all_streams_forward()) == 3  # resetting one leaves the other


# --- start-up errors and secrets ----------------------------------------------------------------


def test_unreachable_database_fails_fast_without_the_password() -> None:
    bad = f"postgresql://postgres:{SECRET}@127.0.0.1:1/test?connect_timeout=3"
    began = time.monotonic()
    with pytest.raises(ConfigError) as info:
        EventStore.start(bad, schema="public")
    assert time.monotonic() - began < 20
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value)


def test_seed_keys_unreachable_without_the_password() -> None:
    with pytest.raises(ConfigError) as info:
        EventStore.start(
            hostname="127.0.0.1",
            port=1,
            username="postgres",
            password=SECRET,
            database="test",
            schema="public",
        )
    assert SECRET not in str(info.value)


def test_dsn_from_environment(dsn: str, fresh_schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTSTORE_DSN", dsn)
    admin.init(schema=fresh_schema)
    with EventStore.start(schema=fresh_schema) as store:
        store.append_to_stream("s", 0, events(1))
        assert store.read_stream_forward("s")[0].event_id == 1
    admin.reset(schema=fresh_schema)
    admin.drop(schema=fresh_schema)
    assert not schema_exists(dsn, fresh_schema)


def test_seed_connection_keys_are_accepted(dsn: str, schema: str) -> None:
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    keys: dict[str, Any] = {
        "hostname": params.get("host"),
        "port": params.get("port"),
        "username": params.get("user"),
        "database": params.get("dbname"),
    }
    with EventStore.start(schema=schema, **{k: v for k, v in keys.items() if v}) as store:
        store.append_to_stream("s", 0, events(1))
        assert len(store.read_stream_forward("s")) == 1


def test_password_never_logged_or_printed(
    dsn: str, schema: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with_password = with_params(dsn, password=SECRET)
    with EventStore.start(with_password, schema=schema) as store:
        store.append_to_stream("s", 0, events(2))
        store.read_stream_forward("s")
    with pytest.raises(EventStoreError) as info:
        EventStore.start(with_password, schema=unique("missing"))
    out = capsys.readouterr()
    assert SECRET not in str(info.value)
    assert SECRET not in out.out + out.err
    assert caplog.records
    for record in caplog.records:
        assert SECRET not in record.getMessage()
        assert SECRET not in repr(getattr(record, "eventstore", None))


# --- stop -----------------------------------------------------------------------------------------


def test_stop_is_idempotent_and_leaves_no_threads(dsn: str, schema: str) -> None:
    baseline = {t.ident for t in threading.enumerate()}
    store = EventStore.start(dsn, schema=schema)
    store.append_to_stream("s", 0, events(1))
    store.stop()
    store.stop()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        extra = [t for t in threading.enumerate() if t.ident not in baseline and t.is_alive()]
        if not extra:
            break
        time.sleep(0.05)
    assert not extra, f"threads outlived store.stop(): {[t.name for t in extra]}"


def test_calls_after_stop_raise_store_unavailable(dsn: str, schema: str) -> None:
    from eventstore_actors import StoreUnavailableError

    store = EventStore.start(dsn, schema=schema)
    store.append_to_stream("s", 0, events(2))
    half_read = store.stream_all_forward(0, read_batch_size=1)
    assert next(half_read).event_id == 1
    store.stop()

    calls: dict[str, Callable[[], object]] = {
        "append": lambda: store.append_to_stream("s", 2, events(1)),
        "read_stream_forward": lambda: store.read_stream_forward("s"),
        "read_all_streams_forward": lambda: store.read_all_streams_forward(),
        "stream_forward": lambda: list(store.stream_forward("s")),
        "half-read stream_all_forward": lambda: list(half_read),
        "record_snapshot": lambda: store.record_snapshot(SnapshotData("a", 1, "T", {})),
        "read_snapshot": lambda: store.read_snapshot("a"),
    }
    for name, call in calls.items():
        began = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            call()
        assert time.monotonic() - began < 5, name


def test_context_manager_stops_the_store(dsn: str, schema: str) -> None:
    with EventStore.start(dsn, schema=schema) as store:
        store.append_to_stream("s", 0, events(1))
    with EventStore.start(dsn, schema=schema) as again:
        assert len(again.read_stream_forward("s")) == 1


# --- the database refuses to change events --------------------------------------------------------


def test_database_refuses_update_and_delete_of_events(
    dsn: str, schema: str, store: EventStore
) -> None:
    # Elixir: protect_against_update_and_delete_test.exs, checked here with raw SQL.
    store.append_to_stream("s", 0, events(3))
    before = store.read_stream_forward("s")

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        for statement in [
            "UPDATE events SET event_type = 'tampered'",
            "UPDATE events SET created_at = now() WHERE stream_version = 1",
            "DELETE FROM events",
            "DELETE FROM events WHERE stream_version = 2",
        ]:
            with pytest.raises(psycopg.Error):
                conn.execute(statement)  # type: ignore[arg-type]
            assert store.read_stream_forward("s") == before, statement


# --- the command line -----------------------------------------------------------------------------


def test_cli_init_reset_drop(dsn: str, fresh_schema: str) -> None:
    for _ in range(2):  # idempotent
        result = cli("init", "--dsn", with_params(dsn, password=SECRET), "--schema", fresh_schema)
        assert result.returncode == 0, result.stderr
        assert SECRET not in result.stdout + result.stderr
    with start(dsn, fresh_schema) as store:
        store.append_to_stream("s", 0, events(3))

    result = cli("reset", "--dsn", dsn, "--schema", fresh_schema, "--yes")
    assert result.returncode == 0, result.stderr
    with start(dsn, fresh_schema) as store:
        assert store.read_all_streams_forward() == []

    for _ in range(2):
        result = cli("drop", "--dsn", dsn, "--schema", fresh_schema, "--yes")
        assert result.returncode == 0, result.stderr
    assert not schema_exists(dsn, fresh_schema)


def test_cli_create(temp_db_dsn: str) -> None:
    for _ in range(2):
        result = cli("create", "--dsn", temp_db_dsn, "--schema", "cli_store")
        assert result.returncode == 0, result.stderr
    with start(temp_db_dsn, "cli_store") as store:
        store.append_to_stream("s", 0, events(1))


def test_cli_dsn_from_environment(dsn: str, fresh_schema: str) -> None:
    result = cli("init", "--schema", fresh_schema, env={"EVENTSTORE_DSN": dsn})
    assert result.returncode == 0, result.stderr
    with start(dsn, fresh_schema) as store:
        store.append_to_stream("s", 0, events(1))


def test_cli_unreachable_database() -> None:
    bad = f"postgresql://postgres:{SECRET}@127.0.0.1:1/test?connect_timeout=3"
    result = cli("init", "--dsn", bad, "--schema", "whatever")
    assert result.returncode != 0
    assert SECRET not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected a one-line reason, got: {result.stderr!r}"
    assert "Traceback" not in result.stderr


def test_cli_bad_schema_name(dsn: str) -> None:
    for command in ["init", "drop"]:
        result = cli(command, "--dsn", dsn, "--schema", "Bad-Name;")
        assert result.returncode != 0, command
        assert len(result.stderr.strip().splitlines()) == 1, (command, result.stderr)
        assert "Traceback" not in result.stderr


def test_cli_reset_of_uninitialised_schema_fails_clearly(dsn: str, fresh_schema: str) -> None:
    result = cli("reset", "--dsn", dsn, "--schema", fresh_schema, "--yes")
    # Either a clear one-line error, or a no-op; never a traceback.
    assert "Traceback" not in result.stderr
    if result.returncode != 0:
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_cli_unknown_command() -> None:
    result = cli("no-such-command")
    assert result.returncode != 0


def test_console_script() -> None:
    script = Path(sys.executable).parent / "eventstore-actors"
    if not script.exists():
        pytest.skip("package not installed in this environment (no console script)")
    result = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    for command in ("create", "init", "drop", "reset"):
        assert command in result.stdout


# --- admin safety: only what the store created ------------------------------------------------


def run_sql(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


def rows_of(dsn: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(query).fetchall()  # type: ignore[arg-type]


@pytest.fixture
def app_schema(dsn: str) -> Iterator[str]:
    """An application's schema (never a store) with an `invoices` table holding one row."""
    name = unique("app")
    run_sql(
        dsn,
        f"CREATE SCHEMA {name}",
        f"CREATE TABLE {name}.invoices (id int PRIMARY KEY, total numeric)",
        f"INSERT INTO {name}.invoices VALUES (1, 9.99)",
    )
    yield name
    drop_schema(dsn, name)


@pytest.fixture
def empty_db_dsn(temp_db_dsn: str, dsn: str) -> str:
    """A new, empty database (its `public` schema is ours to fill), dropped afterwards."""
    dbname = psycopg.conninfo.conninfo_to_dict(temp_db_dsn)["dbname"]
    run_sql(dsn, f'CREATE DATABASE "{dbname}"')
    return temp_db_dsn


def test_drop_leaves_a_schema_that_never_held_a_store(dsn: str, app_schema: str) -> None:
    # It used to run DROP SCHEMA ... CASCADE, and the application's invoices were gone.
    assert admin.drop(dsn, app_schema) is False
    assert rows_of(dsn, f"SELECT id, total::text FROM {app_schema}.invoices") == [(1, "9.99")]
    result = cli("drop", "--dsn", dsn, "--schema", app_schema, "--yes")
    assert result.returncode == 0, result.stderr
    assert "nothing to drop" in result.stdout
    assert rows_of(dsn, f"SELECT id FROM {app_schema}.invoices") == [(1,)]


def test_drop_refuses_a_schema_with_foreign_objects_under_store_names(
    dsn: str, app_schema: str
) -> None:
    run_sql(
        dsn,
        f"CREATE TABLE {app_schema}.events (id int)",
        f"CREATE VIEW {app_schema}.streams AS SELECT 1 AS x",
    )
    with pytest.raises(ConfigError) as info:
        admin.drop(dsn, app_schema)
    assert "table events" in str(info.value) and "view streams" in str(info.value)
    assert tables_in(dsn, app_schema) == {"invoices", "events", "streams"}
    result = cli("drop", "--dsn", dsn, "--schema", app_schema, "--yes")
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert tables_in(dsn, app_schema) == {"invoices", "events", "streams"}


def test_drop_removes_only_the_store_and_keeps_a_schema_still_in_use(
    dsn: str, fresh_schema: str
) -> None:
    admin.init(dsn, fresh_schema)
    with start(dsn, fresh_schema) as store:
        store.append_to_stream("s", 0, events(2))
    run_sql(dsn, f"CREATE TABLE {fresh_schema}.invoices (id int)")

    assert admin.drop(dsn, fresh_schema) is True
    assert schema_exists(dsn, fresh_schema)  # something else lives there: the schema stays
    assert tables_in(dsn, fresh_schema) == {"invoices"}
    assert rows_of(
        dsn,
        f"SELECT count(*) FROM pg_proc WHERE pronamespace = '{fresh_schema}'::regnamespace",
    ) == [(0,)]
    assert admin.drop(dsn, fresh_schema) is False  # idempotent
    with pytest.raises(ConfigError):
        start(dsn, fresh_schema)


def test_drop_stops_at_application_objects_that_depend_on_the_store(
    dsn: str, fresh_schema: str
) -> None:
    admin.init(dsn, fresh_schema)
    run_sql(
        dsn,
        f"CREATE VIEW {fresh_schema}.event_report AS SELECT event_id FROM {fresh_schema}.events",
    )
    with pytest.raises(ConfigError) as info:
        admin.drop(dsn, fresh_schema)
    assert "event_report" in str(info.value)
    assert "\n" not in str(info.value)
    with start(dsn, fresh_schema) as store:  # nothing was dropped
        store.append_to_stream("s", 0, events(1))
    result = cli("drop", "--dsn", dsn, "--schema", fresh_schema, "--yes")
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_init_refuses_to_adopt_a_foreign_snapshots_table_in_public(empty_db_dsn: str) -> None:
    run_sql(
        empty_db_dsn,
        "CREATE TABLE public.snapshots (id int PRIMARY KEY, note text)",
        "INSERT INTO public.snapshots VALUES (1, 'the application''s')",
    )
    with pytest.raises(ConfigError) as info:
        admin.init(empty_db_dsn)
    assert "table snapshots" in str(info.value)
    assert tables_in(empty_db_dsn, "public") == {"snapshots"}  # nothing was created
    result = cli("init", "--dsn", empty_db_dsn)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "snapshots" in result.stderr

    # Not a store, so drop refuses too and the application's table survives.
    with pytest.raises(ConfigError):
        admin.drop(empty_db_dsn)
    assert cli("drop", "--dsn", empty_db_dsn, "--yes").returncode != 0
    assert rows_of(empty_db_dsn, "SELECT id, note FROM public.snapshots") == [
        (1, "the application's")
    ]
    with pytest.raises(ConfigError):
        start(empty_db_dsn, "public")


def test_init_refuses_foreign_functions_and_schema_version_tables(
    dsn: str, app_schema: str
) -> None:
    # A Flyway-style schema_version table (text version) is not the store's marker.
    run_sql(
        dsn,
        f"CREATE TABLE {app_schema}.schema_version (version text, description text)",
        f"CREATE FUNCTION {app_schema}.append_events() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    )
    with pytest.raises(ConfigError) as info:
        admin.init(dsn, app_schema)
    assert "table schema_version" in str(info.value)
    assert "function append_events" in str(info.value)
    with pytest.raises(ConfigError) as started:
        start(dsn, app_schema)
    assert "init" in str(started.value)
    assert tables_in(dsn, app_schema) == {"invoices", "schema_version"}


def test_store_object_names_match_a_fresh_install(dsn: str, schema: str) -> None:
    from eventstore_actors.storage import schema as schema_ops

    relations = rows_of(
        dsn, f"SELECT relname FROM pg_class WHERE relnamespace = '{schema}'::regnamespace"
    )
    functions = rows_of(
        dsn, f"SELECT proname FROM pg_proc WHERE pronamespace = '{schema}'::regnamespace"
    )
    assert {r[0] for r in relations} == set(schema_ops.RELATIONS)
    assert {r[0] for r in functions} == set(schema_ops.FUNCTIONS)


@pytest.mark.parametrize("name", ["pg_x", "pg_temp_1", "information_schema"])
def test_reserved_schema_names_are_refused_in_one_line(dsn: str, name: str) -> None:
    with pytest.raises(ConfigError):
        admin.init(dsn, name)
    with pytest.raises(ConfigError):
        admin.drop(dsn, name)
    for command in ("init", "drop", "reset", "create"):
        result = cli(command, "--dsn", dsn, "--schema", name)
        assert result.returncode != 0, command
        assert len(result.stderr.strip().splitlines()) == 1, (command, result.stderr)
        assert "reserved" in result.stderr


@pytest.fixture
def weak_role_dsn(dsn: str) -> Iterator[str]:
    """The DSN of a login role that may not create anything in the test database."""
    role = unique("esa_weak")
    run_sql(dsn, f"CREATE ROLE {role} LOGIN")
    try:
        yield with_params(dsn, user=role)
    finally:
        run_sql(dsn, f"DROP ROLE IF EXISTS {role}")


def test_database_errors_are_one_line_contract_errors(
    dsn: str, weak_role_dsn: str, fresh_schema: str
) -> None:
    with pytest.raises(ConfigError) as info:
        admin.init(weak_role_dsn, fresh_schema)
    assert "permission denied" in str(info.value)
    result = cli("init", "--dsn", weak_role_dsn, "--schema", fresh_schema)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "permission denied" in result.stderr
    assert not schema_exists(dsn, fresh_schema)


def test_cli_usage_errors_are_one_line() -> None:
    for args in (["init", "--no-such-option"], []):
        result = cli(*args)
        assert result.returncode != 0
        assert len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)
