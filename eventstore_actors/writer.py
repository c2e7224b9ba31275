"""The writer actor: every append goes through it, and appends that queue up commit together.

Group commit: an `Append` joins a pending list. When nothing else waits in the mailbox it
is committed at once; otherwise the writer tells itself `Flush`, so the appends already
queued (and those arriving meanwhile) join the pending list first and the flush takes them
all: one transaction, one round of locks and one fsync for many callers, each still checked
on its own expected version.

Losing the database (a killed backend, a server restart, a network cut) is an environmental
condition, not a crash: the affected callers get `StoreUnavailableError`, the connection is
dropped and the next append reconnects, with a back-off while reconnecting keeps failing.
A connection given up in use may leave its backend on the server holding the counter row
lock (a frozen network path: the client gave up, the server still waits for it), which
would block every appender of every process: it is ended at once from a connection of its
own (`Orphan`), or else by the next connect, or when the writer stops.
The writer never restarts for it, so it never counts towards the supervisor's restart limit;
only a bug (an unexpected exception) makes it crash.

Leader hand-off: two thread hand-offs (to the actor and back) cost more than the append's
own statement when nobody else is appending. So a caller whose writer is idle (no append
queued or pending, no flush under way) commits on the writer's connection from its own thread
(`Leader.append`): the leader lock, held by whoever uses the connection (the actor's flush
or such a caller), keeps it one writer at a time and keeps the publisher's `Committed` in
commit order. A caller that finds the lock taken or the writer busy goes through the actor,
so group commit under contention is unchanged: an append the actor takes while a caller
leads waits for that commit (`Leader.free`), so those that arrive meanwhile queue in its
inbox and commit together afterwards, as behind a commit of its own. Nothing wakes the actor
when nobody else appends. Everything after the statement (a lost connection, the back-off, a
crash and restart, the metrics) is the same code either way.
"""

from __future__ import annotations

import threading
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
from .storage.sessions import Orphan, backend_pid

__all__ = ["Append", "Committed", "Leader", "WriterActor"]


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


class Leader:
    """The leader hand-off of one store (see the module docstring), shared by the writer's
    successive instances and the store's callers."""

    def __init__(self) -> None:
        #: Held while the writer's connection is in use, by the actor or a leading caller.
        self.lock = threading.Lock()
        #: Clear while a caller leads: an append the actor takes meanwhile waits for it.
        self.free = threading.Event()
        self.free.set()
        #: The writer instance that callers may lead for: set once it has set up, cleared
        #: (under the lock) when it cleans up or crashes.
        self.writer: WriterActor | None = None

    def append(self, request: AppendRequest) -> list[AppendResult] | None:
        """Commit `request` on this thread if the writer is idle: its results, or its error
        raised; None when the writer is busy (or restarting): ask the actor then."""
        at = time.perf_counter()
        if not self.lock.acquire(blocking=False):
            return None
        try:
            writer = self.writer
            if writer is None or not writer.idle():
                return None
            self.free.clear()
            try:
                (outcome,) = writer.commit([request], [at])
            finally:
                self.free.set()
        finally:
            self.lock.release()
        if isinstance(outcome, Written):
            return outcome.results
        raise outcome


class WriterActor(SupervisedActor):
    def __init__(
        self,
        supervisor: pykka.ActorRef[Any],
        child_id: str,
        settings: Settings,
        registry: Registry,
        origin: str,
        leader: Leader,
        tracker: LsnTracker | None = None,
    ) -> None:
        super().__init__(supervisor, child_id)
        self._leader = leader
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
        self._orphan: Orphan | None = None  # backend of a connection given up while in use
        self._pid: int | None = None

    def setup(self) -> None:
        with self._leader.lock:
            try:
                self._connection()
            except StoreUnavailableError as exc:
                # Not fatal: the next append retries, and its caller hears why if it fails again.
                self.log.warning("writer starting without a connection", error=str(exc))
            self._leader.writer = self

    def cleanup(self) -> None:
        with self._leader.lock:  # a leading caller finishes first
            if self._leader.writer is self:
                self._leader.writer = None
            _fail(
                self._pending,
                StoreUnavailableError("the writer stopped before this append was committed"),
            )
            self._pending.clear()
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        orphan, self._orphan = self._orphan, None
        if orphan is not None:
            orphan.settle()  # nothing reconnects after this to end it

    def idle(self) -> bool:
        """Whether no append waits for this writer (asked by a caller holding the lock): none
        pending (an append the actor took while a caller led is pending as it waits), no
        flush queued, nothing in the inbox."""
        return not self._pending and not self._flush_queued and self.actor_inbox.empty()

    def _connection(self) -> psycopg.Connection[Any]:
        """The writer's connection, checked before use: one that died while idle, or that a
        failure left inside a transaction it cannot roll back, is replaced."""
        if self._conn is not None and not (reset_to_idle(self._conn) and is_alive(self._conn)):
            self.log.warning("writer connection lost while idle; reconnecting")
            self._drop_connection(at_once=False)  # ended by the reconnect below
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
            # The lost connection's backend may live on, holding the counter lock, if ending
            # it at once failed (or is still under way).
            if self._orphan is not None:
                self._orphan.end_on(self._conn)
            self._orphan = None
            self._pid = backend_pid(self._conn)  # known now: a broken connection forgets it
        return self._conn

    def _drop_connection(self, *, at_once: bool = True) -> None:
        """Give the connection up; its backend may live on holding the counter lock, so it is
        ended `at_once` from a connection of its own (off the caller's path)."""
        if self._conn is not None:
            if self._pid is not None:
                self._orphan = Orphan(self._settings, self._pid, session=False, at_once=at_once)
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
            self._pending.append((message.request, future, message.at))  # not idle from now
            if not self._leader.free.is_set():
                # A caller leads: wait for its commit (bounded by its io_timeout guard), so
                # that the appends arriving meanwhile queue in the inbox and join this one.
                self._leader.free.wait(self._settings.io_timeout + 1.0)
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
        with self._leader.lock:  # taken first: what queues meanwhile joins the next batch
            batch = self._take_batch()
            if self._pending and not self._flush_queued:
                self._flush_queued = True
                self.actor_ref.tell(_FLUSH)
            if not batch:
                return
            outcomes = self.commit([p[0] for p in batch], [p[2] for p in batch])
        for (_, future, _), outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Written):
                future.set(outcome.results)
            else:
                future.set_exception(exc_info=(type(outcome), outcome, None))

    def commit(self, requests: list[AppendRequest], started: list[float]) -> list[Outcome]:
        """Each request's outcome, committed together on the writer's connection (the caller
        holds the leader lock: the actor, or a caller leading); `started`: when
        each was asked. What committed goes to the publisher before this returns."""
        try:
            conn = self._connection()
        except StoreUnavailableError as exc:
            self._metrics.failed(len(requests), type(exc).__name__)
            return [exc] * len(requests)
        appender = Appender(conn, self._settings.channel, self._origin)
        try:
            with guard(conn, self._settings.io_timeout):
                outcomes = appender.append(requests)
        except Exception as exc:
            # A bug, not bad input (refused before it gets here) nor a database error (the
            # appender turns those into outcomes): the callers hear of it at once and the
            # writer restarts with fresh state (no caller leads for it meanwhile). Told, not
            # raised: raised inside an ask (see handle) it would only reach that caller.
            if self._leader.writer is self:
                self._leader.writer = None
            try:
                self.actor_ref.tell(Crash(exc))
            except pykka.ActorDeadError:
                pass  # stopping already
            return [StoreUnavailableError(f"the writer failed: {exc!r}")] * len(requests)
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
        self._settle(started, outcomes)
        return outcomes

    def _settle(self, started: list[float], outcomes: list[Outcome]) -> None:
        """Count the commit before any caller hears of it (its metrics() then counts it);
        hand what committed to the publisher, even when other appends failed."""
        metrics = self._metrics
        committed: list[StoredRow] = []
        if metrics.enabled:
            events, errors = 0, None
            for outcome in outcomes:
                if isinstance(outcome, Written):
                    events += len(outcome.rows)
                else:
                    errors = [*(errors or ()), type(outcome).__name__]
            metrics.committed(len(outcomes), events, started, errors)
        for outcome in outcomes:
            if isinstance(outcome, Written):
                committed.extend(outcome.rows)
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
