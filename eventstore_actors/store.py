"""The EventStore facade: starts the supervised actors and offers the public API.

Appends go to the writer actor; reads and snapshots go straight to the connection pool;
subscriptions are supervised actors of their own. Every method is thread-safe.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import pykka
import structlog

from .actors.registry import Registry
from .actors.supervised import on_own_thread
from .actors.supervisor import ChildSpec, Supervisor
from .actors.ticker import Ticker
from .config import SEED_KEYS, Settings, redact, resolve_dsn
from .errors import (
    CannotAppendToAllStreamError,
    ConfigError,
    InvalidStartFromError,
    SerializationError,
    SnapshotNotFoundError,
    StoreUnavailableError,
    StreamNotFoundError,
    SubscriptionAlreadyExistsError,
)
from .events import EventData, RecordedEvent, SnapshotData, type_name
from .notifications.publisher import PublisherActor
from .serialization import JsonSerializer, Serializer
from .storage import checkpoints, reader, snapshots
from .storage import schema as schema_ops
from .storage.appender import AppendRequest, NewEvent
from .storage.connection import ReadPool, connect
from .subscriptions.actor import (
    Ack,
    SubscriptionActor,
    SubscriptionSpec,
    subscriber_alive,
    tell_stopped,
)
from .subscriptions.control import Control
from .subscriptions.messages import Subscription
from .validation import check_count, check_optional_text, check_position, check_text
from .writer import Append, WriterActor

__all__ = ["EventStore"]

log = structlog.get_logger("eventstore_actors.store")

#: Seconds a subscribe waits for an ending subscription of the same name to let go of it.
_ENDING_WAIT = 1.0

_SETTINGS_OPTIONS = {f.name for f in dataclasses.fields(Settings)} - {
    "dsn",
    "schema",
    "pool_size",
    "pool_overflow",
    "serializer",
    "subscription_max_size",
}


class EventStore:
    """A running event store. Create it with `EventStore.start(...)`; stop it with `stop()`."""

    def __init__(self, settings: Settings, pool: ReadPool) -> None:
        self._settings = settings
        self._pool = pool
        self._origin = uuid.uuid4().hex  # names this instance's commits in notifications
        self._registry = Registry()
        self._supervisor = Supervisor.start(
            self._registry, settings.max_restarts, settings.restart_window
        )
        self._ticker = Ticker(self._registry, "subscription:", settings.tick_interval)
        self._stop_lock = threading.Lock()
        self._stopped = False
        self.log = log.bind(schema=settings.schema)

    # Starting and stopping --------------------------------------------------------------------
    @classmethod
    def start(
        cls,
        dsn: str | None = None,
        *,
        schema: str = "public",
        pool_size: int = 10,
        pool_overflow: int = 0,
        serializer: Serializer | None = None,
        subscription_max_size: int = 1000,
        **options: Any,
    ) -> EventStore:
        """Start the supervisor, writer and publisher on an initialised schema."""
        seed = {k: options.pop(k) for k in list(options) if k in SEED_KEYS}
        unknown = set(options) - _SETTINGS_OPTIONS
        if unknown:
            raise ConfigError(f"unknown option(s): {', '.join(sorted(unknown))}")
        settings = Settings(
            dsn=resolve_dsn(dsn, **seed),
            schema=schema,
            pool_size=pool_size,
            pool_overflow=pool_overflow,
            serializer=serializer if serializer is not None else JsonSerializer(),
            subscription_max_size=subscription_max_size,
            **options,
        )
        _check_installed(settings)
        pool = ReadPool(settings)
        pool.open()
        store = cls(settings, pool)
        try:
            store._start_children()
        except BaseException:
            store.stop()
            raise
        store.log.info("event store started", dsn=redact(settings.dsn))
        return store

    def _start_children(self) -> None:
        settings, registry, origin = self._settings, self._registry, self._origin
        self._ask_supervisor(
            "start_child",
            ChildSpec(
                "writer",
                lambda sup, cid, _: WriterActor.start(sup, cid, settings, registry, origin),
                critical=True,
            ),
        )
        self._ask_supervisor(
            "start_child",
            ChildSpec(
                "publisher",
                lambda sup, cid, _: PublisherActor.start(sup, cid, settings, registry, origin),
                critical=True,
            ),
        )
        self._ticker.start()

    def stop(self) -> None:
        """Stop every actor and close every connection. Idempotent."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        self._registry.close("stopped by store.stop()")
        self._ticker.stop()
        try:
            refs = self._supervisor.proxy().begin_shutdown().get(timeout=10.0)
        except (pykka.ActorDeadError, pykka.Timeout):
            refs = []
        for ref in refs:
            _stop_actor(ref)
        _stop_actor(self._supervisor)
        self._pool.close()
        self.log.info("event store stopped")

    def __enter__(self) -> EventStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def settings(self) -> Settings:
        return self._settings

    # Writing ----------------------------------------------------------------------------------
    def append_to_stream(
        self, stream_uuid: str, expected_version: int, events: Sequence[EventData]
    ) -> None:
        """Append `events` atomically if the stream is at `expected_version` (0: new stream)."""
        check_text(stream_uuid, "stream_uuid")
        if stream_uuid == checkpoints.ALL_STREAMS:
            raise CannotAppendToAllStreamError()
        check_position(expected_version, "expected_version")
        if isinstance(events, (str, bytes, Mapping)) or not isinstance(events, Sequence):
            raise TypeError("events must be a sequence of EventData")
        if not events:
            return
        request = AppendRequest(stream_uuid, expected_version, [self._serialize(e) for e in events])
        self._append(request)

    def _serialize(self, event: Any) -> NewEvent:
        if not isinstance(event, EventData):
            raise TypeError(f"events must be EventData instances, got {type(event).__qualname__}")
        event_type = event.event_type if event.event_type is not None else type_name(event.data)
        check_text(event_type, "event_type")
        if event.metadata is not None and not isinstance(event.metadata, Mapping):
            raise TypeError("metadata must be a mapping or None")
        serialize = self._settings.serializer.serialize
        data = serialize(event.data)
        metadata = None if event.metadata is None else serialize(dict(event.metadata))
        if not isinstance(data, bytes) or not isinstance(metadata, (bytes, type(None))):
            raise SerializationError("the serializer must return bytes")
        return NewEvent(
            event_type,
            check_optional_text(event.correlation_id, "correlation_id"),
            check_optional_text(event.causation_id, "causation_id"),
            data,
            metadata,
        )

    def _append(self, request: AppendRequest) -> None:
        timeout = self._settings.call_timeout
        for attempt in (1, 2):
            writer = self._registry.get("writer", timeout)
            try:
                decided = writer.ask(Append(request), timeout=timeout)
            except pykka.ActorDeadError:
                # The writer died before taking this append: nothing was written, try its successor.
                if attempt == 2:
                    raise StoreUnavailableError("the writer is restarting") from None
                continue
            except pykka.Timeout:
                raise StoreUnavailableError(
                    "the writer did not answer in time", outcome_unknown=True
                ) from None
            try:
                decided.get(timeout=timeout)
            except pykka.Timeout:
                raise StoreUnavailableError(
                    "the append was not decided in time", outcome_unknown=True
                ) from None
            return

    # Reading ----------------------------------------------------------------------------------
    def read_stream_forward(
        self, stream_uuid: str, start_version: int = 0, count: int = 1000
    ) -> list[RecordedEvent]:
        """Up to `count` events of one stream, from `start_version` (inclusive) on."""
        check_text(stream_uuid, "stream_uuid")
        check_position(start_version, "start_version")
        check_count(count, "count")
        if stream_uuid == checkpoints.ALL_STREAMS:
            return self._read_all(start_version, count)
        events = self._read_stream(stream_uuid, start_version, count)
        if not events:
            self._require_stream(stream_uuid)
        return events

    def read_all_streams_forward(
        self, start_event_id: int = 0, count: int = 1000
    ) -> list[RecordedEvent]:
        """Up to `count` events of every stream in event_id order, from `start_event_id` on."""
        check_position(start_event_id, "start_event_id")
        check_count(count, "count")
        return self._read_all(start_event_id, count)

    def stream_forward(
        self, stream_uuid: str, start_version: int = 0, read_batch_size: int = 1000
    ) -> Iterator[RecordedEvent]:
        """Every event of one stream, read lazily `read_batch_size` at a time."""
        check_text(stream_uuid, "stream_uuid")
        check_position(start_version, "start_version")
        check_count(read_batch_size, "read_batch_size")
        if stream_uuid == checkpoints.ALL_STREAMS:
            return self.stream_all_forward(start_version, read_batch_size)
        self._require_stream(stream_uuid)

        def read(start: int) -> list[RecordedEvent]:
            return self._read_stream(stream_uuid, start, read_batch_size)

        return _paged(read, start_version, read_batch_size, lambda e: e.stream_version)

    def stream_all_forward(
        self, start_event_id: int = 0, read_batch_size: int = 1000
    ) -> Iterator[RecordedEvent]:
        """Every event of every stream in event_id order, read lazily in constant memory."""
        check_position(start_event_id, "start_event_id")
        check_count(read_batch_size, "read_batch_size")

        def read(start: int) -> list[RecordedEvent]:
            return self._read_all(start, read_batch_size)

        return _paged(read, start_event_id, read_batch_size, lambda e: e.event_id)

    # The reads behind the public methods, arguments already checked (paging calls them too).
    def _read_stream(self, stream_uuid: str, start: int, count: int) -> list[RecordedEvent]:
        rows = self._pool.run(lambda c: reader.read_stream(c, stream_uuid, start, count))
        return reader.decode(rows, self._settings.serializer)

    def _read_all(self, start: int, count: int) -> list[RecordedEvent]:
        rows = self._pool.run(lambda c: reader.read_all(c, start, count))
        return reader.decode(rows, self._settings.serializer)

    def _require_stream(self, stream_uuid: str) -> None:
        if self._pool.run(lambda c: reader.stream_version(c, stream_uuid)) is None:
            raise StreamNotFoundError(stream_uuid)

    # Subscriptions ----------------------------------------------------------------------------
    def subscribe_to_stream(
        self,
        stream_uuid: str,
        subscription_name: str,
        subscriber: Any,
        start_from: str | int = "origin",
        mapper: Callable[[RecordedEvent], Any] | None = None,
        max_size: int | None = None,
    ) -> Subscription:
        """Subscribe `subscriber` to one stream's events, after the checkpoint or `start_from`."""
        check_text(stream_uuid, "stream_uuid")
        return self._subscribe(
            stream_uuid, subscription_name, subscriber, start_from, mapper, max_size
        )

    def subscribe_to_all_streams(
        self,
        subscription_name: str,
        subscriber: Any,
        start_from: str | int = "origin",
        mapper: Callable[[RecordedEvent], Any] | None = None,
        max_size: int | None = None,
    ) -> Subscription:
        """Subscribe `subscriber` to every stream's events in event_id order."""
        return self._subscribe(
            checkpoints.ALL_STREAMS, subscription_name, subscriber, start_from, mapper, max_size
        )

    def _subscribe(
        self,
        stream_uuid: str,
        name: str,
        subscriber: Any,
        start_from: str | int,
        mapper: Callable[[RecordedEvent], Any] | None,
        max_size: int | None,
    ) -> Subscription:
        check_text(name, "subscription_name")
        if not callable(getattr(subscriber, "tell", None)):
            raise TypeError("subscriber must be a pykka ActorRef or have a tell(message) method")
        if not (
            start_from in ("origin", "current")
            or (
                isinstance(start_from, int) and not isinstance(start_from, bool) and start_from >= 0
            )
        ):
            raise InvalidStartFromError(
                f"start_from must be 'origin', 'current' or an int >= 0, got {start_from!r}"
            )
        if mapper is not None and not callable(mapper):
            raise TypeError("mapper must be callable or None")
        size = (
            self._settings.subscription_max_size
            if max_size is None
            else check_count(max_size, "max_size")
        )
        if not subscriber_alive(subscriber):
            raise ValueError("the subscriber is not running (a stopped actor?)")
        child_id = _child_id(stream_uuid, name)
        registry = self._registry

        def ack(position: int) -> None:
            ref = registry.peek(child_id)
            if ref is not None:
                try:
                    ref.tell(Ack(position, handle))
                except pykka.ActorDeadError:
                    pass

        handle = Subscription(stream_uuid, name, ack)
        control = Control(size, subscriber)
        spec = SubscriptionSpec(stream_uuid, name, subscriber, start_from, mapper, size, control)
        ready: pykka.ThreadingFuture[Subscription] = pykka.ThreadingFuture()
        settings = self._settings

        def factory(sup: pykka.ActorRef[Any], cid: str, generation: int) -> pykka.ActorRef[Any]:
            first = ready if generation == 0 else None
            return SubscriptionActor.start(sup, cid, settings, spec, handle, first, registry)

        def on_give_up(reason: str) -> None:
            told = control.close(reason)
            if told is not None:  # no actor left to tell it; not from the supervisor's thread
                threading.Thread(
                    target=tell_stopped, args=(subscriber, handle, told), daemon=True
                ).start()

        child = ChildSpec(child_id, factory, on_give_up=on_give_up, attachment=control)
        self._start_subscription(child, stream_uuid, name)
        try:
            subscription: Subscription = ready.get(timeout=self._settings.call_timeout)
            return subscription
        except pykka.Timeout:
            self._forget_and_stop(child_id, child)
            raise StoreUnavailableError("the subscription did not start in time") from None
        except BaseException:
            self._forget_and_stop(child_id, child)
            raise

    def _start_subscription(self, child: ChildSpec, stream_uuid: str, name: str) -> None:
        """Start the child; a subscription of that name that is ending (its subscriber died,
        it failed, it was unsubscribed from inside its tell()) is waited for briefly, so that
        a resubscribe right after works."""
        deadline = time.monotonic() + _ENDING_WAIT
        while True:
            try:
                self._ask_supervisor("start_child", child)
                return
            except KeyError:
                current = self._registry.peek(child.child_id)
                control = self._registry.attachment(child.child_id)
                ending = current is None or not current.is_alive()
                if isinstance(control, Control):
                    # Closed, or its subscriber died and the next tick will notice.
                    ending = ending or control.closed or not subscriber_alive(control.subscriber)
                if not ending or time.monotonic() >= deadline:
                    raise SubscriptionAlreadyExistsError(
                        f"subscription {name!r} on {stream_uuid!r} already has a subscriber"
                    ) from None
                time.sleep(0.01)

    def ack(self, subscription: Subscription, acked: Sequence[Any] | RecordedEvent | int) -> None:
        """Acknowledge events of a subscription; same as `subscription.ack(acked)`."""
        if not isinstance(subscription, Subscription):
            raise TypeError("ack takes the Subscription returned by subscribe_*")
        subscription.ack(acked)

    def unsubscribe_from_stream(self, stream_uuid: str, subscription_name: str) -> None:
        """Stop the subscription; its checkpoint is kept."""
        self._forget_and_stop(_child_id(check_text(stream_uuid, "stream_uuid"), subscription_name))

    def unsubscribe_from_all_streams(self, subscription_name: str) -> None:
        self._forget_and_stop(_child_id(checkpoints.ALL_STREAMS, subscription_name))

    def delete_subscription(self, stream_uuid: str, subscription_name: str) -> None:
        """Stop the subscription if it runs here and delete its checkpoint."""
        check_text(stream_uuid, "stream_uuid")
        check_text(subscription_name, "subscription_name")
        self._forget_and_stop(_child_id(stream_uuid, subscription_name))
        self._pool.run(lambda c: checkpoints.delete(c, stream_uuid, subscription_name))

    def delete_all_streams_subscription(self, subscription_name: str) -> None:
        self.delete_subscription(checkpoints.ALL_STREAMS, subscription_name)

    def _forget_and_stop(self, child_id: str, only: ChildSpec | None = None) -> None:
        """Unsubscribe: nothing more is told to the subscriber once this returns (or, called
        from inside the subscriber's own tell(), once that tell returns)."""
        ref, control = self._ask_supervisor("forget_child", child_id, only)
        if isinstance(control, Control):
            control.close(None)
        if ref is not None:
            _stop_actor(ref)

    # Snapshots --------------------------------------------------------------------------------
    def record_snapshot(self, snapshot: SnapshotData) -> None:
        """Insert or replace the snapshot of `snapshot.source_uuid`."""
        if not isinstance(snapshot, SnapshotData):
            raise TypeError("record_snapshot takes a SnapshotData")
        check_text(snapshot.source_uuid, "source_uuid")
        check_text(snapshot.source_type, "source_type")
        check_position(snapshot.source_version, "source_version")
        if snapshot.metadata is not None and not isinstance(snapshot.metadata, Mapping):
            raise TypeError("metadata must be a mapping or None")
        serialize = self._settings.serializer.serialize
        row = {
            "source_uuid": snapshot.source_uuid,
            "source_version": snapshot.source_version,
            "source_type": snapshot.source_type,
            "data": serialize(snapshot.data),
            "metadata": None if snapshot.metadata is None else serialize(dict(snapshot.metadata)),
        }
        self._pool.run(lambda c: snapshots.upsert(c, row))

    def read_snapshot(self, source_uuid: str) -> SnapshotData:
        """The snapshot of `source_uuid`; SnapshotNotFoundError if there is none."""
        check_text(source_uuid, "source_uuid")
        row = self._pool.run(lambda c: snapshots.read(c, source_uuid))
        if row is None:
            raise SnapshotNotFoundError(source_uuid)
        uuid, version, source_type, data, metadata, created_at = row
        deserialize = self._settings.serializer.deserialize
        return SnapshotData(
            source_uuid=uuid,
            source_version=version,
            source_type=source_type,
            data=deserialize(data, source_type),
            metadata=None if metadata is None else deserialize(metadata, None),
            created_at=created_at,
        )

    def delete_snapshot(self, source_uuid: str) -> None:
        """Delete the snapshot of `source_uuid`, if any."""
        check_text(source_uuid, "source_uuid")
        self._pool.run(lambda c: snapshots.delete(c, source_uuid))

    # Helpers ----------------------------------------------------------------------------------
    def _ask_supervisor(self, method: str, *args: Any) -> Any:
        if self._registry.closed_reason is not None:
            raise StoreUnavailableError(
                f"the event store is stopped: {self._registry.closed_reason}"
            )
        try:
            return getattr(self._supervisor.proxy(), method)(*args).get(
                timeout=self._settings.call_timeout
            )
        except (pykka.ActorDeadError, pykka.Timeout):
            raise StoreUnavailableError("the event store's supervisor is not running") from None


def _child_id(stream_uuid: str, name: str) -> str:
    """Structured, so that ("order:1", "audit") and ("order", "1:audit") differ; the prefix
    is how the registry, the ticker and the publisher find subscriptions."""
    check_text(name, "subscription_name")
    return "subscription:" + json.dumps([stream_uuid, name])


def _stop_actor(ref: pykka.ActorRef[Any]) -> None:
    """Stop `ref` and wait for it, unless called from its own thread (a subscriber's tell()
    unsubscribing or stopping the store): then it stops once the current message is done."""
    try:
        if on_own_thread(ref):
            ref.stop(block=False)
        else:
            ref.stop(block=True, timeout=10.0)
    except (pykka.ActorDeadError, pykka.Timeout):
        pass


def _paged(
    read: Callable[[int], list[RecordedEvent]],
    start: int,
    batch_size: int,
    position: Callable[[RecordedEvent], int],
) -> Iterator[RecordedEvent]:
    """Yield batches of `read(start)`, advancing from the last position actually returned."""
    while True:
        batch = read(start)
        yield from batch
        if len(batch) < batch_size:
            return
        start = position(batch[-1]) + 1


def _check_installed(settings: Settings) -> None:
    """Fail fast: the database must answer and hold this release's schema."""
    try:
        conn = connect(settings)
    except StoreUnavailableError as exc:
        raise ConfigError(str(exc)) from None
    with conn:
        version = schema_ops.installed_version(conn, settings.schema)
    if version is None:
        raise ConfigError(schema_ops.not_initialised(settings.schema))
    if version != schema_ops.SCHEMA_VERSION:
        raise ConfigError(
            f"schema {settings.schema!r} is at version {version}, this release needs "
            f"{schema_ops.SCHEMA_VERSION}"
        )
