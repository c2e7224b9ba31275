"""The subscription actor: drives a `SubscriptionState` with storage, the subscriber and a lock.

One actor per named subscription. A session-level advisory lock on its own dedicated
connection makes it the only subscriber of that name across every process sharing the
database; the connection also serves its catch-up reads and checkpoint writes. Losing the
connection loses the lock, so the actor fails and its restart takes the lock again (waiting
while another process holds it) and resumes from the checkpoint.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import pykka

from ..actors.supervised import Crash, SupervisedActor
from ..actors.ticker import Tick
from ..config import Settings
from ..errors import InvalidStartFromError, StoreUnavailableError, SubscriptionAlreadyExistsError
from ..events import RecordedEvent
from ..notifications.publisher import CatchUp, Published
from ..sql import statement
from ..storage import checkpoints, reader
from ..storage.connection import connect, is_alive, unavailable
from .messages import Events, Subscribed, Subscription
from .state import Read, Send, SubscriptionState

__all__ = ["Ack", "SubscriptionActor", "SubscriptionSpec"]

#: Seconds between checks that the lock connection is still alive.
_HEALTH_INTERVAL = 1.0
#: Least seconds between two checkpoint writes while live (see `_flush_checkpoint`).
CHECKPOINT_INTERVAL = 0.05


@dataclass(frozen=True)
class SubscriptionSpec:
    stream_uuid: str  # "$all" for all streams
    name: str
    subscriber: Any
    start_from: str | int
    mapper: Callable[[RecordedEvent], Any] | None
    max_size: int


@dataclass(frozen=True)
class Ack:
    """A cumulative ack from the subscriber holding `subscription` (a handle from an earlier
    subscribe of the same name is ignored)."""

    position: int
    subscription: Subscription


@dataclass(frozen=True)
class _Pump:
    pass


class SubscriptionActor(SupervisedActor):
    def __init__(
        self,
        supervisor: pykka.ActorRef[Any],
        child_id: str,
        settings: Settings,
        spec: SubscriptionSpec,
        handle: Subscription,
        ready: pykka.ThreadingFuture[Subscription] | None,
    ) -> None:
        super().__init__(supervisor, child_id)
        self.log = self.log.bind(subscription=spec.name, stream=spec.stream_uuid)
        self._settings = settings
        self._spec = spec
        self._handle = handle
        self._ready = ready  # set only for the first start: the subscribe call waits on it
        self._conn: psycopg.Connection[Any] | None = None
        self._state: SubscriptionState[RecordedEvent] | None = None
        self._next_health_check = 0.0
        self._unsaved_checkpoint: int | None = None
        self._saved_at = 0.0
        self._all = spec.stream_uuid == checkpoints.ALL_STREAMS
        self._lock_key = json.dumps(
            ["eventstore_actors", settings.schema, spec.stream_uuid, spec.name]
        )

    # Lifecycle --------------------------------------------------------------------------------
    def setup(self) -> None:
        try:
            self._connect_and_start()
        except StoreUnavailableError as exc:
            if self._ready is None:
                # A restart while the database is away: retried on every health check.
                self.log.warning("subscription waiting for the database", error=str(exc))
                return
            self._fail_subscribe(exc)
        except Exception as exc:
            if self._ready is None:
                raise
            self._fail_subscribe(exc)

    def _fail_subscribe(self, exc: Exception) -> None:
        assert self._ready is not None
        self._ready.set_exception(exc_info=(type(exc), exc, None))
        self._ready = None
        self.actor_ref.stop(block=False)  # a failed subscribe is not restarted

    def _connect_and_start(self) -> None:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._drop_connection()
            self._conn = connect(self._settings)
            # Losing the last acks in a server crash only means re-delivery (at least once).
            self._conn.execute("SET synchronous_commit = off")
        self._try_start()

    def _try_start(self) -> None:
        assert self._conn is not None
        row = self._conn.execute(
            statement("subscriptions/lock"), {"key": self._lock_key}
        ).fetchone()
        if not row or not row[0]:
            if self._ready is not None:
                raise SubscriptionAlreadyExistsError(
                    f"subscription {self._spec.name!r} on {self._spec.stream_uuid!r} "
                    "already has a subscriber"
                )
            return  # a restart waiting for another holder to let go: retried on every Tick
        start = self._start_position()
        checkpoint = checkpoints.load_or_create(
            self._conn, self._spec.stream_uuid, self._spec.name, start
        )
        self._state = SubscriptionState(
            checkpoint,
            self._spec.max_size,
            position=(lambda e: e.event_id) if self._all else (lambda e: e.stream_version),
            stream_key=lambda e: e.stream_uuid,
        )
        if self._ready is not None:
            self._spec.subscriber.tell(Subscribed(self._handle))
            self._ready.set(self._handle)
            self._ready = None
        self.log.info("subscription started", checkpoint=checkpoint)
        self.actor_ref.tell(_Pump())

    def _start_position(self) -> int:
        assert self._conn is not None
        start = self._spec.start_from
        if start == "origin":
            return 0
        if start == "current":
            if self._all:
                return reader.last_event_id(self._conn)
            return reader.stream_version(self._conn, self._spec.stream_uuid) or 0
        if isinstance(start, int) and not isinstance(start, bool) and start >= 0:
            return start
        raise InvalidStartFromError(f"invalid start_from {start!r}")

    def cleanup(self) -> None:
        if self._ready is not None:
            error = StoreUnavailableError("the subscription stopped while starting")
            self._ready.set_exception(exc_info=(type(error), error, None))
        try:
            self._flush_checkpoint()
        except Exception as exc:  # the acks since the last write will be delivered again
            self.log.warning("could not store the last checkpoint", error=str(exc))
        self._drop_connection()

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()  # releases the advisory lock
            self._conn = None

    # Messages ---------------------------------------------------------------------------------
    def handle(self, message: Any) -> Any:
        if isinstance(message, Tick):
            self._tick()
            return
        state = self._state
        if state is None:
            return  # not holding the lock (yet): nothing to deliver
        if isinstance(message, Published):
            events = message.events
            if not self._all:
                events = [e for e in events if e.stream_uuid == self._spec.stream_uuid]
            state.notified(events)
        elif isinstance(message, Ack):
            if message.subscription is not self._handle:
                return
            checkpoint = state.acked(message.position)
            if checkpoint is not None:
                self._unsaved_checkpoint = checkpoint
                if time.monotonic() - self._saved_at >= CHECKPOINT_INTERVAL:
                    self._flush_checkpoint()
        elif isinstance(message, CatchUp):
            state.must_recheck()
        elif not isinstance(message, _Pump):
            return super().handle(message)
        self._pump(state)

    def _pump(self, state: SubscriptionState[RecordedEvent]) -> None:
        while (action := state.next_action()) is not None:
            if isinstance(action, Send):
                if not self._deliver(action.events):
                    return
            elif isinstance(action, Read):
                self._flush_checkpoint()
                state.read_done(self._read(action), action.limit)

    def _read(self, action: Read) -> list[RecordedEvent]:
        assert self._conn is not None
        try:
            if self._all:
                rows = reader.read_all(self._conn, action.start, action.limit)
            else:
                rows = reader.read_stream(
                    self._conn, self._spec.stream_uuid, action.start, action.limit
                )
        except psycopg.OperationalError as exc:
            raise unavailable(exc) from None
        return reader.decode(rows, self._settings.serializer)

    def _deliver(self, events: list[RecordedEvent]) -> bool:
        if not self._lock_connection_alive():
            # The lock went with the connection: another process may hold the name now.
            error = StoreUnavailableError("subscription lost its lock connection")
            self.actor_ref.tell(Crash(error))
            self._state = None
            return False
        mapper = self._spec.mapper
        payload = [mapper(e) for e in events] if mapper is not None else events
        try:
            self._spec.subscriber.tell(Events(self._handle, payload))
        except pykka.ActorDeadError:
            self._subscriber_gone()
            return False
        return True

    def _lock_connection_alive(self) -> bool:
        return self._conn is not None and is_alive(self._conn)

    def _flush_checkpoint(self) -> None:
        """Store the last ack, if not stored yet. Acks are coalesced: at most one write per
        CHECKPOINT_INTERVAL while live, one per storage read during catch-up, and a final one
        on stop; a crash in between only means those events are delivered again."""
        position = self._unsaved_checkpoint
        if position is None or self._conn is None:
            return
        try:
            checkpoints.advance(self._conn, self._spec.stream_uuid, self._spec.name, position)
        except psycopg.OperationalError as exc:
            raise unavailable(exc) from None
        self._unsaved_checkpoint = None
        self._saved_at = time.monotonic()

    def _tick(self) -> None:
        is_alive = getattr(self._spec.subscriber, "is_alive", None)
        if callable(is_alive) and not is_alive():
            self._subscriber_gone()
            return
        if self._state is not None:
            self._flush_checkpoint()
        now = time.monotonic()
        if now < self._next_health_check:
            return
        self._next_health_check = now + _HEALTH_INTERVAL
        try:
            if self._state is None:
                self._connect_and_start()
            elif self._conn is not None:
                self._conn.execute("SELECT 1")
        except StoreUnavailableError as exc:
            self.log.warning("subscription still waiting for the database", error=str(exc))
            self._drop_connection()
        except psycopg.OperationalError as exc:
            self.log.warning("subscription lost its connection and lock", error=str(exc))
            self.actor_ref.tell(Crash(unavailable(exc)))

    def _subscriber_gone(self) -> None:
        if self._state is not None:
            self.log.info(
                "subscriber stopped; stopping subscription", checkpoint=self._state.checkpoint
            )
            self._state = None
        self.actor_ref.stop(block=False)
