"""The read pool: a psycopg-pool pool for reads and small writes, under deadlines, that
recovers at once from lost connections."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
import psycopg.conninfo
import psycopg_pool

from .. import logs
from ..config import Settings, redact
from ..errors import ConfigError, StoreUnavailableError
from ..metrics import Metrics
from .connection import is_alive
from .deadline import guard
from .errors import database_error, is_connection_loss, reason, unavailable
from .pooler import configure_pooled, pooled_kwargs
from .sessions import Orphan, backend_pid

__all__ = ["ReadPool"]

log = logs.get_logger("eventstore_actors.storage")  # warnings rate-limited
T = TypeVar("T")


#: psycopg-pool's default number of connecting workers.
_POOL_WORKERS = 3
#: Connections the pool keeps open when idle; it grows on demand up to `pool_size` +
#: `pool_overflow` and closes what stayed unused for `_MAX_IDLE` seconds, so an idle or live
#: store (the live path reads nothing) holds a handful of connections, not `pool_size`.
_MIN_HELD = 2
_MAX_IDLE = 60.0


#: The read pool's statements are planned once per connection, not at every execution:
#: psycopg prepares a statement on its fifth use, and PostgreSQL then chose a custom plan for
#: each execution of the store's reads (their generic plans' estimates look dearer), planning
#: the all-streams and stream reads anew every time: a backward read of the last 10 events of
#: 100,000 took 540 µs with custom plans, 230 µs with the generic one (docs/benchmarks.md). The
#: reads are index range scans in key order whatever their parameters, so one plan fits all.
GENERIC_PLANS = "-c plan_cache_mode=force_generic_plan"


def _read_kwargs(settings: Settings) -> dict[str, Any]:
    """The store's connection arguments, with generic plans for prepared statements."""
    kwargs = settings.connect_kwargs()
    kwargs["options"] = f"{kwargs['options']} {GENERIC_PLANS}".strip()
    return kwargs


class ReadPool:
    """A psycopg-pool pool for reads and small writes that recovers at once from lost
    connections (killed backends, a server restart): see `run`."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.metrics = Metrics(enabled=False)  # the store's, once it has one
        self._checking = threading.Lock()  # one background pool check at a time
        # Each connection's real backend (none through a pooler), to end if lost in use.
        self._pids: weakref.WeakKeyDictionary[psycopg.Connection[Any], int] = (
            weakref.WeakKeyDictionary()
        )
        self._pids_lock = threading.Lock()
        self._pool = _Pool(
            settings.dsn,
            min_size=min(settings.pool_size, _MIN_HELD),
            max_size=settings.pool_size + settings.pool_overflow,
            max_idle=_MAX_IDLE,
            kwargs=pooled_kwargs(settings) if settings.pooled else _read_kwargs(settings),
            configure=configure_pooled if settings.pooled else self._remember,
            open=False,
            name=f"eventstore-actors-{settings.schema}",
            timeout=settings.call_timeout,
            reconnect_timeout=60.0,
        )
        self._pool.probe_timeout = min(settings.io_timeout, settings.health_timeout)

    def open(self) -> None:
        """Open the pool and wait for its first connections: fails fast with ConfigError (a silent
        server: about connect_timeout, not a fixed 10 s)."""
        try:
            self._pool.open(wait=True, timeout=self._open_timeout())
        except psycopg_pool.PoolTimeout:
            self._pool.close()
            raise ConfigError(
                f"cannot connect to the database {redact(self._settings.dsn)}"
            ) from None

    def _open_timeout(self) -> float:
        """connect_timeout + 2 s; with a multi-host DSN, connect_timeout applies to each host
        in turn, so a silent first host costs every connection that long: enough time for
        the pool's workers to open its first connections that way."""
        settings = self._settings
        try:
            hosts = len(
                str(psycopg.conninfo.conninfo_to_dict(settings.dsn).get("host") or "").split(",")
            )
        except psycopg.ProgrammingError:
            hosts = 1
        if hosts <= 1:
            return settings.connect_timeout + 2.0
        rounds = -(-self._pool.min_size // _POOL_WORKERS)  # open() waits for min_size only
        per_host = max(2.0, settings.connect_timeout)  # psycopg waits at least 2 s
        return per_host * hosts * rounds + 2.0

    def close(self) -> None:
        self._pool.close(timeout=5.0)

    def run(self, work: Callable[[psycopg.Connection[tuple[object, ...]]], T]) -> T:
        """Run `work` on a pooled connection; retry once on a connection lost under it.

        The whole call, waiting for a connection and the retry included, has `io_timeout`:
        `work` runs under the watchdog (storage/deadline.py), which shuts the socket of a
        call that outlives it, so a frozen network path fails the call with
        StoreUnavailableError instead of blocking it for ever.

        psycopg-pool's own `check` callback walks dead connections one by one with back-off
        (seconds after a server restart); instead the first dead connection seen triggers
        ``pool.check()`` in the background, which drops every dead idle connection at once
        (each probe under the watchdog too), and one retry.
        Every other database error becomes a contract error: no psycopg class escapes.
        """
        self.metrics.pool_call()
        io_timeout = self._settings.io_timeout
        end = time.monotonic() + io_timeout
        lost: psycopg.Error | None = None
        for attempt in (1, 2):
            left = end - time.monotonic()
            if left <= 0:
                raise self._late(io_timeout, lost)
            try:
                with self._pool.connection(timeout=left) as conn:
                    if not is_alive(conn):
                        raise _StaleConnection()
                    try:
                        with guard(conn, left):
                            return work(conn)
                    except psycopg.Error as exc:
                        if is_connection_loss(exc, conn):
                            self._orphaned(conn)
                            raise _Lost(exc) from None
                        raise database_error(exc) from None
            except psycopg_pool.PoolClosed:
                raise StoreUnavailableError("the event store is stopped") from None
            except _StaleConnection:
                self._recover(attempt, None, end)
            except _Lost as exc:
                lost = exc.error
                self._recover(attempt, lost, end)
            except psycopg_pool.PoolTimeout as exc:
                raise unavailable(exc) from None
            except psycopg.Error as exc:  # from the pool itself (getting or returning conn)
                if not is_connection_loss(exc):
                    raise database_error(exc) from None
                lost = exc
                self._recover(attempt, exc, end)
        raise AssertionError("unreachable")

    def _remember(self, conn: psycopg.Connection[Any]) -> None:
        """A new connection's real backend (`backend_pid`), in case it is lost in use."""
        pid = backend_pid(conn)
        if pid is not None:
            with self._pids_lock:
                self._pids[conn] = pid

    def _orphaned(self, conn: psycopg.Connection[Any]) -> None:
        """`conn` was lost under a call: its backend may live on (a frozen network path)
        holding what the call took (`forget_subject` holds the counter row lock across round
        trips, which blocks every appender): ended at once from a connection of its own."""
        with self._pids_lock:
            pid = self._pids.pop(conn, None)
        if pid is not None:
            Orphan(self._settings, pid, session=False)

    @staticmethod
    def _late(io_timeout: float, lost: psycopg.Error | None) -> StoreUnavailableError:
        why = f" ({reason(lost)})" if lost is not None else ""
        return StoreUnavailableError(
            f"database unavailable: no answer within io_timeout ({io_timeout:g} s){why}"
        )

    def _recover(self, attempt: int, exc: psycopg.Error | None, end: float) -> None:
        if attempt == 2:
            raise unavailable(exc or psycopg.OperationalError("connection lost")) from None
        log.warning("pooled connection lost, checking pool", schema=self._settings.schema)
        self.metrics.count("reconnects_total", connection="pool")
        # Dead idle connections (a server restart) fail their probe at once; on a frozen path
        # a probe takes up to probe_timeout: the caller waits no longer than its deadline.
        if self._checking.acquire(blocking=False):
            checker = threading.Thread(
                target=self._check, name="eventstore-pool-check", daemon=True
            )
            checker.start()
            checker.join(max(0.0, end - time.monotonic()))

    def _check(self) -> None:
        try:
            self._pool.check()
        except Exception as exc:  # a closed pool: nothing to check
            log.debug("pool check ended", error=reason(exc))
        finally:
            self._checking.release()


class _Pool(psycopg_pool.ConnectionPool):
    """A pool whose connection probes (`check`) run under the watchdog."""

    probe_timeout = 5.0

    def check_connection(self, conn: psycopg.Connection[Any]) -> None:  # type: ignore[override]
        with guard(conn, self.probe_timeout):
            psycopg_pool.ConnectionPool.check_connection(conn)


class _StaleConnection(Exception):
    """A pooled connection found dead before use."""


class _Lost(Exception):
    """The connection was lost under `work` (carries the original error)."""

    def __init__(self, error: psycopg.Error) -> None:
        super().__init__(str(error))
        self.error = error
