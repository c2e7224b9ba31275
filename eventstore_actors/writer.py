"""The writer actor: every append goes through it, and appends that queue up commit together.

Group commit: an `Append` joins a pending list. When nothing else waits in the mailbox it
is committed at once; otherwise the writer tells itself `Flush`, so the appends already
queued (and those arriving meanwhile) join the pending list first and the flush takes them
all: one transaction, one round of locks and one fsync for many callers, each still checked
on its own expected version.

Losing the database (a killed backend, a server restart, a network cut) is an environmental
condition, not a crash: the affected callers get `StoreUnavailableError`, the connection is
dropped and the next append reconnects, with a back-off while reconnecting keeps failing.
The writer never restarts for it, so it never counts towards the supervisor's restart limit;
only a bug (an unexpected exception) makes it crash.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pykka

from .actors.registry import Registry
from .actors.supervised import Crash, SupervisedActor
from .config import Settings
from .errors import StoreUnavailableError
from .events import AppendResult
from .storage.appender import Appender, AppendRequest, Outcome, StoredRow, Written
from .storage.connection import connect, is_alive, reset_to_idle
from .storage.deadline import guard
from .storage.replica import LsnTracker
from .storage.sessions import backend_pid, end_orphan

__all__ = ["Append", "Committed", "WriterActor"]


@dataclass(frozen=True)
class Append:
    """Asked of the writer; the reply is a future that resolves once the append is decided:
    one AppendResult per stream of the request, or the caller's error."""

    request: AppendRequest
    #: perf_counter time the caller asked (commit latency starts here, queueing included).
    at: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class _Flush:
    pass


@dataclass(frozen=True)
class Committed:
    """Told to the publisher after each commit: the rows just committed, in event_id order."""

    rows: list[StoredRow]
    #: perf_counter time of the commit (delivery latency starts here).
    at: float = field(default_factory=time.perf_counter)


_FLUSH = _Flush()

#: An append waiting for its group's commit, with the future its caller waits on and the
#: time it was asked (`Append.at`).
_Pending = tuple[AppendRequest, pykka.ThreadingFuture[list[AppendResult]], float]

#: Reconnect back-off: the first reconnect after a loss is immediate, later consecutive
#: failures wait this long, doubling up to _BACKOFF_MAX seconds (calls meanwhile fail fast).
_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 2.0


class WriterActor(SupervisedActor):
    def __init__(
        self,
        supervisor: pykka.ActorRef[Any],
        child_id: str,
        settings: Settings,
        registry: Registry,
        origin: str,
        tracker: LsnTracker | None = None,
    ) -> None:
        super().__init__(supervisor, child_id)
        self._origin = origin
        self._tracker = tracker  # replica_dsn: the WAL position after each commit
        self._settings = settings
        self._registry = registry
        self._metrics = registry.metrics
        self._connected = False  # once connected, a new connection counts as a reconnect
        self._conn: psycopg.Connection[Any] | None = None
        self._pending: list[_Pending] = []
        self._flush_queued = False
        self._failures = 0  # consecutive connection losses or failed connects
        self._retry_at = 0.0  # monotonic time before which no reconnect is tried
        self._orphan: int | None = None  # backend of a connection given up while in use
        self._pid: int | None = None

    def setup(self) -> None:
        try:
            self._connection()
        except StoreUnavailableError as exc:
            # Not fatal: the next append retries, and its caller hears why if it fails again.
            self.log.warning("writer starting without a connection", error=str(exc))

    def cleanup(self) -> None:
        _fail(
            self._pending,
            StoreUnavailableError("the writer stopped before this append was committed"),
        )
        self._pending.clear()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> psycopg.Connection[Any]:
        """The writer's connection, checked before use: one that died while idle, or that a
        failure left inside a transaction it cannot roll back, is replaced."""
        if self._conn is not None and not (reset_to_idle(self._conn) and is_alive(self._conn)):
            self.log.warning("writer connection lost while idle; reconnecting")
            self._drop_connection()
        if self._conn is None:
            wait = self._retry_at - time.monotonic()
            if wait > 0:
                raise StoreUnavailableError(
                    "database unavailable: the writer is reconnecting "
                    f"(next attempt in {wait:.2f} s); nothing was stored"
                )
            try:
                self._conn = connect(self._settings)
            except StoreUnavailableError:
                self._note_failure()
                raise
            if self._connected:
                self._metrics.count("reconnects_total", connection="writer")
            self._connected = True
            # The lost connection's backend may live on, holding the counter lock.
            end_orphan(self._conn, self._orphan)
            self._orphan = None
            self._pid = backend_pid(self._conn)  # known now: a broken connection forgets it
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._orphan = self._pid
            try:
                self._conn.close()
            except psycopg.Error:
                pass  # closing a dead connection may complain
            self._conn = None
        self._note_failure()

    def _note_failure(self) -> None:
        self._failures += 1
        delay = 0.0 if self._failures == 1 else _BACKOFF_FIRST * 2 ** (self._failures - 2)
        self._retry_at = time.monotonic() + min(delay, _BACKOFF_MAX)

    def handle(self, message: Any) -> Any:
        if isinstance(message, Append):
            future: pykka.ThreadingFuture[list[AppendResult]] = pykka.ThreadingFuture()
            self._pending.append((message.request, future, message.at))
            if self.actor_inbox.empty():
                self._flush()  # nobody else is waiting: commit now, no extra hop
            elif not self._flush_queued:
                self._flush_queued = True
                self.actor_ref.tell(_FLUSH)
            return future
        if isinstance(message, _Flush):
            self._flush_queued = False
            self._flush()
            return None
        return super().handle(message)

    def _take_batch(self) -> list[_Pending]:
        limit = self._settings.max_batch_events
        count = 0
        taken = 0
        for request, _, _ in self._pending:
            if taken and count + request.size > limit:
                break
            count += request.size
            taken += 1
        batch, self._pending = self._pending[:taken], self._pending[taken:]
        return batch

    def _flush(self) -> None:
        batch = self._take_batch()
        if self._pending and not self._flush_queued:
            self._flush_queued = True
            self.actor_ref.tell(_FLUSH)
        if not batch:
            return
        try:
            conn = self._connection()
        except StoreUnavailableError as exc:
            self._metrics.failed(len(batch), type(exc).__name__)
            _fail(batch, exc)
            return
        appender = Appender(conn, self._settings.channel, self._origin)
        try:
            with guard(conn, self._settings.io_timeout):
                outcomes = appender.append([request for request, _, _ in batch])
        except Exception as exc:
            # A bug, not bad input (refused before it gets here) nor a database error (the
            # appender turns those into outcomes): the callers hear of it at once and the
            # writer restarts with fresh state. Told, not raised: raised inside an ask (see
            # handle) it would only reach that caller.
            _fail(batch, StoreUnavailableError(f"the writer failed: {exc!r}"))
            self.actor_ref.tell(Crash(exc))
            return
        if appender.connection_lost or not reset_to_idle(conn):
            self.log.warning("writer connection lost; reconnecting on the next append")
            self._drop_connection()
            if self._tracker is not None:
                self._tracker.stale = True  # something may have committed: ask the primary
        else:
            self._failures = 0
            if self._tracker is not None and any(isinstance(o, Written) for o in outcomes):
                # Before the callers hear of it, so that their next read waits for it.
                with guard(conn, self._settings.io_timeout):
                    self._tracker.after_commit(conn)
        self._settle(batch, outcomes)

    def _settle(
        self,
        batch: list[_Pending],
        outcomes: list[Outcome],
    ) -> None:
        """Answer each caller; hand what committed to the publisher, even when others failed."""
        metrics = self._metrics
        if metrics.enabled:  # before any caller hears: its metrics() then counts it
            events, errors = 0, None
            for outcome in outcomes:
                if isinstance(outcome, Written):
                    events += len(outcome.rows)
                else:
                    errors = [*(errors or ()), type(outcome).__name__]
            metrics.committed(len(batch), events, [p[2] for p in batch], errors)
        committed: list[StoredRow] = []
        for (_, future, _), outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Written):
                committed.extend(outcome.rows)
                future.set(outcome.results)
            else:
                future.set_exception(exc_info=(type(outcome), outcome, None))
        if committed and self._registry.has_prefix("subscription:"):
            # Only subscriptions need the rows; without any, the publisher is not woken (a
            # subscription that starts later reads storage itself, see PublisherActor).
            publisher = self._registry.peek("publisher")
            if publisher is not None:
                try:
                    publisher.tell(Committed(committed))
                except pykka.ActorDeadError:
                    pass  # a restarted publisher catches up from storage


def _fail(batch: list[_Pending], error: Exception) -> None:
    for _, future, _ in batch:
        future.set_exception(exc_info=(type(error), error, None))
