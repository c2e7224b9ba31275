"""Server-side TCP keepalives and user timeout on the store's direct connections.

The client's keepalives notice a vanished server; these (startup options, mirroring the
client's values) let the server notice a vanished client within seconds instead of its
default two hours, and end its backend with whatever it holds (the counter row lock of an
append under way, a subscription's advisory lock). Accepted for any role; on a Unix socket
they are accepted and mean nothing (SHOW says 0). Pooled `dsn` connections (with a
`session_dsn`) send no startup options at all, these included.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql

from eventstore_actors import EventStore
from eventstore_actors.config import Settings
from eventstore_actors.storage.connection import connect

SETTINGS = ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count")
#: With health_timeout 1.5 s: tcp_user_timeout is twice that, in milliseconds.
EXPECTED = {
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "3",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "3000",
}


def _shown(conn: psycopg.Connection[Any]) -> dict[str, str]:
    return {name: str(conn.execute(f"SHOW {name}").fetchone()[0]) for name in EXPECTED}  # type: ignore[index]


@pytest.fixture
def direct(dsn: str, schema: str) -> Iterator[list[EventStore]]:
    """Stores started on the server itself (never through PgBouncer); stopped at teardown."""
    stores: list[EventStore] = []
    yield stores
    for store in reversed(stores):
        store.stop()


def test_the_stores_connections_carry_server_side_keepalives(
    direct: list[EventStore], dsn: str, schema: str
) -> None:
    store = EventStore.start(dsn, schema=schema, health_timeout=1.5)
    direct.append(store)
    assert store._runtime.pool.run(_shown) == EXPECTED  # the read pool
    leader = store._runtime.leader
    with leader.lock:  # the writer's own connection, while nobody appends
        writer = leader.writer
        assert writer is not None and writer._conn is not None
        assert _shown(writer._conn) == EXPECTED
    with connect(store.settings, session=True) as session:  # listener, lock sessions
        assert _shown(session) == EXPECTED


def test_values_the_dsn_gives_win(dsn: str, schema: str) -> None:
    given = psycopg.conninfo.make_conninfo(
        dsn, keepalives_idle="60", tcp_user_timeout="7000", options="-c tcp_keepalives_count=5"
    )
    with connect(Settings(dsn=given, schema=schema)) as conn:
        shown = _shown(conn)
    assert shown["tcp_keepalives_idle"] == "60"  # the client's own value, mirrored
    assert shown["tcp_user_timeout"] == "7000"
    assert shown["tcp_keepalives_count"] == "5"  # the DSN's own option


def test_a_role_without_privileges_may_set_them(dsn: str, schema: str) -> None:
    role = f"es_ka_{uuid.uuid4().hex[:8]}"
    with _role(dsn, schema, role):
        given = psycopg.conninfo.make_conninfo(dsn, user=role)
        with connect(Settings(dsn=given, schema=schema, health_timeout=1.5)) as conn:
            assert _shown(conn) == EXPECTED


def test_on_a_unix_socket_they_are_harmless(dsn: str, schema: str) -> None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SHOW unix_socket_directories").fetchone()
        port = conn.info.port
    directories = [d.strip() for d in str(row[0] if row else "").split(",") if d.strip()]
    local = [d for d in directories if os.path.exists(os.path.join(d, f".s.PGSQL.{port}"))]
    if not local:
        pytest.skip("the test server has no Unix socket on this machine")
    on_socket = psycopg.conninfo.make_conninfo(dsn, host=local[0])
    settings = Settings(dsn=on_socket, schema=schema)
    assert all(f"-c {name}=" in settings.connect_kwargs()["options"] for name in EXPECTED)
    with connect(settings) as conn:
        assert conn.info.host == local[0]
        assert set(_shown(conn).values()) == {"0"}  # accepted, meaningless on a socket
        assert conn.execute("SELECT 1").fetchone() == (1,)


@contextmanager
def _role(dsn: str, schema: str, role: str) -> Iterator[None]:
    """A LOGIN role of this test's own, no superuser, with rights on the test schema."""
    ident = sql.Identifier(role)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER").format(ident))
        conn.execute(
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), ident)
        )
    try:
        yield
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
            conn.execute(sql.SQL("DROP ROLE {}").format(ident))
