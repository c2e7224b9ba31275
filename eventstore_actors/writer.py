"""The writer actor: every append goes through it, and appends that queue up commit together.

Group commit: an `Append` joins a pending list. When nothing else waits in the mailbox it
is committed at once; otherwise the writer tells itself `Flush`, so the appends already
queued (and those arriving meanwhile) join the pending list first and the flush takes them
all: one transaction, one round of locks and one fsync for many callers, each still checked
on its own expected version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
import pykka

from .actors.registry import Registry
from .actors.supervised import Crash, SupervisedActor
from .config import Settings
from .errors import StoreUnavailableError
from .storage.appender import Appender, AppendRequest, StoredRow
from .storage.connection import connect, is_alive

__all__ = ["Append", "Committed", "WriterActor"]


@dataclass(frozen=True)
class Append:
    """Asked of the writer; the reply is a future that resolves once the append is decided."""

    request: AppendRequest


@dataclass(frozen=True)
class _Flush:
    pass


@dataclass(frozen=True)
class Committed:
    """Told to the publisher after each commit: the rows just committed, in event_id order."""

    rows: list[StoredRow]


_FLUSH = _Flush()


class WriterActor(SupervisedActor):
    def __init__(
        self,
        supervisor: pykka.ActorRef[Any],
        child_id: str,
        settings: Settings,
        registry: Registry,
        origin: str,
    ) -> None:
        super().__init__(supervisor, child_id)
        self._origin = origin
        self._settings = settings
        self._registry = registry
        self._conn: psycopg.Connection[Any] | None = None
        self._pending: list[tuple[AppendRequest, pykka.ThreadingFuture[None]]] = []
        self._flush_queued = False

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
        """The writer's connection; one that died while idle is replaced before use."""
        if self._conn is not None and not is_alive(self._conn):
            self.log.warning("writer connection lost while idle; reconnecting")
            self._conn.close()
            self._conn = None
        if self._conn is None:
            self._conn = connect(self._settings)
        return self._conn

    def handle(self, message: Any) -> Any:
        if isinstance(message, Append):
            future: pykka.ThreadingFuture[None] = pykka.ThreadingFuture()
            self._pending.append((message.request, future))
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

    def _take_batch(self) -> list[tuple[AppendRequest, pykka.ThreadingFuture[None]]]:
        limit = self._settings.max_batch_events
        count = 0
        taken = 0
        for request, _ in self._pending:
            if taken and count + len(request.events) > limit:
                break
            count += len(request.events)
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
            appender = Appender(self._connection(), self._settings.channel, self._origin)
            outcomes = appender.append([request for request, _ in batch])
        except StoreUnavailableError as exc:
            _fail(batch, exc)
            if self._conn is not None and (self._conn.broken or self._conn.closed):
                # Restart with fresh state and a fresh connection (see module docstring).
                self.actor_ref.tell(Crash(exc))
            return
        except Exception as exc:
            # A bug, not bad input (that is refused before it gets here): the callers hear of
            # it at once and the writer restarts with fresh state. Told, not raised: raised
            # inside an ask (see handle) it would only reach that caller.
            _fail(batch, StoreUnavailableError(f"the writer failed: {exc!r}"))
            self.actor_ref.tell(Crash(exc))
            return
        committed: list[StoredRow] = []
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Exception):
                future.set_exception(exc_info=(type(outcome), outcome, None))
            else:
                committed.extend(outcome)
                future.set(None)
        if committed and self._registry.has_prefix("subscription:"):
            # Only subscriptions need the rows; without any, the publisher is not woken (a
            # subscription that starts later reads storage itself, see PublisherActor).
            publisher = self._registry.peek("publisher")
            if publisher is not None:
                try:
                    publisher.tell(Committed(committed))
                except pykka.ActorDeadError:
                    pass  # a restarted publisher catches up from storage


def _fail(batch: list[tuple[AppendRequest, pykka.ThreadingFuture[None]]], error: Exception) -> None:
    for _, future in batch:
        future.set_exception(exc_info=(type(error), error, None))
