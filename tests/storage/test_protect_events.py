"""The database itself protects history (ported from commanded/eventstore
test/storage/protect_against_update_and_delete_test.exs): events and links are never updated
or deleted, and a stream that holds events is never deleted, except inside a hard delete's
own transaction (SET LOCAL eventstore_actors.hard_delete = 'on'). TRUNCATE (admin.reset)
stays allowed.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
from support.factory import make_events, new_stream
from support.storage_sql import sql

from eventstore_actors import ANY_VERSION, EventStore, admin


@pytest.fixture
def linked(store: EventStore) -> str:
    stream = new_stream()
    store.append_to_stream(stream, 0, make_events(3))
    store.link_to_stream(new_stream(), 0, [1, 2])
    return stream


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM events",
        "DELETE FROM events WHERE event_id = 1",
        "UPDATE events SET created_at = now()",
        "UPDATE events SET data = 'x'::bytea WHERE event_id = 1",
        "DELETE FROM links",
        "UPDATE links SET event_id = 3",
        "DELETE FROM streams",
    ],
)
def test_history_cannot_be_changed(
    store: EventStore, linked: str, dsn: str, schema: str, statement: str
) -> None:
    with sql(dsn, schema) as conn:
        with pytest.raises(psycopg.errors.RestrictViolation, match=r"not allowed|allowed only"):
            conn.execute(statement)
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM links),"
            " (SELECT count(*) FROM streams)"
        ).fetchone()
    assert counts == (3, 2, 2)


def test_the_setting_only_counts_inside_a_transaction_that_set_it(
    store: EventStore, linked: str, dsn: str, schema: str
) -> None:
    with sql(dsn, schema) as conn:
        with conn.transaction(force_rollback=True):
            conn.execute("SET LOCAL eventstore_actors.hard_delete = 'on'")
            for table in ("links", "events", "streams"):
                assert conn.execute(f"DELETE FROM {table}").rowcount > 0
        # Rolled back, and the next transaction is protected again.
        with pytest.raises(psycopg.errors.RestrictViolation):
            conn.execute("DELETE FROM events")
        with pytest.raises(psycopg.errors.RestrictViolation):
            conn.execute("UPDATE events SET created_at = now()")  # never, even in a hard delete
    assert len(store.read_stream_forward(linked)) == 3


def test_updates_stay_refused_inside_a_hard_delete(
    store: EventStore, linked: str, dsn: str, schema: str
) -> None:
    with sql(dsn, schema) as conn, conn.transaction(force_rollback=True):
        conn.execute("SET LOCAL eventstore_actors.hard_delete = 'on'")
        with pytest.raises(psycopg.errors.RestrictViolation):
            conn.execute("UPDATE events SET created_at = now()")


def test_streams_without_events_and_stream_updates_are_allowed(
    store: EventStore, linked: str, dsn: str, schema: str
) -> None:
    """What the store itself does: version and deletion marks move; a stream row created
    for an append that then failed (version 0) is dropped."""
    with sql(dsn, schema) as conn, conn.transaction(force_rollback=True):
        conn.execute("UPDATE streams SET deleted_at = now()")
        conn.execute("INSERT INTO streams (stream_uuid) VALUES ('empty')")
        assert conn.execute("DELETE FROM streams WHERE stream_version = 0").rowcount == 1


def test_the_store_still_deletes_softly_and_hard_and_resets(
    make_store: Callable[..., EventStore], dsn: str, schema: str
) -> None:
    store = make_store(enable_hard_deletes=True)
    stream = new_stream()
    store.append_to_stream(stream, 0, make_events(2))
    store.delete_stream(stream, ANY_VERSION)
    store.delete_stream(stream, ANY_VERSION, hard=True)
    store.append_to_stream(stream, 0, make_events(1))
    store.stop()
    admin.reset(dsn, schema)
    with sql(dsn, schema) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (0,)
