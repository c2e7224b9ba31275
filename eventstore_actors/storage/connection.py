"""Opening and checking connections: `connect` (on `dsn` or, for session state, on
`session_dsn`), the check of `session_dsn` against `dsn` at start, and whether an idle
connection is still usable (`has_input`, `is_alive`, `reset_to_idle`)."""

from __future__ import annotations

import dataclasses
import select
from typing import Any

import psycopg

from ..config import Settings, redact, scrub
from ..errors import ConfigError, StoreUnavailableError
from .errors import is_gone, reason
from .pooler import configure_pooled, pooled_kwargs

__all__ = [
    "FINGERPRINT",
    "check_session_dsn",
    "connect",
    "connect_for_command",
    "has_input",
    "is_alive",
    "ping",
    "reset_to_idle",
]


def connect(settings: Settings, *, session: bool = False) -> psycopg.Connection[tuple[object, ...]]:
    """A new dedicated connection on the store's schema: on `dsn`, or with `session` (LISTEN,
    advisory locks) on `session_dsn` when one is given. A `dsn` connection of a store with a
    `session_dsn` keeps no session state (see `pooled_kwargs`): it refuses a session-level
    advisory lock or LISTEN. Holders of advisory locks use a `Session`."""
    if session or not settings.pooled:
        dsn = settings.session_dsn if session and settings.session_dsn else settings.dsn
        kwargs = settings.connect_kwargs()
    else:
        dsn, kwargs = settings.dsn, pooled_kwargs(settings)
    try:
        conn = psycopg.Connection.connect(dsn, **kwargs)
    except psycopg.Error as exc:
        raise StoreUnavailableError(f"cannot connect to {redact(dsn)}: {reason(exc)}") from None
    if not session and settings.pooled:
        try:
            configure_pooled(conn)
        except psycopg.Error as exc:
            conn.close()
            raise StoreUnavailableError(f"cannot set up {redact(dsn)}: {reason(exc)}") from None
    return conn


def connect_for_command(settings: Settings) -> psycopg.Connection[tuple[object, ...]]:
    """A connection for a one-off read-only command (`status`): on `dsn` as the store's own,
    or, when `dsn` is a transaction pooler that refuses the `options` startup parameter
    (PgBouncer), as a pooled one (schema-qualified statements, no session state)."""
    try:
        return connect(settings)
    except StoreUnavailableError as exc:
        if settings.pooled or _REFUSED_OPTIONS not in str(exc):
            raise
    return connect(dataclasses.replace(settings, session_dsn=settings.dsn))


#: What PgBouncer answers a client that sends the `options` startup parameter.
_REFUSED_OPTIONS = "unsupported startup parameter: options"


#: What tells databases apart: the cluster's system identifier and the database's name.
FINGERPRINT = "SELECT system_identifier, current_database() FROM pg_control_system()"


def check_session_dsn(settings: Settings, conn: psycopg.Connection[Any]) -> None:
    """At start, with a `session_dsn` (ConfigError otherwise): it must reach the database
    `conn` (on `dsn`) reaches, since a lock taken in another database excludes nobody; and
    that database's default isolation must be READ COMMITTED, since statements outside an
    explicit transaction cannot choose theirs through a transaction pooler."""
    try:
        session = connect(settings, session=True)
    except StoreUnavailableError as exc:
        raise ConfigError(f"session_dsn: {scrub(str(exc), settings.session_dsn)}") from None
    try:
        with session:
            there = session.execute(FINGERPRINT).fetchone()
        here = conn.execute(FINGERPRINT).fetchone()
        isolation = conn.execute("SHOW default_transaction_isolation").fetchone()
    except psycopg.Error as exc:
        raise ConfigError(
            f"cannot check session_dsn against dsn: {scrub(reason(exc), settings.dsn)}"
        ) from None
    if here != there:
        raise ConfigError(
            f"session_dsn ({redact(settings.session_dsn or '')}) does not reach the database "
            f"dsn ({redact(settings.dsn)}) reaches: both must lead to the same database"
        )
    if isolation is None or isolation[0] != "read committed":
        raise ConfigError(
            "with session_dsn, the database's default_transaction_isolation must be "
            f"'read committed' (it is {isolation[0] if isolation else None!r} on dsn): "
            "statements outside a transaction cannot set it through a transaction pooler"
        )


def has_input(conn: psycopg.Connection[Any]) -> bool:
    """Whether an idle connection's socket has something to read (or has no socket left),
    without reading it and without a round trip.

    An idle healthy connection has nothing to read; a terminated backend leaves its farewell
    error and EOF on the socket. True says only "look closer" (a NOTIFY or notice reads too).
    """
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (psycopg.Error, OSError, ValueError):
        return True
    return bool(readable)


def ping(conn: psycopg.Connection[Any]) -> None:
    """One round trip that does nothing (psycopg.Error if the connection cannot make it)."""
    conn.execute("SELECT 1")


def is_alive(conn: psycopg.Connection[Any]) -> bool:
    """Whether an idle connection is still usable, without a round trip in the usual case:
    only a socket with input waiting (`has_input`) is probed with a query."""
    if is_gone(conn):
        return False
    if not has_input(conn):
        return True
    try:
        ping(conn)
    except psycopg.Error:
        return False
    return True


def reset_to_idle(conn: psycopg.Connection[Any]) -> bool:
    """Whether `conn` is open and outside any transaction, rolling back one left open.

    A failed statement in an explicit transaction leaves the connection INERROR: every later
    statement fails until ROLLBACK. A healthy socket is not enough to call it usable.
    """
    if is_gone(conn):
        return False
    status = conn.info.transaction_status
    if status == psycopg.pq.TransactionStatus.IDLE:
        return True
    if status not in (psycopg.pq.TransactionStatus.INTRANS, psycopg.pq.TransactionStatus.INERROR):
        return False  # ACTIVE (a result still pending) or UNKNOWN (bad connection)
    try:
        conn.execute("ROLLBACK")
    except psycopg.Error:
        return False
    return conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
