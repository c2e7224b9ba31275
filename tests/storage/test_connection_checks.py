"""`has_input` and `is_alive`: the socket look every idle-connection check starts with (the
pool, the writer, the publisher, the lock sessions and the shared lock hub), on real
connections: a healthy idle one has nothing to read, a terminated backend leaves input (and
is not alive), a closed one counts as input, and a NOTIFY is input on a live connection."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from support import wait_until

from eventstore_actors.storage.connection import has_input, is_alive


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.Connection.connect(dsn, autocommit=True) as conn:
        yield conn


def test_a_healthy_idle_connection_has_no_input_and_is_alive(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute("SELECT 1")
    assert not has_input(conn)
    assert is_alive(conn)


def test_a_terminated_backend_leaves_input_and_is_not_alive(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    pid = conn.info.backend_pid
    with psycopg.Connection.connect(dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    wait_until(lambda: has_input(conn), what="the farewell on the terminated socket")
    assert not is_alive(conn)


def test_a_closed_connection_counts_as_input(dsn: str) -> None:
    conn = psycopg.Connection.connect(dsn, autocommit=True)
    conn.close()
    assert has_input(conn)  # no socket: psycopg raises on fileno(), not select()
    assert not is_alive(conn)


def test_a_notification_is_input_but_the_connection_is_alive(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute("LISTEN house_has_input")
    with psycopg.Connection.connect(dsn, autocommit=True) as other:
        other.execute("NOTIFY house_has_input")
    wait_until(lambda: has_input(conn), what="the notification on the socket")
    assert is_alive(conn)
