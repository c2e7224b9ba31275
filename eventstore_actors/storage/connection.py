"""Connections, the read pool, and the one place database errors become contract errors."""

from __future__ import annotations

import re
import select
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any, TypeVar

import psycopg
import psycopg.conninfo
import psycopg_pool
from psycopg import sql as pgsql

from .. import logs
from ..config import Settings, redact, scrub
from ..errors import ConfigError, StoreUnavailableError
from ..metrics import Metrics
from .deadline import guard
from .schema import FUNCTIONS, TABLES

__all__ = [
    "ReadPool",
    "Session",
    "backend_pid",
    "check_session_dsn",
    "configure_pooled",
    "connect",
    "database_error",
    "end_orphan",
    "is_alive",
    "is_connection_loss",
    "is_transient",
    "needs_session",
    "pooled_kwargs",
    "qualify",
    "reason",
    "reset_to_idle",
    "unavailable",
]

log = logs.get_logger("eventstore_actors.storage")  # warnings rate-limited
T = TypeVar("T")


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


# Connections through a transaction pooler (PgBouncer, pool_mode=transaction) ---------------
#
# Consecutive transactions of one client may run on different server connections, shared
# with other clients, and PgBouncer 1.18 refuses the `options` startup parameter: nothing may
# rely on session state. So on such connections nothing is prepared (prepare_threshold=None
# also overrides the prepare=True of some statements), every statement names the store's
# schema (`qualify`, applied by the connections' cursor class), explicit transactions begin
# with their isolation level (BEGIN ISOLATION LEVEL READ COMMITTED), and TimeZone is set with
# SET, a parameter PgBouncer tracks per client and sets again on every server connection it
# assigns (it only decides the zone of the datetimes psycopg returns: the instants are exact
# whatever the server's zone).

#: The names of the store's tables and functions, as they appear unqualified in its SQL.
_NAMES = sorted({*TABLES, *FUNCTIONS}, key=len, reverse=True)
#: String literals, quoted identifiers, dollar-quoted bodies and comments are skipped; a name
#: is qualified unless it is already (after a dot), is a qualifier itself (before a dot), or
#: is part of a longer word or of a %(name)s placeholder.
_TOKENS = re.compile(
    r"('(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\$\$.*?\$\$|--[^\n]*)"
    r"|(?<![.\w$])(?<!%\()(" + "|".join(_NAMES) + r")\b(?!\s*\.)(?!\)s)",
    re.S,
)


@lru_cache(maxsize=4096)
def qualify(schema: str, query: str) -> str:
    """`query` with the store's tables and functions named with their schema."""
    prefix = f'"{schema}".'

    def replace(match: re.Match[str]) -> str:
        return match.group(0) if match.group(1) else prefix + match.group(2)

    return _TOKENS.sub(replace, query)


#: What needs a session of its own (a session-level advisory lock or unlock, LISTEN): on a
#: pooled connection it would stay on a server connection the pooler shares with others,
#: after its holder is gone (a member no one is, a lock nobody can release). Looked for
#: outside string literals, quoted identifiers, dollar-quoted bodies and comments.
_SESSION_ONLY = re.compile(
    r"(?<![\w.$])pg_(?:try_)?advisory_(?:un)?lock(?:_shared|_all)?\s*\("
    r"|(?:^|;)\s*(?:UN)?LISTEN\b",
    re.I | re.M,
)
_SKIPPED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\$\$.*?\$\$|--[^\n]*", re.S)


@lru_cache(maxsize=4096)
def needs_session(query: str) -> bool:
    """Whether `query` takes a session-level advisory lock or LISTENs (see `_SESSION_ONLY`)."""
    return _SESSION_ONLY.search(_SKIPPED.sub(" ", query)) is not None


@lru_cache(maxsize=64)
def _qualifying_cursor(schema: str) -> type[psycopg.Cursor[Any]]:
    """A cursor class that runs every statement schema-qualified (see `qualify`) and never
    prepares one, whatever its caller asks (prepare=True) or the connection's threshold; it
    refuses what needs a session of its own (`_SESSION_ONLY`)."""

    def text(cursor: psycopg.Cursor[Any], query: Any) -> Any:
        if isinstance(query, bytes):
            query = query.decode()
        elif isinstance(query, pgsql.Composable):
            query = query.as_string(cursor)
        if not isinstance(query, str):
            return query
        if needs_session(query):  # a programming error: nothing is sent
            raise RuntimeError(
                "a session-level advisory lock or LISTEN on a `dsn` connection of a store with "
                "a session_dsn (dsn may be a transaction pooler): it must go through a "
                "storage.connection.Session, on session_dsn"
            )
        return qualify(schema, query)

    class QualifyingCursor(psycopg.Cursor[Any]):
        def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
            kwargs["prepare"] = False
            return super().execute(text(self, query), *args, **kwargs)

        def executemany(self, query: Any, *args: Any, **kwargs: Any) -> None:
            return super().executemany(text(self, query), *args, **kwargs)

        def stream(self, query: Any, *args: Any, **kwargs: Any) -> Any:
            return super().stream(text(self, query), *args, **kwargs)

        def copy(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
            return super().copy(text(self, statement), *args, **kwargs)

    return QualifyingCursor


def pooled_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection keywords for `dsn` when it may be a transaction pooler: those of
    `Settings.connect_kwargs` without the startup `options`, nothing prepared, and
    schema-qualified statements."""
    kwargs = settings.connect_kwargs()
    given = psycopg.conninfo.conninfo_to_dict(settings.dsn)
    if given.get("options"):
        kwargs["options"] = given["options"]  # the DSN's own, if the pooler accepts them
    else:
        del kwargs["options"]
    kwargs["prepare_threshold"] = None
    kwargs["cursor_factory"] = _qualifying_cursor(settings.schema)
    return kwargs


def configure_pooled(conn: psycopg.Connection[Any]) -> None:
    """What `pooled_kwargs` cannot say at connect time (see the comment above)."""
    conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
    conn.execute("SET TimeZone TO 'UTC'")


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


def backend_pid(conn: psycopg.Connection[Any] | None) -> int | None:
    """The server process of `conn` (None if unknown): remembered before a lost connection
    is dropped, so that its backend can be ended if it outlives the client (`end_orphan`).

    Asked of the server once (call it on a new connection): behind a pooler (PgBouncer) the
    pid the client was given is the pooler's invention, and the server process serving it
    is shared with other clients, so it must never be terminated: None then.
    """
    if conn is None:
        return None
    try:
        told = int(conn.pgconn.backend_pid)
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
    except Exception:
        return None
    return told if row is not None and told and int(str(row[0])) == told else None


def end_orphan(conn: psycopg.Connection[Any], pid: int | None) -> None:
    """Terminate our own earlier backend `pid` if it is still there.

    A connection given up client-side (the watchdog shut its socket, a proxy or middlebox
    froze) can leave its backend running on the server for hours, still holding what it held:
    a subscription's advisory lock, or the counter row lock of an append in progress, which
    would block every appender. The same role may end its own backends. Best effort.
    """
    if pid is None or pid == backend_pid(conn):
        return
    try:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid = %s AND usename = current_user AND datname = current_database()",
            (pid,),
        )
    except psycopg.Error as exc:
        log.warning("could not end an orphaned backend", pid=pid, error=reason(exc))


class Session:
    """The one way the store opens a connection for advisory locks (subscriptions, consumer
    group members): a dedicated session on `session_dsn` when the store has one (on `dsn`
    otherwise), one at a time, replaced after a loss.

    `get()` is the open connection, or a new one; `lost()` gives it up after a failure that
    may leave its backend running on the server (a frozen network path: packets dropped, no
    reset), still holding its locks; the next `get()` ends that backend (`end_orphan`, by the
    pid recorded when it opened) before anything else. `close()` closes on purpose.
    Not thread-safe: one owner at a time.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.conn: psycopg.Connection[Any] | None = None
        self.pid: int | None = None  # the open connection's real backend (None behind a pooler)
        self._orphan: int | None = None  # the backend of the connection lost before it

    def get(self) -> psycopg.Connection[Any]:
        """The open connection, or a new one (StoreUnavailableError if unreachable)."""
        conn = self.conn
        if conn is not None and not (conn.closed or conn.broken):
            return conn
        if conn is not None:
            self.lost()
        conn = connect(self._settings, session=True)
        try:
            end_orphan(conn, self._orphan)
            pid = backend_pid(conn)  # known now: a broken connection forgets it
        except BaseException:
            conn.close()
            raise
        self.conn, self.pid, self._orphan = conn, pid, None
        return conn

    def lost(self) -> None:
        """Give the connection up after a failure: its backend is ended by the next `get`."""
        if self.conn is not None:
            self._orphan = self.pid
        self.close()

    def close(self) -> None:
        """Close the connection (its session's locks go with it)."""
        conn, self.conn, self.pid = self.conn, None, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass

    def settle(self) -> None:
        """For an owner that will not reconnect: end the backend of a connection it lost, if
        any, on a connection opened for that alone (best effort, bounded by connect_timeout)."""
        if self._orphan is None:
            return
        self.close()
        try:
            self.get()
        except StoreUnavailableError as exc:
            log.warning("could not end an orphaned backend", pid=self._orphan, error=str(exc))
        finally:
            self._orphan = None
            self.close()


def reset_to_idle(conn: psycopg.Connection[Any]) -> bool:
    """Whether `conn` is open and outside any transaction, rolling back one left open.

    A failed statement in an explicit transaction leaves the connection INERROR: every later
    statement fails until ROLLBACK. A healthy socket is not enough to call it usable.
    """
    if conn.closed or conn.broken:
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
    if not isinstance(exc, psycopg.Error) or isinstance(exc, psycopg.errors.PipelineAborted):
        return False  # PipelineAborted: an earlier statement of the pipeline failed, no more
    sqlstate = exc.sqlstate
    if sqlstate is None:
        return isinstance(exc, psycopg.OperationalError)
    return sqlstate.startswith("08") or sqlstate in _SESSION_ENDED


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` failed the statement for a reason of the moment, not of its data: a
    statement timeout or cancel (57014), a serialization failure or deadlock (class 40), a
    lock timeout (55P03), resources (class 53). Retrying the same work may well succeed."""
    sqlstate = getattr(exc, "sqlstate", None) or ""
    return sqlstate == "57014" or sqlstate == "55P03" or sqlstate[:2] in ("40", "53")


def database_error(exc: BaseException, what: str = "operation") -> StoreUnavailableError:
    """The contract's error for a database error on a connection that is still fine.

    The statement did not take effect (a failed autocommit statement or a rolled-back
    transaction), so the outcome is known; the message says why in plain words.
    """
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if sqlstate == "57014":
        cause = "the database cancelled it (statement timeout or cancel request)"
    elif sqlstate[:2] == "40":
        cause = "the database aborted it (serialization failure or deadlock); retry"
    elif sqlstate == "55P03":
        cause = "a lock was not available in time"
    elif sqlstate[:2] == "53":
        cause = "the database is out of resources"
    else:
        cause = "the database refused it"
    return StoreUnavailableError(f"the {what} did not happen: {cause}: {reason(exc)}")


def reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def unavailable(exc: BaseException, *, outcome_unknown: bool = False) -> StoreUnavailableError:
    """The contract's error for a lost or unreachable database."""
    return StoreUnavailableError(
        f"database unavailable: {reason(exc)}", outcome_unknown=outcome_unknown
    )


#: psycopg-pool's default number of connecting workers.
_POOL_WORKERS = 3


class ReadPool:
    """A psycopg-pool pool for reads and small writes that recovers at once from lost
    connections (killed backends, a server restart): see `run`."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.metrics = Metrics(enabled=False)  # the store's, once it has one
        self._checking = threading.Lock()  # one background pool check at a time
        self._pool = _Pool(
            settings.dsn,
            min_size=settings.pool_size,
            max_size=settings.pool_size + settings.pool_overflow,
            kwargs=pooled_kwargs(settings) if settings.pooled else settings.connect_kwargs(),
            configure=configure_pooled if settings.pooled else None,
            open=False,
            name=f"eventstore-actors-{settings.schema}",
            timeout=settings.call_timeout,
            reconnect_timeout=60.0,
        )
        self._pool.probe_timeout = min(settings.io_timeout, settings.health_timeout)

    def open(self) -> None:
        """Open the pool and wait until it is full: fails fast with ConfigError (a silent
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
        the pool's workers to open all connections that way."""
        settings = self._settings
        try:
            hosts = len(
                str(psycopg.conninfo.conninfo_to_dict(settings.dsn).get("host") or "").split(",")
            )
        except psycopg.ProgrammingError:
            hosts = 1
        if hosts <= 1:
            return settings.connect_timeout + 2.0
        rounds = -(-settings.pool_size // _POOL_WORKERS)
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
