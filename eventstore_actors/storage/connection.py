"""Connections, the read pool, and the one place database errors become contract errors."""

from __future__ import annotations

import select
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
import psycopg_pool
import structlog

from ..config import Settings, redact
from ..errors import ConfigError, StoreUnavailableError

__all__ = [
    "ReadPool",
    "connect",
    "is_alive",
    "is_connection_loss",
    "reason",
    "unavailable",
]

log = structlog.get_logger("eventstore_actors.storage")
T = TypeVar("T")


def connect(settings: Settings) -> psycopg.Connection[tuple[object, ...]]:
    """A new dedicated connection (writer, listener, subscription locks) on the store's schema."""
    try:
        return psycopg.Connection.connect(settings.dsn, **settings.connect_kwargs())
    except psycopg.OperationalError as exc:
        raise StoreUnavailableError(
            f"cannot connect to {redact(settings.dsn)}: {reason(exc)}"
        ) from None


def is_alive(conn: psycopg.Connection[Any]) -> bool:
    """Whether an idle connection is still usable, without a round trip in the usual case.

    A terminated backend leaves its farewell error and EOF on the socket; an idle healthy
    connection has nothing to read. Only a readable socket is probed with a query.
    """
    if conn.closed or conn.broken:
        return False
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    if not readable:
        return True
    try:
        conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


#: SQLSTATEs that end the session: the server is shutting down, crashing or restarting.
_SESSION_ENDED = {"57P01", "57P02", "57P03", "57P04", "57P05"}


def is_connection_loss(exc: BaseException, conn: psycopg.Connection[Any] | None = None) -> bool:
    """Whether `exc` means the connection (not just the statement) is gone.

    `psycopg.OperationalError` is not enough: statement timeouts and cancellations (57014),
    serialization failures and deadlocks (class 40), lock timeouts (55P03), out of resources
    (53) and limits (54) are OperationalErrors on a connection that is still fine. Decided by
    the connection's own state first, then by SQLSTATE: class 08 and the shutdown codes of
    class 57 end the session; an error with no SQLSTATE came from the client side (EOF,
    socket error) and means the connection is unusable.
    """
    if conn is not None and (conn.closed or conn.broken):
        return True
    if not isinstance(exc, psycopg.Error):
        return False
    sqlstate = exc.sqlstate
    if sqlstate is None:
        return isinstance(exc, psycopg.OperationalError)
    return sqlstate.startswith("08") or sqlstate in _SESSION_ENDED


def reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def unavailable(exc: BaseException, *, outcome_unknown: bool = False) -> StoreUnavailableError:
    """The contract's error for a lost or unreachable database."""
    return StoreUnavailableError(
        f"database unavailable: {reason(exc)}", outcome_unknown=outcome_unknown
    )


class ReadPool:
    """A psycopg-pool pool for reads and small writes that recovers at once from lost
    connections (killed backends, a server restart): see `run`."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pool = psycopg_pool.ConnectionPool(
            settings.dsn,
            min_size=settings.pool_size,
            max_size=settings.pool_size + settings.pool_overflow,
            kwargs=settings.connect_kwargs(),
            open=False,
            name=f"eventstore-actors-{settings.schema}",
            timeout=settings.call_timeout,
            reconnect_timeout=60.0,
        )

    def open(self) -> None:
        """Open the pool and wait until it is full: fails fast with ConfigError (a silent
        server: about connect_timeout, not a fixed 10 s)."""
        try:
            self._pool.open(wait=True, timeout=self._settings.connect_timeout + 2.0)
        except psycopg_pool.PoolTimeout:
            self._pool.close()
            raise ConfigError(
                f"cannot connect to the database {redact(self._settings.dsn)}"
            ) from None

    def close(self) -> None:
        self._pool.close(timeout=5.0)

    def run(self, work: Callable[[psycopg.Connection[tuple[object, ...]]], T]) -> T:
        """Run `work` on a pooled connection; retry once on a connection lost under it.

        psycopg-pool's own `check` callback walks dead connections one by one with back-off
        (seconds after a server restart); instead the first dead connection seen triggers
        ``pool.check()``, which drops every dead idle connection at once, and one retry.
        """
        for attempt in (1, 2):
            try:
                with self._pool.connection() as conn:
                    if not is_alive(conn):
                        raise _StaleConnection()
                    return work(conn)
            except psycopg_pool.PoolClosed:
                raise StoreUnavailableError("the event store is stopped") from None
            except _StaleConnection:
                self._recover(attempt, None)
            except psycopg.OperationalError as exc:
                if not is_connection_loss(exc):
                    raise unavailable(exc) from None
                self._recover(attempt, exc)
            except psycopg_pool.PoolTimeout as exc:
                raise unavailable(exc) from None
        raise AssertionError("unreachable")

    def _recover(self, attempt: int, exc: psycopg.OperationalError | None) -> None:
        if attempt == 2:
            raise unavailable(exc or psycopg.OperationalError("connection lost")) from None
        log.warning("pooled connection lost, checking pool", schema=self._settings.schema)
        self._pool.check()


class _StaleConnection(Exception):
    """A pooled connection found dead before use."""
