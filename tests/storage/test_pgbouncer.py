"""The store behind PgBouncer in transaction pooling mode (API part 2, "Scale-out").

`dsn` points at a PgBouncer these tests start (tests/support/pgbouncer.py) with a pool of
two server connections, so every client's transactions really share server connections with
the others; `session_dsn` points at the server (LISTEN, advisory locks). Each server
connection starts with search_path on an absent schema: any statement relying on a
search_path of its own fails. Skipped, with the package named, when PgBouncer is missing.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from support import QueueSubscriber, events, wait_until
from support.pgbouncer import NOWHERE, PgBouncer, missing

from eventstore_actors import (
    ConfigError,
    EventStore,
    SnapshotData,
    StreamAppend,
    SubscriptionAlreadyExistsError,
    WrongExpectedVersionError,
)
from eventstore_actors.config import Settings
from eventstore_actors.sql import statement
from eventstore_actors.storage.connection import connect
from eventstore_actors.storage.pooler import qualify
from eventstore_actors.storage.reader import partition_of
from eventstore_actors.storage.sessions import Session, backend_pid

POOL = 2


@pytest.fixture(scope="module")
def bouncer(dsn: str) -> Iterator[PgBouncer]:
    reason = missing()
    if reason is not None:
        pytest.skip(reason)
    with PgBouncer(dsn, pool_size=POOL) as running:
        yield running


@pytest.fixture
def pooled(bouncer: PgBouncer, dsn: str) -> str:
    """The test database through PgBouncer."""
    return bouncer.dsn(dsn)


@pytest.fixture
def start(pooled: str, dsn: str, schema: str) -> Iterator[Callable[..., EventStore]]:
    started: list[EventStore] = []

    def make(**options: Any) -> EventStore:
        options.setdefault("session_dsn", dsn)
        options.setdefault("pool_size", 3)
        store = EventStore.start(pooled, schema=schema, **options)
        started.append(store)
        return store

    try:
        yield make
    finally:
        for store in reversed(started):
            store.stop()


def servers(bouncer: PgBouncer, dsn: str) -> int:
    """PgBouncer's server connections to the tests' database (`test`, or the embedded
    server's `eventstore`)."""
    dbname = psycopg.conninfo.conninfo_to_dict(dsn).get("dbname")
    return sum(1 for row in bouncer.admin("SHOW SERVERS") if row["database"] == dbname)


def pool_probe(pooled: str) -> tuple[str, str, str, int]:
    """What a client that set nothing sees on one of the shared server connections."""
    with (
        psycopg.connect(pooled, autocommit=True, prepare_threshold=None) as conn,
        conn.transaction(),  # one server connection for all four
    ):
        search_path = str(conn.execute("SHOW search_path").fetchone()[0])  # type: ignore[index]
        isolation = str(conn.execute("SHOW transaction_isolation").fetchone()[0])  # type: ignore[index]
        zone = str(conn.execute("SHOW TimeZone").fetchone()[0])  # type: ignore[index]
        prepared = int(
            conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0]  # type: ignore[index]
        )
    return search_path, isolation, zone, prepared


# The statements -----------------------------------------------------------------------------
def test_qualify_names_the_schema_of_tables_and_functions_only() -> None:
    query = (
        "SELECT e.events, %(events)s, 'events', events.x, \"events\" FROM events "
        "JOIN streams AS s ON true, append_events_v2(1) -- streams\n"
        "WHERE stream_events = 1 AND x IN (SELECT 1 FROM s.events)"
    )
    assert qualify("t_x", query) == (
        'SELECT e.events, %(events)s, \'events\', events.x, "events" FROM "t_x".events '
        'JOIN "t_x".streams AS s ON true, "t_x".append_events_v2(1) -- streams\n'
        "WHERE stream_events = 1 AND x IN (SELECT 1 FROM s.events)"
    )


# Start-up checks ----------------------------------------------------------------------------
def test_session_dsn_is_redacted_and_checked(dsn: str, pooled: str, schema: str) -> None:
    secret = "s3cr3t-pw"
    settings = Settings(dsn=pooled, schema=schema, session_dsn=f"{dsn}?password={secret}")
    assert secret not in repr(settings)
    assert "session_dsn=" in repr(settings)
    with pytest.raises(ConfigError, match="session_dsn must be a string"):
        EventStore.start(pooled, schema=schema, session_dsn=42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as refused:  # nobody listens there
        EventStore.start(
            pooled,
            schema=schema,
            session_dsn=f"postgresql://postgres:{secret}@127.0.0.1:1/test",
            connect_timeout=1,
        )
    assert "session_dsn" in str(refused.value) and secret not in str(refused.value)


def test_session_dsn_password_is_never_logged(
    start: Callable[..., EventStore], dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="eventstore_actors")
    secret = "s3cr3t-pw"  # trust authentication: accepted and ignored
    store = start(session_dsn=psycopg.conninfo.make_conninfo(dsn, password=secret))
    store.subscribe_to_all_streams("sub", QueueSubscriber())
    store.append_to_stream("s", 0, events(1))
    store.stop()
    shown = "\n".join(f"{r.getMessage()} {getattr(r, 'eventstore', '')!r}" for r in caplog.records)
    assert "session_dsn" in shown  # the start-up line names it ...
    assert secret not in shown + repr(store.settings)  # ... without its password


def test_session_dsn_of_another_database_is_refused(dsn: str, pooled: str, schema: str) -> None:
    other = psycopg.conninfo.make_conninfo(dsn, dbname="postgres")
    with pytest.raises(ConfigError, match="same database"):
        EventStore.start(pooled, schema=schema, session_dsn=other)


def test_a_default_isolation_other_than_read_committed_is_refused(
    dsn: str, pooled: str, schema: str
) -> None:
    """Statements outside a transaction cannot choose their isolation through PgBouncer."""
    role = f"es_pgb_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"ALTER ROLE {role} SET default_transaction_isolation = 'serializable'")
        conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}")
    try:
        session = psycopg.conninfo.make_conninfo(dsn, user=role)
        with pytest.raises(ConfigError, match="default_transaction_isolation"):
            EventStore.start(pooled, schema=schema, username=role, session_dsn=session)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"ALTER ROLE {role} NOLOGIN")
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def test_pooled_connections_keep_no_session_state_and_tell_no_backend_pid(
    dsn: str, pooled: str, schema: str
) -> None:
    settings = Settings(dsn=pooled, schema=schema, session_dsn=dsn)
    with connect(settings) as conn:
        assert conn.prepare_threshold is None
        assert backend_pid(conn) is None  # PgBouncer's invention: never to be terminated
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (0,)
    with connect(settings, session=True) as conn:  # direct: the real pid
        assert backend_pid(conn) == conn.info.backend_pid
        assert conn.execute("SHOW search_path").fetchone() == (f"{schema},pg_temp",)


# The core paths through PgBouncer -----------------------------------------------------------
def test_every_write_and_read_path(
    start: Callable[..., EventStore], bouncer: PgBouncer, dsn: str
) -> None:
    store = start()
    assert store.append_to_stream("a", 0, events(3)).last_version == 3
    store.append_to_streams(
        [StreamAppend("b", 0, events(2)), StreamAppend("a", 3, events(1, start=4))]
    )
    with pytest.raises(WrongExpectedVersionError):
        store.append_to_stream("a", 1, events(1))
    # many concurrent appenders: group commit over shared server connections
    threads = [
        threading.Thread(target=store.append_to_stream, args=(f"c-{i}", 0, events(5)))
        for i in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.link_to_stream("linked", 0, [1, 2])
    store.delete_stream("b", 2)
    assert [e.data["n"] for e in store.read_stream_forward("a")] == [1, 2, 3, 4]
    assert [e.stream_version for e in store.read_stream_backward("a")] == [4, 3, 2, 1]
    assert [e.event_id for e in store.read_stream_forward("linked")] == [1, 2]
    all_events = store.read_all_streams_forward(count=1000)
    assert [e.event_id for e in all_events] == list(range(1, 47))
    assert all(e.created_at.utcoffset() == timedelta(0) for e in all_events)
    assert [e.event_id for e in store.stream_all_backward()][:2] == [46, 45]
    assert store.stream_info("a").stream_version == 4
    store.record_snapshot(SnapshotData("agg", 4, "T", {"n": 4}))
    assert store.read_snapshot("agg").data == {"n": 4}
    store.delete_snapshot("agg")
    # the store's many clients shared two server connections
    assert 0 < servers(bouncer, dsn) <= POOL
    assert "prepared statement" not in bouncer.log_text()


def test_subscriptions_acks_restarts_and_standby(start: Callable[..., EventStore]) -> None:
    first, second = start(), start()
    q = QueueSubscriber()
    sub = first.subscribe_to_all_streams("proj", q)
    q.subscribed()
    first.append_to_stream("s", 0, events(3))
    batch = q.batch()
    assert [e.event_id for e in batch] == [1, 2, 3]
    sub.ack(batch)
    with pytest.raises(SubscriptionAlreadyExistsError):  # the advisory lock holds
        second.subscribe_to_all_streams("proj", QueueSubscriber())
    standby = QueueSubscriber()
    second.subscribe_to_all_streams("proj", standby, standby=True)
    wait_until(lambda: first.subscription_info("proj").checkpoint == 3)
    # another store's commit: its NOTIFY went through PgBouncer, first's LISTEN is direct
    second.append_to_stream("s", 3, events(2, start=4))
    notified = q.batch()
    assert [e.event_id for e in notified] == [4, 5]
    sub.ack(notified)
    first.stop()  # the standby takes over after the checkpoint
    second.append_to_stream("s", 5, events(1, start=6))
    standby.subscribed()
    taken = standby.batch()
    assert [e.event_id for e in taken][-1] == 6 and taken[0].event_id in (4, 6)
    # a restart on another store resumes after the checkpoint
    third = start()
    third.append_to_stream("t", 0, events(1))
    q3 = QueueSubscriber()
    s3 = third.subscribe_to_stream("t", "one", q3)
    q3.subscribed()
    s3.ack(q3.batch())
    third.unsubscribe_from_stream("t", "one")
    third.append_to_stream("t", 1, events(1, start=2))
    q4 = QueueSubscriber()
    third.subscribe_to_stream("t", "one", q4)
    q4.subscribed()
    assert [e.stream_version for e in q4.batch()] == [2]


def test_outbox_append_on_a_callers_pooled_connection(
    start: Callable[..., EventStore], pooled: str
) -> None:
    store = start()
    q = QueueSubscriber()
    handle = store.subscribe_to_all_streams("outbox", q)
    q.subscribed()
    with psycopg.connect(pooled, prepare_threshold=None) as conn:
        store.append_to_stream("o", 0, events(2), conn=conn)
        assert store.read_all_streams_forward() == []
        conn.commit()  # the NOTIFY goes out at the commit, through PgBouncer
    assert [e.event_id for e in q.collect(handle, 2)] == [1, 2]


def test_eventsourcing_recorder(dsn: str, pooled: str, schema: str) -> None:
    pytest.importorskip("eventsourcing")
    from eventsourcing.persistence import StoredEvent, Tracking
    from eventsourcing.utils import Environment

    from eventstore_actors import eventsourcing as module

    env = {"EVENTSTORE_DSN": pooled, "EVENTSTORE_SESSION_DSN": dsn, "EVENTSTORE_SCHEMA": schema}
    factory = module.Factory(Environment(env=env))
    try:
        recorder = factory.process_recorder()
        a = uuid.uuid4()
        for n in range(1, 7):  # more than psycopg's prepare threshold (5)
            recorder.insert_events([StoredEvent(a, n, "t", b"x")], tracking=Tracking("up", n))
        assert [e.originator_version for e in recorder.select_events(a)] == list(range(1, 7))
        assert recorder.max_tracking_id("up") == 6
        assert recorder.max_notification_id() == 6
        assert len(recorder.select_notifications(1, 10)) == 6
    finally:
        factory.close()


def test_nothing_of_ours_leaks_into_other_clients(
    start: Callable[..., EventStore], pooled: str, bouncer: PgBouncer, schema: str
) -> None:
    store = start(pool_size=1)
    for n in range(20):  # more than psycopg's prepare threshold (5), on every connection
        store.append_to_stream("x", n, events(1, start=n))
        store.read_stream_forward("x")
        store.stream_info("x")
    with psycopg.connect(pooled, autocommit=True) as direct_view:
        direct_view.execute("SELECT 1")
    seen = {pool_probe(pooled) for _ in range(2 * POOL)}
    for search_path, isolation, _zone, prepared in seen:
        assert search_path == NOWHERE  # never ours (the schema)
        assert isolation == "read committed"
        assert prepared == 0
    log = bouncer.log_text()
    assert "does not exist" not in log and "prepared statement" not in log
    assert schema not in {s for s, *_ in seen}


def test_direct_path_is_unchanged(dsn: str, schema: str) -> None:
    """Without session_dsn, dsn connections keep their startup options and nothing extra."""
    settings = Settings(dsn=dsn, schema=schema)
    with connect(settings) as conn:
        assert conn.execute("SHOW search_path").fetchone() == (f"{schema},pg_temp",)
        assert type(conn.cursor()) is psycopg.Cursor
        assert conn.prepare_threshold == 5


# Consumer groups: member slots on the session connection (issue 17, item 1) -----------------
def _advisory_locks_on_pooler_servers(bouncer: PgBouncer, dsn: str) -> int:
    """Advisory locks held by a backend serving one of PgBouncer's server connections."""
    ports = [int(r["local_port"]) for r in bouncer.admin("SHOW SERVERS") if r.get("local_port")]
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks AS l JOIN pg_stat_activity AS a USING (pid)"
            " WHERE l.locktype = 'advisory' AND a.client_port = ANY(%s)",
            (ports,),
        ).fetchone()
    return int(row[0])  # type: ignore[index]


def test_consumer_group_members_hold_their_slots_on_the_session_connection(
    start: Callable[..., EventStore], bouncer: PgBouncer, dsn: str
) -> None:
    """A member slot taken on `dsn` landed on a server connection PgBouncer shares: it
    outlived its member (a ghost that partitions were assigned to, never consumed), or two
    members shared one slot. Every partition must be consumed, before and after a leave."""
    n = 4
    streams = {partition_of(f"s{i}", n): f"s{i}" for i in range(50)}
    assert sorted(streams) == list(range(n))
    first, second = start(), start()
    a, b = QueueSubscriber(), QueueSubscriber()
    first.subscribe_to_all_streams("g", a, partitions=n)
    a.subscribed()
    second.subscribe_to_all_streams("g", b, partitions=n)

    def held() -> Counter[str]:
        return Counter(r.holder for r in first.subscriptions() if r.active)

    wait_until(lambda: sorted(held().values()) == [2, 2], 10.0, 0.1, "a 2/2 share")
    b.subscribed()
    second.unsubscribe_from_all_streams("g")  # its slot must go with it
    wait_until(lambda: list(held().values()) == [n], 10.0, 0.1, "the first holds all")
    for version, stream in enumerate(streams.values()):
        first.append_to_stream(stream, 0, events(1, start=version + 1))
    got: set[str] = set()
    deadline = time.monotonic() + 10.0
    while got != set(streams.values()) and time.monotonic() < deadline:
        got |= {e.stream_uuid for e in a.batch()}
    assert got == set(streams.values()), "a partition was assigned to a member that is gone"
    assert _advisory_locks_on_pooler_servers(bouncer, dsn) == 0


def test_session_state_is_refused_on_pooled_connections(dsn: str, pooled: str, schema: str) -> None:
    """The one place: a `dsn` connection of a store with a session_dsn refuses what needs a
    session (a session-level advisory lock, LISTEN) before sending it; a `Session` is on
    `session_dsn`."""
    settings = Settings(dsn=pooled, schema=schema, session_dsn=dsn)
    with connect(settings) as conn:
        for query in (
            statement("subscriptions/lock"),
            statement("subscriptions/unlock"),
            "SELECT pg_advisory_lock(1)",
            "-- a comment\nLISTEN x",
        ):
            with pytest.raises(RuntimeError, match="Session"):
                conn.execute(query, {"key": "k"})
        conn.execute("SELECT pg_advisory_xact_lock(1), 'pg_advisory_lock(1)'")  # both fine
    session = Session(settings)
    try:
        conn = session.get()
        assert session.pid == backend_pid(conn) == conn.info.backend_pid  # direct
        assert conn.execute(statement("subscriptions/lock"), {"key": "k"}).fetchone() == (True,)
    finally:
        session.close()


def test_status_through_pgbouncer(
    start: Callable[..., EventStore], pooled: str, schema: str
) -> None:
    """`eventstore-actors status --dsn <the pooler>`: the operator's usual DSN."""
    from eventstore_actors import status

    store = start()
    store.append_to_stream("s", 0, events(3))
    sub = QueueSubscriber()
    handle = store.subscribe_to_all_streams("proj", sub)
    sub.collect(handle, 3)
    store.set_stream_retention("s", max_count=2)

    def shown() -> dict[str, Any]:
        report: dict[str, Any] = json.loads(status.status(pooled, schema, as_json=True))
        return report

    report = wait_until(
        lambda: (r := shown())["subscriptions"] and r["subscriptions"][0]["checkpoint"] == 3 and r,
        what="the checkpoint in the report",
    )
    assert (report["head"], report["streams"]) == (3, 1)
    assert [s["subscription_name"] for s in report["subscriptions"]] == ["proj"]
    assert report["retention"]["streams"] == 1
    text, healthy = status.report(pooled, schema)
    assert healthy and "head event_id 3" in text and "proj" in text
    # What the connection left behind on the pooler's shared server connections: nothing.
    assert {pool_probe(pooled)[0] for _ in range(2 * POOL)} == {NOWHERE}
