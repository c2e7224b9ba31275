"""The EventStore facade: starts the supervised actors and offers the public API.

Appends go to the writer actor; reads and snapshots go straight to the connection pool;
subscriptions are supervised actors of their own. Every method is thread-safe.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import json
import math
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import psycopg
import pykka
from typing_extensions import Unpack

from . import hints, lifetime, logs
from .actors.registry import Registry
from .actors.supervised import on_own_thread
from .actors.supervisor import ChildSpec, Supervisor
from .actors.ticker import Ticker
from .config import Settings, redact, resolve_dsn, resolve_session_dsn, scrub
from .errors import (
    CannotAppendToAllStreamError,
    CannotDeleteAllStreamError,
    CheckpointConflictError,
    ConfigError,
    HardDeletesDisabledError,
    SerializationError,
    SnapshotNotFoundError,
    StoreUnavailableError,
    StreamDeletedError,
    StreamNotFoundError,
    SubscriptionAlreadyExistsError,
    SubscriptionNotFoundError,
)
from .events import (
    NIL_UUID,
    AppendResult,
    EventData,
    ExpectedVersion,
    RecordedEvent,
    SnapshotData,
    StreamAppend,
)
from .metrics import Metrics, metric_key
from .notifications.publisher import (
    CatchUp,
    PublisherActor,
    StreamDeleted,
    tell_stream_subscriptions,
)
from .serialization import JsonSerializer, Serializer, inferred_type_name
from .storage import checkpoints, deletes, links, outbox, parked, reader, snapshots
from .storage import schema as schema_ops
from .storage import stream_info as stream_pages
from .storage.appender import AppendRequest, NewEvent, StreamWrite
from .storage.connection import check_session_dsn, connect
from .storage.outbox import Outbox, check_connection
from .storage.pool import ReadPool
from .storage.replica import LsnTracker, ReplicaReads
from .storage.uuids import new_uuids
from .streams import Page, StreamInfo
from .subscriptions import group as groups
from .subscriptions import info as sub_info
from .subscriptions import options as sub_options
from .subscriptions.actor import (
    Ack,
    Nack,
    ReplayParked,
    Resync,
    SubscriptionActor,
    SubscriptionSpec,
    subscriber_alive,
    tell_stopped,
)
from .subscriptions.consumers import Attach, ConcurrentSubscriptionActor, Detach
from .subscriptions.control import Control
from .subscriptions.hub import LockHub
from .subscriptions.info import SubscriptionInfo
from .subscriptions.messages import (
    ParkedEvent,
    Subscriber,
    Subscription,
    TransientSubscription,
)
from .subscriptions.options import AllStreamsSubscribeOptions, SubscribeOptions
from .subscriptions.transient import TransientActor, TransientControl, TransientSpec
from .validation import (
    check_backward_start,
    check_count,
    check_event_types,
    check_event_uuid,
    check_expected_version,
    check_name,
    check_optional_name,
    check_optional_text,
    check_position,
    check_sort,
    check_start_from,
    check_stream_prefix,
)
from .writer import Append, WriterActor

__all__ = ["EventStore"]

log = logs.get_logger("eventstore_actors.store")

#: Seconds a subscribe waits for an ending subscription of the same name to let go of it.
_ENDING_WAIT = 1.0

_P = ParamSpec("_P")
_R = TypeVar("_R")
_T = TypeVar("_T")


def _options_checked(start: Callable[_P, _R]) -> Callable[_P, _R]:
    """An unknown keyword option is a ConfigError naming it (and the option it resembles),
    for callers without a type checker; the signature type checkers see is unchanged."""
    accepted = [
        name
        for name, param in inspect.signature(start).parameters.items()
        if param.kind is inspect.Parameter.KEYWORD_ONLY or name == "dsn"
    ]

    @functools.wraps(start)
    def checked(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            hints = []
            for name in unknown:
                close = difflib.get_close_matches(name, accepted, n=1)
                hints.append(f"{name} (did you mean {close[0]}?)" if close else name)
            raise ConfigError(f"unknown option(s): {', '.join(hints)}")
        return start(*args, **kwargs)

    return checked


class EventStore:
    """A running event store. Create it with `EventStore.start(...)`; stop it with `stop()`."""

    def __init__(self, settings: Settings, pool: ReadPool) -> None:
        self._settings = settings
        self._pool = pool
        # Reads go to `_reads`: the pool itself, or with replica_dsn the standby (see
        # storage/replica.py), which then needs the position of every write (`_tracker`).
        self._tracker: LsnTracker | None = None
        self._replica: ReplicaReads | None = None
        self._reads: ReadPool | ReplicaReads = pool
        if settings.replica_dsn is not None:
            self._tracker = LsnTracker()
            self._replica = self._reads = ReplicaReads(settings, pool, self._tracker)
        self._origin = uuid.uuid4().hex  # names this instance's commits in notifications
        self._registry = Registry(Metrics(settings.metrics))
        pool.metrics = self._registry.metrics
        self._supervisor = Supervisor.start(
            self._registry, settings.max_restarts, settings.restart_window
        )
        self._ticker = Ticker(self._registry, "subscription:", settings.tick_interval)
        self._stop_lock = threading.Lock()
        self._stopped = False
        self._outbox_lock = threading.Lock()
        self._outbox_appender: Outbox | None = None
        self._acks_in_transaction: checkpoints.InTransaction | None = None
        self._holder = sub_info.holder_text(self._origin)
        self._groups: dict[str, groups.Group] = {}  # consumer groups joined here, by name
        # shared_lock_session: one connection for every subscription's lock and checkpoints.
        self._hub = LockHub(settings) if settings.shared_lock_session else None
        self.log = log.bind(schema=settings.schema)
        lifetime.track(self)  # stopped at interpreter exit if the application forgets to

    # Starting and stopping --------------------------------------------------------------------
    @classmethod
    @_options_checked
    def start(
        cls,
        dsn: str | None = None,
        *,
        schema: str = "public",
        pool_size: int = 10,
        pool_overflow: int = 0,
        serializer: Serializer | None = None,
        subscription_max_size: int = 1000,
        username: str | None = None,
        password: str | None = None,
        database: str | None = None,
        hostname: str | None = None,
        port: int | str | None = None,
        max_batch_events: int = 10_000,
        call_timeout: float = 30.0,
        max_restarts: int = 3,
        restart_window: float = 5.0,
        tick_interval: float = 0.2,
        application_name: str = "eventstore-actors",
        connect_timeout: float = 5.0,
        health_interval: float = 5.0,
        health_timeout: float = 5.0,
        io_timeout: float = 15.0,
        enable_hard_deletes: bool = False,
        replica_dsn: str | None = None,
        replica_max_lag: float = 5.0,
        metrics: bool = True,
        session_dsn: str | None = None,
        shared_lock_session: bool = False,
    ) -> EventStore:
        """Start the supervisor, writer and publisher on an initialised schema.

        Every option is a keyword, so a type checker catches a misspelt one (at run time it
        is a ConfigError); a bad value is a ConfigError too. `username`, `password`,
        `database`, `hostname` and `port` (the seed's keys) are merged over the DSN. The other
        options are those of `config.Settings`, documented there and in docs/getting-started.md.
        """
        seed = {
            "username": username,
            "password": password,
            "database": database,
            "hostname": hostname,
            "port": port,
        }
        settings = Settings(
            dsn=resolve_dsn(dsn, **seed),
            schema=schema,
            pool_size=pool_size,
            pool_overflow=pool_overflow,
            serializer=serializer if serializer is not None else JsonSerializer(),
            subscription_max_size=subscription_max_size,
            max_batch_events=max_batch_events,
            call_timeout=call_timeout,
            max_restarts=max_restarts,
            restart_window=restart_window,
            tick_interval=tick_interval,
            application_name=application_name,
            connect_timeout=connect_timeout,
            health_interval=health_interval,
            health_timeout=health_timeout,
            io_timeout=io_timeout,
            enable_hard_deletes=enable_hard_deletes,
            replica_dsn=replica_dsn,
            replica_max_lag=replica_max_lag,
            metrics=metrics,
            session_dsn=resolve_session_dsn(session_dsn),
            shared_lock_session=shared_lock_session,
        )
        logs.quiet_third_party()  # psycopg.pool, unless the application set its level
        _check_installed(settings)
        pool = ReadPool(settings)
        pool.open()
        store = cls(settings, pool)
        try:
            store._start_children()
        except BaseException:
            store.stop()
            raise
        store.log.info(
            "event store started",
            dsn=redact(settings.dsn),
            replica=None if settings.replica_dsn is None else redact(settings.replica_dsn),
            **({"session_dsn": redact(settings.session_dsn)} if settings.session_dsn else {}),
        )
        return store

    def _start_children(self) -> None:
        settings, registry, origin = self._settings, self._registry, self._origin
        tracker = self._tracker
        self._ask_supervisor(
            "start_child",
            ChildSpec(
                "writer",
                lambda sup, cid, _: WriterActor.start(
                    sup, cid, settings, registry, origin, tracker
                ),
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
        lifetime.forget(self)
        joined = list(self._groups.values())
        for group in joined:  # its partitions stop with the others
            group.close(silent=False, partitions=False)
        self._registry.close("stopped by store.stop()")
        self._ticker.stop()
        try:
            refs = self._supervisor.proxy().begin_shutdown().get(timeout=10.0)
        except (pykka.ActorDeadError, pykka.Timeout):
            refs = []
        for ref in refs:
            _stop_actor(ref)
        _stop_actor(self._supervisor)
        if self._replica is not None:
            self._replica.close()
        if self._hub is not None:
            self._hub.close()
        for group in joined:  # told by a partition already, unless it held none
            group.tell_stopped("the event store stopped")
        self._pool.close()
        self.log.info("event store stopped")

    def __enter__(self) -> EventStore:
        """The store itself: `with EventStore.start(...) as store:` stops it on exit."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the store, whether the block ended normally or with an exception."""
        self.stop()

    @property
    def settings(self) -> Settings:
        """The settings the store runs with (its repr and str hide the DSN's password)."""
        return self._settings

    # Writing ----------------------------------------------------------------------------------
    def append_to_stream(
        self,
        stream_uuid: str,
        expected_version: int | ExpectedVersion,
        events: Sequence[EventData],
        *,
        conn: psycopg.Connection[Any] | None = None,
    ) -> AppendResult | None:
        """Append `events` atomically if the stream matches `expected_version` (an int, or
        ANY_VERSION, NO_STREAM, STREAM_EXISTS); where they went, or None for no events.

        With `conn`, in that connection's current transaction (see `storage.outbox`).
        """
        write = self._write(stream_uuid, expected_version, events, "events")
        if conn is not None:
            check_connection(conn)
        if write is None:
            return None
        request = AppendRequest([write], given_uuids=_given_uuids([write]))
        return self._append(request, conn)[0]

    def append_to_streams(
        self,
        appends: Sequence[StreamAppend],
        *,
        conn: psycopg.Connection[Any] | None = None,
    ) -> list[AppendResult]:
        """Append to several streams all or nothing, each checked against its own expected
        version; event_ids are contiguous over the call, in the order given."""
        if isinstance(appends, (str, bytes, Mapping)) or not isinstance(appends, Sequence):
            raise TypeError("appends must be a sequence of StreamAppend")
        writes: list[StreamWrite] = []
        seen: set[str] = set()
        for item in appends:
            if not isinstance(item, StreamAppend):
                raise TypeError(
                    f"appends must hold StreamAppend instances, got {type(item).__qualname__}"
                )
            write = self._write(item.stream_uuid, item.expected_version, item.events, "events")
            if write is None:
                raise ValueError(f"the append to stream {item.stream_uuid!r} has no events")
            if write.stream_uuid in seen:
                raise ValueError(
                    f"stream {write.stream_uuid!r} appears twice: append to a stream once per call"
                )
            seen.add(write.stream_uuid)
            writes.append(write)
        if conn is not None:
            check_connection(conn)
        if not writes:
            return []
        request = AppendRequest(writes, given_uuids=_given_uuids(writes))
        return self._append(request, conn)

    def _write(
        self, stream_uuid: Any, expected_version: Any, events: Any, what: str
    ) -> StreamWrite | None:
        """One stream's append, checked and serialized (None: no events)."""
        check_name(stream_uuid, "stream_uuid")
        if stream_uuid == checkpoints.ALL_STREAMS:
            raise CannotAppendToAllStreamError()
        expected = check_expected_version(expected_version)
        if isinstance(events, (str, bytes, Mapping)) or not isinstance(events, Sequence):
            raise TypeError(f"{what} must be a sequence of EventData")
        if not events:
            return None
        return StreamWrite(stream_uuid, expected, [self._serialize(e) for e in events])

    def _serialize(self, event: Any) -> NewEvent:
        if not isinstance(event, EventData):
            raise TypeError(f"events must be EventData instances, got {type(event).__qualname__}")
        event_type = event.event_type
        if event_type is None:  # the serializer's stable name, else module.qualname
            event_type = inferred_type_name(self._settings.serializer, event.data)
        check_name(event_type, "event_type")
        if event.metadata is not None and not isinstance(event.metadata, Mapping):
            raise TypeError("metadata must be a mapping or None")
        given = check_event_uuid(event.event_uuid)
        serialize = self._settings.serializer.serialize
        data = serialize(event.data)
        metadata = None if event.metadata is None else serialize(dict(event.metadata))
        if not isinstance(data, bytes) or not isinstance(metadata, (bytes, type(None))):
            raise SerializationError("the serializer must return bytes")
        return NewEvent(
            event_type,
            check_optional_name(event.correlation_id, "correlation_id"),
            check_optional_name(event.causation_id, "causation_id"),
            data,
            metadata,
            given if given is not None else _NO_UUID,
        )

    def _append(
        self, request: AppendRequest, conn: psycopg.Connection[Any] | None = None
    ) -> list[AppendResult]:
        _assign_uuids(request)
        self._refuse_own_lock_wait(conn)
        if conn is not None:
            return self._outbox().append(conn, request)
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
                results: list[AppendResult] = decided.get(timeout=timeout)
            except pykka.Timeout:
                raise StoreUnavailableError(
                    "the append was not decided in time", outcome_unknown=True
                ) from None
            return results
        raise AssertionError("unreachable")

    # Deleting and linking ---------------------------------------------------------------------
    def delete_stream(
        self,
        stream_uuid: str,
        expected_version: int | ExpectedVersion,
        *,
        hard: bool = False,
    ) -> None:
        """Delete a stream if it matches `expected_version` (an int, STREAM_EXISTS or
        ANY_VERSION): softly (marked deleted, its events stay in $all), or with `hard=True`
        for good (its events, links and subscriptions; the store must allow it, and it is
        refused while a process of an earlier release holds a subscription: see
        docs/upgrading.md).

        Through the pool, not the writer: a delete is rare, may take long (a large hard
        delete) and gains nothing from group commit; it serialises with appends on the counter
        row lock all the same. Subscriptions to the stream end with SubscriptionStopped.
        """
        check_name(stream_uuid, "stream_uuid")
        if stream_uuid == checkpoints.ALL_STREAMS:
            raise CannotDeleteAllStreamError()
        expected = check_expected_version(expected_version)
        if expected is ExpectedVersion.NO_STREAM:
            raise ValueError(
                "delete_stream takes an int, STREAM_EXISTS or ANY_VERSION: NO_STREAM would "
                "delete nothing"
            )
        if not isinstance(hard, bool):
            raise TypeError(f"hard must be True or False, got {type(hard).__qualname__}")
        if hard and not self._settings.enable_hard_deletes:
            raise HardDeletesDisabledError()
        self._refuse_own_lock_wait()
        channel, origin = self._settings.channel, self._origin
        self._pool.run(
            self._written(
                lambda c: deletes.delete_stream(
                    c, stream_uuid, expected, hard, channel, origin, self._settings.schema
                )
            )
        )
        self.log.info("stream deleted", stream=stream_uuid, hard=hard)
        tell_stream_subscriptions(self._registry, stream_uuid, StreamDeleted(stream_uuid))

    def link_to_stream(
        self,
        stream_uuid: str,
        expected_version: int | ExpectedVersion,
        events_or_event_ids: Sequence[RecordedEvent | int],
        *,
        conn: psycopg.Connection[Any] | None = None,
    ) -> AppendResult:
        """Add existing events (RecordedEvents or event_ids) to a stream without copying
        them, after its last position, if it matches `expected_version`; the positions they
        took (`first_version`..`last_version`) and the first and last event_ids linked.

        Through the pool like deletes (see `delete_stream`), under the counter row lock; with
        `conn=` (a psycopg 3 connection to the store's database) in that connection's current
        transaction, as appends with `conn=` are (see `append_to_stream`).
        """
        check_name(stream_uuid, "stream_uuid")
        if stream_uuid == checkpoints.ALL_STREAMS:
            raise CannotAppendToAllStreamError()
        expected = check_expected_version(expected_version)
        event_ids = _event_ids(events_or_event_ids)
        seen: set[int] = set()
        for event_id in event_ids:
            if event_id in seen:
                raise links.duplicate(stream_uuid, event_id)
            seen.add(event_id)
        if conn is not None:
            conn = check_connection(conn)
            self._refuse_own_lock_wait(conn)
            result = self._outbox().link(conn, stream_uuid, expected, event_ids)
            tell_stream_subscriptions(self._registry, stream_uuid, CatchUp())
            return result
        self._refuse_own_lock_wait()
        channel, origin = self._settings.channel, self._origin
        result = self._pool.run(
            self._written(
                lambda c: links.link(c, stream_uuid, expected, event_ids, channel, origin)
            )
        )
        tell_stream_subscriptions(self._registry, stream_uuid, CatchUp())
        return result

    def _refuse_own_lock_wait(self, conn: psycopg.Connection[Any] | None = None) -> None:
        """StoreUnavailableError, before anything is sent, when this call would wait on the
        counter row lock held by a transaction of this very thread: one that appended with
        conn= and has not ended (on a connection other than `conn`). It would wait for ever
        (the thread that could end that transaction is the one waiting)."""
        box = self._outbox_appender
        if box is None:
            return
        pids = box.lock_holders(but=conn)
        if not pids:
            return
        schema = self._settings.schema
        if self._pool.run(lambda c: outbox.holds_counter_lock(c, schema, pids)):
            raise StoreUnavailableError(
                "this thread's open transaction on a connection given as conn= appended and "
                "holds the store's append lock until it ends: this call would wait for it "
                "for ever; commit or roll that transaction back first (nothing was sent)"
            )

    def _outbox(self) -> Outbox:
        """The appender on callers' connections, made on first use (it needs one query to
        identify the store's database)."""
        with self._outbox_lock:
            if self._outbox_appender is None:
                found = self._pool.run(outbox.fingerprint)
                self._outbox_appender = Outbox(
                    self._settings.schema, self._settings.channel, self._origin, found
                )
            return self._outbox_appender

    # Reading ----------------------------------------------------------------------------------
    def read_stream_forward(
        self, stream_uuid: str, start_version: int = 0, count: int = 1000
    ) -> list[RecordedEvent]:
        """Up to `count` events of one stream, from `start_version` (inclusive) on.

        `count` defaults to 1000 and caps the result without a word: a longer stream returns
        its first `count` events only. Read on from the last `stream_version` + 1, or use
        `stream_forward`, which pages through every event.
        """
        check_name(stream_uuid, "stream_uuid")
        check_position(start_version, "start_version")
        check_count(count, "count")
        if stream_uuid == checkpoints.ALL_STREAMS:
            return self._read_all(_Range(start_version, count))
        return self._read_stream(stream_uuid, start_version, count, backward=False)

    def read_stream_backward(
        self, stream_uuid: str, start_version: int = -1, count: int = 1000
    ) -> list[RecordedEvent]:
        """Up to `count` events of one stream, newest first, from `start_version` (inclusive;
        -1 or past the end: from the last event; 0: none) down.

        `count` defaults to 1000 and caps the result without a word; `stream_backward` pages
        through every event.
        """
        check_name(stream_uuid, "stream_uuid")
        start = _from_last(check_backward_start(start_version, "start_version"))
        check_count(count, "count")
        if stream_uuid == checkpoints.ALL_STREAMS:
            return self._read_all(_Range(start, count, backward=True))
        return self._read_stream(stream_uuid, start, count, backward=True)

    def read_all_streams_forward(
        self,
        start_event_id: int = 0,
        count: int = 1000,
        *,
        event_types: Collection[str] | None = None,
        stream_prefix: str | None = None,
        stop: int | None = None,
    ) -> list[RecordedEvent]:
        """Up to `count` events of every stream in event_id order, from `start_event_id` on
        (up to `stop`, inclusive), optionally only some event types or streams.

        `count` defaults to 1000 and caps the result without a word: read on from the last
        `event_id` + 1, or use `stream_all_forward`, which pages through every event.
        """
        check_position(start_event_id, "start_event_id")
        check_count(count, "count")
        return self._read_all(
            _Range(start_event_id, count, end=_stop(stop)).filtered(event_types, stream_prefix)
        )

    def read_all_streams_backward(
        self,
        start_event_id: int = -1,
        count: int = 1000,
        *,
        event_types: Collection[str] | None = None,
        stream_prefix: str | None = None,
    ) -> list[RecordedEvent]:
        """Up to `count` events of every stream, newest first, from `start_event_id` (-1:
        the last event) down, optionally only some event types or streams.

        `count` defaults to 1000 and caps the result without a word; `stream_all_backward`
        pages through every event.
        """
        start = _from_last(check_backward_start(start_event_id, "start_event_id"))
        check_count(count, "count")
        return self._read_all(
            _Range(start, count, backward=True).filtered(event_types, stream_prefix)
        )

    def stream_forward(
        self, stream_uuid: str, start_version: int = 0, read_batch_size: int = 1000
    ) -> Iterator[RecordedEvent]:
        """Every event of one stream, read lazily `read_batch_size` at a time."""
        check_name(stream_uuid, "stream_uuid")
        check_position(start_version, "start_version")
        check_count(read_batch_size, "read_batch_size")
        if stream_uuid == checkpoints.ALL_STREAMS:
            return self.stream_all_forward(start_version, read_batch_size)
        self._require_stream(stream_uuid)
        return self._stream_pages(stream_uuid, start_version, read_batch_size, backward=False)

    def stream_backward(
        self, stream_uuid: str, start_version: int = -1, read_batch_size: int = 1000
    ) -> Iterator[RecordedEvent]:
        """Every event of one stream, newest first, read lazily `read_batch_size` at a time."""
        check_name(stream_uuid, "stream_uuid")
        start = _from_last(check_backward_start(start_version, "start_version"))
        check_count(read_batch_size, "read_batch_size")
        if stream_uuid == checkpoints.ALL_STREAMS:
            return self.stream_all_backward(start_version, read_batch_size)
        self._require_stream(stream_uuid)
        return self._stream_pages(stream_uuid, start, read_batch_size, backward=True)

    def stream_all_forward(
        self,
        start_event_id: int = 0,
        read_batch_size: int = 1000,
        *,
        event_types: Collection[str] | None = None,
        stream_prefix: str | None = None,
        stop: int | None = None,
    ) -> Iterator[RecordedEvent]:
        """Every event of every stream in event_id order, read lazily in constant memory."""
        check_position(start_event_id, "start_event_id")
        check_count(read_batch_size, "read_batch_size")
        first = _Range(start_event_id, read_batch_size, end=_stop(stop))
        return self._all_pages(first.filtered(event_types, stream_prefix))

    def stream_all_backward(
        self,
        start_event_id: int = -1,
        read_batch_size: int = 1000,
        *,
        event_types: Collection[str] | None = None,
        stream_prefix: str | None = None,
    ) -> Iterator[RecordedEvent]:
        """Every event of every stream, newest first, read lazily in constant memory."""
        start = _from_last(check_backward_start(start_event_id, "start_event_id"))
        check_count(read_batch_size, "read_batch_size")
        first = _Range(start, read_batch_size, backward=True)
        return self._all_pages(first.filtered(event_types, stream_prefix))

    # The reads behind the public methods, arguments already checked (paging calls them too).
    def _read_stream(
        self, stream_uuid: str, start: int, count: int, *, backward: bool
    ) -> list[RecordedEvent]:
        """A soft-deleted stream reads as no rows; an empty read then says why, or is [].

        The check is a second statement: a stream created between the two (its first append
        committing) must not read as an existing stream without events, so the read is done
        again once it is known to exist.
        """

        def read() -> list[reader.Row]:
            return self._reads.run(
                lambda c: reader.read_stream(
                    c, stream_uuid, start, count, backward=backward, live_only=True
                )
            )

        rows = read()
        if not rows:
            self._require_stream(stream_uuid)
            rows = read()
        return reader.decode(rows, self._settings.serializer)

    def _read_all(self, r: _Range) -> list[RecordedEvent]:
        rows = self._reads.run(
            lambda c: reader.read_all(
                c,
                r.start,
                r.count,
                r.end,
                backward=r.backward,
                event_types=r.event_types,
                stream_prefix=r.stream_prefix,
            )
        )
        return reader.decode(rows, self._settings.serializer)

    def _stream_pages(
        self, stream_uuid: str, start: int, size: int, *, backward: bool
    ) -> Iterator[RecordedEvent]:
        """Pages of one stream, each from the last position (event_number) returned."""
        step = -1 if backward else 1
        while start >= 1 or not backward:
            batch = self._read_stream(stream_uuid, start, size, backward=backward)
            yield from batch
            if len(batch) < size:
                return
            start = batch[-1].event_number + step

    def _all_pages(self, r: _Range) -> Iterator[RecordedEvent]:
        """Pages of $all, each from the last event_id returned (gaps are skipped)."""
        step = -1 if r.backward else 1
        while r.start >= 1 or not r.backward:
            batch = self._read_all(r)
            yield from batch
            if len(batch) < r.count:
                return
            r = dataclasses.replace(r, start=batch[-1].event_id + step)

    def _require_stream(self, stream_uuid: str) -> None:
        """StreamNotFoundError (no such stream, or hard-deleted) or StreamDeletedError."""
        state = self._reads.run(lambda c: reader.stream_state(c, stream_uuid))
        if state is None or state[1] == 0:
            raise StreamNotFoundError(stream_uuid)
        if state[3] is not None:
            raise StreamDeletedError(stream_uuid)

    # Stream info ------------------------------------------------------------------------------
    def stream_info(self, stream_uuid: str) -> StreamInfo:
        """A stream's version, creation and deletion times and status ("$all" too);
        StreamNotFoundError if it has no events. A soft-deleted stream shows as "deleted"."""
        check_name(stream_uuid, "stream_uuid")
        if stream_uuid == checkpoints.ALL_STREAMS:
            last = self._reads.run(reader.last_event_id)
            return StreamInfo(stream_uuid, last, None, None, "created")
        state = self._reads.run(lambda c: reader.stream_state(c, stream_uuid))
        if state is None or state[1] == 0:
            raise StreamNotFoundError(stream_uuid)
        return _stream_info(state)

    def paginate_streams(
        self,
        *,
        page_size: int = 50,
        page_number: int = 1,
        search: str | None = None,
        sort_by: str = "stream_id",
        sort_dir: str = "asc",
    ) -> Page[StreamInfo]:
        """One page of the streams (soft-deleted ones included, never "$all"), optionally
        those whose stream_uuid contains `search` (case-insensitive), sorted by `sort_by`."""
        check_count(page_size, "page_size")
        check_count(page_number, "page_number")
        check_optional_text(search, "search")
        field, descending = check_sort(sort_by, sort_dir)
        total, rows = self._reads.run(
            lambda c: stream_pages.page(
                c,
                page_size=page_size,
                page_number=page_number,
                search=search,
                sort_by=field,
                descending=descending,
            )
        )
        return Page(
            entries=[_stream_info(row) for row in rows],
            page_number=page_number,
            page_size=page_size,
            total_entries=total,
            total_pages=-(-total // page_size),
        )

    # Subscriptions ----------------------------------------------------------------------------
    @sub_options.documented(SubscribeOptions)
    def subscribe_to_stream(
        self,
        stream_uuid: str,
        subscription_name: str,
        subscriber: Subscriber,
        start_from: str | int = "origin",
        mapper: Callable[[RecordedEvent], Any] | None = None,
        max_size: int | None = None,
        **options: Unpack[SubscribeOptions],
    ) -> Subscription:
        """Subscribe `subscriber` to one stream's events, after the checkpoint or `start_from`.

        start_from (default "origin"): where a new subscription starts: "origin" (before the
            first event), "current" (the position at subscribe time) or an int position;
            delivery starts after it. An existing subscription resumes after its checkpoint.
        mapper (default None): fn(event) applied to each event before it is sent; acks then
            take int positions.
        max_size (default None: the store's subscription_max_size): events buffered for a
            subscriber that has not acked yet; beyond it they are dropped and caught up
            from storage later.
        """
        given = sub_options.resolve(options, "subscribe_to_stream")
        check_name(stream_uuid, "stream_uuid")
        if given["partitions"] is not None:
            raise ValueError("partitions (consumer groups) apply to all-streams subscriptions only")
        if given["mixed_batches"] is not False:
            _check_flag(given["mixed_batches"], "mixed_batches")
            raise ValueError("mixed_batches applies to all-streams subscriptions only")
        if given["stream_prefix"] is not None:
            raise ValueError("stream_prefix applies to all-streams subscriptions only")
        checked = _Options.checked(
            given["standby"],
            given["mixed_batches"],
            given["max_batch"],
            selector=given["selector"],
            event_types=given["event_types"],
            checkpoint_threshold=given["checkpoint_threshold"],
            checkpoint_after=given["checkpoint_after"],
            max_retries=given["max_retries"],
            retry_delay=given["retry_delay"],
            consumers=(given["concurrency_limit"], given["partition_by"], given["buffer_size"]),
        )
        return self._subscribe(
            stream_uuid, subscription_name, subscriber, start_from, mapper, max_size, checked
        )

    @sub_options.documented(SubscribeOptions, AllStreamsSubscribeOptions)
    def subscribe_to_all_streams(
        self,
        subscription_name: str,
        subscriber: Subscriber,
        start_from: str | int = "origin",
        mapper: Callable[[RecordedEvent], Any] | None = None,
        max_size: int | None = None,
        **options: Unpack[AllStreamsSubscribeOptions],
    ) -> Subscription:
        """Subscribe `subscriber` to every stream's events in event_id order; with
        `partitions=N`, as one member of a consumer group (see subscriptions.group).

        start_from (default "origin"): where a new subscription starts: "origin" (before the
            first event), "current" (the last event_id at subscribe time) or an int event_id;
            delivery starts after it. An existing subscription resumes after its checkpoint.
        mapper (default None): fn(event) applied to each event before it is sent; acks then
            take int positions.
        max_size (default None: the store's subscription_max_size): events buffered for a
            subscriber that has not acked yet; beyond it they are dropped and caught up
            from storage later.
        """
        given = sub_options.resolve(options, "subscribe_to_all_streams")
        count = groups.check_partitions(given["partitions"])
        checked = _Options.checked(
            given["standby"],
            given["mixed_batches"],
            given["max_batch"],
            selector=given["selector"],
            event_types=given["event_types"],
            stream_prefix=given["stream_prefix"],
            checkpoint_threshold=given["checkpoint_threshold"],
            checkpoint_after=given["checkpoint_after"],
            max_retries=given["max_retries"],
            retry_delay=given["retry_delay"],
            consumers=(given["concurrency_limit"], given["partition_by"], given["buffer_size"]),
        )
        if count is not None:
            return self._subscribe_group(
                subscription_name, subscriber, start_from, mapper, max_size, checked, count
            )
        return self._subscribe(
            checkpoints.ALL_STREAMS,
            subscription_name,
            subscriber,
            start_from,
            mapper,
            max_size,
            checked,
        )

    def _subscribe(
        self,
        stream_uuid: str,
        name: str,
        subscriber: Any,
        start_from: str | int,
        mapper: Callable[[RecordedEvent], Any] | None,
        max_size: int | None,
        options: _Options,
    ) -> Subscription:
        check_name(name, "subscription_name")
        if groups.MARK in name and options.partition is None:
            raise ValueError(r"subscription_name must not contain '\x1f' (used by groups)")
        if not callable(getattr(subscriber, "tell", None)):
            raise TypeError("subscriber must be a pykka ActorRef or have a tell(message) method")
        check_start_from(start_from)
        if mapper is not None and not callable(mapper):
            raise TypeError("mapper must be callable or None")
        size = (
            self._settings.subscription_max_size
            if max_size is None
            else check_count(max_size, "max_size")
        )
        if not subscriber_alive(subscriber):
            raise ValueError("the subscriber is not running (a stopped actor?)")
        self._refuse_deleted(stream_uuid)
        child_id = _child_id(stream_uuid, name)
        registry = self._registry
        concurrent = options.concurrency_limit > 1
        if concurrent:
            attached = self._attach(child_id, stream_uuid, name, subscriber, options)
            if attached is not None:
                return attached

        def ack(position: int) -> None:
            late = control.plain_ack(position)
            if late is not None:
                # Told after the subscription stopped: stored if it stopped on its own (not
                # by an unsubscribe) and no later run of the name holds it.
                if control.reason is not None and not control.acks_in_transaction:
                    self._store_late_ack(stream_uuid, name, late)
                return
            ref = registry.peek(child_id)
            if ref is not None:
                try:
                    ref.tell(Ack(position, handle))
                except pykka.ActorDeadError:
                    pass

        def ack_in(position: int, conn: Any) -> None:
            # Checked before anything is written; never past what this handle was sent.
            acks = self._in_transaction(conn)
            control.acks_in_transaction = True
            replayed = control.replayed(position)
            if replayed is not None:
                # A parked event delivered again, below the checkpoint: off the parked list
                # in the caller's transaction; the checkpoint stays where it is.
                conflict: CheckpointConflictError | None = None
                try:
                    acks.forget_replayed(conn, stream_uuid, name, position, replayed)
                except CheckpointConflictError as exc:
                    conflict = exc  # acked by another holder: its replay is over here too
                ref = registry.peek(child_id)
                if ref is not None:
                    try:
                        ref.tell(Ack(position, handle, in_transaction=True))
                    except pykka.ActorDeadError:
                        pass
                if conflict is not None:
                    raise conflict
                return
            position = min(position, control.delivered)
            if position > 0:
                try:
                    acks.advance(conn, stream_uuid, name, position, control.ack_floor)
                except CheckpointConflictError as exc:
                    ref = registry.peek(child_id)
                    if ref is not None:  # it goes on after the stored checkpoint
                        ref.tell(Resync(exc.stored, handle))
                    raise
                control.acked_in_transaction(position)
            ref = registry.peek(child_id)
            if ref is not None:
                try:
                    ref.tell(Ack(position, handle, in_transaction=True))
                except pykka.ActorDeadError:
                    pass

        def nack(position: int, action: str, reason: str | None) -> None:
            ref = registry.peek(child_id)
            if ref is not None:
                try:
                    ref.tell(Nack(position, action, reason, handle))
                except pykka.ActorDeadError:
                    pass

        shown = name.partition(groups.MARK)[0]  # a partition shows its group's name

        def detach() -> None:
            group = self._groups.get(shown) if options.partition is not None else None
            if group is not None:  # a consumer group's partition: its subscriber leaves
                group.leave()
            else:
                self._forget_and_stop(child_id, child)

        control = Control(size, subscriber)
        if concurrent:
            handle = self._member_handle(child_id, stream_uuid, shown, nack, control)
        else:
            handle = Subscription(stream_uuid, shown, ack, ack_in, _nack=nack, _detach=detach)
        spec = SubscriptionSpec(
            stream_uuid,
            name,
            subscriber,
            start_from,
            mapper,
            size,
            control,
            holder=self._holder,
            standby=options.standby,
            max_batch=options.max_batch,
            mixed=options.mixed_batches,
            selector=options.selector,
            event_types=options.event_types,
            stream_prefix=options.stream_prefix,
            checkpoint_threshold=options.checkpoint_threshold,
            checkpoint_after=options.checkpoint_after,
            max_retries=options.max_retries,
            retry_delay=options.retry_delay,
            replica=self._replica,
            partition=options.partition,
            concurrency_limit=options.concurrency_limit,
            partition_by=options.partition_by,
            buffer_size=options.buffer_size,
            hub=self._hub,
            pool=None if self._hub is None else self._pool,
        )
        ready: pykka.ThreadingFuture[Subscription] = pykka.ThreadingFuture()
        settings = self._settings
        actor = ConcurrentSubscriptionActor if concurrent else SubscriptionActor

        def factory(sup: pykka.ActorRef[Any], cid: str, generation: int) -> pykka.ActorRef[Any]:
            first = ready if generation == 0 else None
            return actor.start(sup, cid, settings, spec, handle, first, registry)

        def on_give_up(reason: str) -> None:
            told = control.close(reason)
            if told is not None:  # no actor left to tell it; not from the supervisor's thread
                for member, member_handle, _ in control.members or [(subscriber, handle, 1)]:
                    threading.Thread(
                        target=tell_stopped, args=(member, member_handle, told), daemon=True
                    ).start()

        child = ChildSpec(child_id, factory, on_give_up=on_give_up, attachment=control)
        try:
            self._start_subscription(child, stream_uuid, name)
        except SubscriptionAlreadyExistsError:
            if not concurrent:
                raise
            # Another subscribe of the name started it meanwhile: join it.
            attached = self._attach(child_id, stream_uuid, name, subscriber, options)
            if attached is None:
                raise
            return attached
        try:
            subscription: Subscription = ready.get(timeout=self._settings.call_timeout)
            return subscription
        except pykka.Timeout:
            self._forget_and_stop(child_id, child)
            raise StoreUnavailableError("the subscription did not start in time") from None
        except BaseException:
            self._forget_and_stop(child_id, child)
            raise

    def _subscribe_group(
        self,
        name: str,
        subscriber: Any,
        start_from: str | int,
        mapper: Callable[[RecordedEvent], Any] | None,
        max_size: int | None,
        options: _Options,
        count: int,
    ) -> Subscription:
        """Join the consumer group `name` of `count` partitions (see subscriptions.group)."""
        check_name(name, "subscription_name")
        if groups.MARK in name:
            raise ValueError(r"subscription_name must not contain '\x1f' (used by groups)")
        if not callable(getattr(subscriber, "tell", None)):
            raise TypeError("subscriber must be a pykka ActorRef or have a tell(message) method")
        if not subscriber_alive(subscriber):
            raise ValueError("the subscriber is not running (a stopped actor?)")
        # Competing consumers within a partition would break its per-stream order.
        if (getattr(options, "concurrency_limit", None) or 1) > 1:
            raise ValueError("partitions cannot be combined with concurrency_limit > 1")
        if name in self._groups:
            raise SubscriptionAlreadyExistsError(
                f"consumer group {name!r} is already subscribed in this store"
            )
        start = functools.partial(self._start_position, start_from)
        schema = self._settings.schema
        self._pool.run(lambda c: groups.prepare(c, schema, name, count, start))
        partition_options = dataclasses.replace(options, standby=True)

        def start_partition(index: int, relay: Any) -> Subscription:
            row = groups.partition_row_name(name, index, count)
            part = dataclasses.replace(partition_options, partition=(index, count))
            return self._subscribe(
                checkpoints.ALL_STREAMS, row, relay, start_from, mapper, max_size, part
            )

        def stop_partition(index: int) -> None:
            row = groups.partition_row_name(name, index, count)
            self._forget_and_stop(_child_id(checkpoints.ALL_STREAMS, row))

        def control(index: int) -> Any:
            row = groups.partition_row_name(name, index, count)
            return self._registry.attachment(_child_id(checkpoints.ALL_STREAMS, row))

        def on_end(group: groups.Group) -> None:
            if self._groups.get(name) is group:
                del self._groups[name]

        group = groups.Group(
            self._settings,
            name,
            count,
            subscriber,
            start_partition,
            stop_partition,
            control,
            on_end,
        )
        self._groups[name] = group
        try:
            group.start()
        except BaseException:
            group.close()
            raise
        return group.handle

    def _start_position(self, start_from: str | int, conn: Any) -> int:
        """Where a new consumer group starts (its partitions all start there)."""
        if check_start_from(start_from) == "origin":
            return 0
        if start_from == "current":
            return reader.last_event_id(conn)
        return int(start_from)

    def _attach(
        self, child_id: str, stream_uuid: str, name: str, subscriber: Any, options: _Options
    ) -> Subscription | None:
        """Competing consumers: join the subscription of that name running here. None when
        none runs (or it is ending: the caller starts it anew); SubscriptionAlreadyExistsError
        when it takes no more subscribers."""
        ref = self._registry.peek(child_id)
        control = self._registry.attachment(child_id)
        if ref is None or not isinstance(control, Control) or control.closed:
            return None
        handle = self._member_handle(child_id, stream_uuid, name, None, control)
        if on_own_thread(ref):
            raise SubscriptionAlreadyExistsError(
                f"subscription {name!r} on {stream_uuid!r}: subscribe from outside its "
                "subscribers' tell() to add a subscriber"
            )
        try:
            reply = ref.ask(
                Attach(subscriber, handle, options.buffer_size),
                timeout=self._settings.call_timeout,
            )
        except pykka.ActorDeadError:
            return None
        except pykka.Timeout:
            raise StoreUnavailableError("the subscription did not answer in time") from None
        if reply == "dead":
            raise ValueError("the subscriber is not running (a stopped actor?)")
        if reply == "full" or (reply is None and not control.closed):
            raise SubscriptionAlreadyExistsError(
                f"subscription {name!r} on {stream_uuid!r} already has its "
                "concurrency_limit of subscribers (or takes only one)"
            )
        return handle if reply is handle else None

    def _member_handle(
        self,
        child_id: str,
        stream_uuid: str,
        name: str,
        nack: Callable[[int, str, str | None], None] | None,
        control: Control | None,
    ) -> Subscription:
        """A competing consumer's handle: per-event acks, nacks and its own unsubscribe."""
        registry, timeout = self._registry, self._settings.call_timeout

        def tell(message: Any) -> None:
            ref = registry.peek(child_id)
            if ref is not None:
                try:
                    ref.tell(message)
                except pykka.ActorDeadError:
                    pass

        def ack_each(positions: list[int]) -> None:
            message = Ack(positions[-1], handle, each=tuple(positions))
            if control is None:
                tell(message)
                return
            late = control.each_ack(handle, message.each, lambda: tell(message))
            # Told after the subscription stopped on its own (see `ack` in _subscribe).
            if late is not None and control.reason is not None:
                self._store_late_ack(stream_uuid, name, late)

        def member_nack(position: int, action: str, reason: str | None) -> None:
            tell(Nack(position, action, reason, handle))

        def no_ack(position: int) -> None:
            ack_each([position])

        def detach() -> None:
            control = registry.attachment(child_id)
            if isinstance(control, Control):
                control.detached.add(handle)  # checked before every tell
            ref = registry.peek(child_id)
            if ref is None:
                return
            try:
                if on_own_thread(ref):
                    ref.tell(Detach(handle))
                else:
                    ref.ask(Detach(handle), timeout=timeout)
            except (pykka.ActorDeadError, pykka.Timeout):
                pass

        handle = Subscription(
            stream_uuid,
            name,
            no_ack,
            None,
            _nack=nack or member_nack,
            _ack_each=ack_each,
            _detach=detach,
        )
        return handle

    def _refuse_deleted(self, stream_uuid: str) -> None:
        """StreamDeletedError for a soft-deleted stream (one deleted while the subscription
        starts ends it with SubscriptionStopped instead)."""
        if stream_uuid == checkpoints.ALL_STREAMS:
            return
        state = self._pool.run(lambda c: reader.stream_state(c, stream_uuid))
        if state is not None and state[3] is not None:
            raise StreamDeletedError(stream_uuid)

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

    def ack(
        self,
        subscription: Subscription,
        acked: Sequence[Any] | RecordedEvent | int,
        *,
        conn: psycopg.Connection[Any] | None = None,
    ) -> None:
        """Acknowledge events of a subscription; same as `subscription.ack(acked, conn=conn)`.

        With `conn`, the checkpoint is written in that connection's current transaction.
        """
        if not isinstance(subscription, Subscription) or isinstance(
            subscription, TransientSubscription
        ):
            raise TypeError("ack takes the Subscription returned by subscribe_*")
        subscription.ack(acked, conn=conn)

    def _store_late_ack(self, stream_uuid: str, name: str, position: int) -> None:
        """An ack told after its subscription stopped (e.g. on an event it cannot rebuild,
        right after the batch before it) and made its final checkpoint write: stored here,
        forward only, unless a later run of the name holds its lock (then those events are
        its own to ack). Lost only if the store is stopped or unreachable: then those events
        are delivered again."""
        if self._stopped:
            return
        key = sub_info.lock_key(self._settings.schema, stream_uuid, name)
        try:
            self._pool.run(
                lambda c: checkpoints.advance_unheld(c, stream_uuid, name, position, key)
            )
        except Exception as exc:
            self.log.warning(
                "could not store an ack told after its subscription stopped",
                subscription=name,
                stream=stream_uuid,
                error=str(exc),
            )

    def _in_transaction(self, conn: Any) -> checkpoints.InTransaction:
        """The writer of acks in callers' transactions, once `conn` is checked (TypeError,
        ValueError); made on first use (it needs one query to identify the database)."""
        checkpoints.InTransaction.check(conn)
        with self._outbox_lock:
            if self._acks_in_transaction is None:
                found = self._pool.run(outbox.fingerprint)
                self._acks_in_transaction = checkpoints.InTransaction(self._settings.schema, found)
            return self._acks_in_transaction

    # The parked list -------------------------------------------------------------------------
    def parked_events(
        self, subscription_name: str, stream_uuid: str = checkpoints.ALL_STREAMS
    ) -> list[ParkedEvent]:
        """The events the subscription parked (nack "park", or retries exhausted), in
        event_id order."""
        check_name(subscription_name, "subscription_name")
        check_name(stream_uuid, "stream_uuid")
        found = self._pool.run(lambda c: parked.rows(c, stream_uuid, subscription_name))
        if stream_uuid == checkpoints.ALL_STREAMS:  # a consumer group's, by partition
            for row_name in self._pool.run(lambda c: groups.row_names(c, subscription_name)):
                read = functools.partial(parked.rows, stream_uuid=stream_uuid, name=row_name)
                found += self._pool.run(read)
            found.sort(key=lambda f: f[0][0])
        serializer = self._settings.serializer
        return [
            ParkedEvent(
                event=reader.decode([row], serializer)[0],
                reason=reason,
                retries=retries,
                parked_at=parked_at,
            )
            for row, reason, retries, parked_at in found
        ]

    def replay_parked(
        self, subscription_name: str, stream_uuid: str = checkpoints.ALL_STREAMS
    ) -> int:
        """Deliver the parked events again, in their order and ahead of newer events, by
        whichever process holds the subscription; each leaves the list once acked. Returns
        how many were queued again."""
        check_name(subscription_name, "subscription_name")
        check_name(stream_uuid, "stream_uuid")
        names = [subscription_name]
        if stream_uuid == checkpoints.ALL_STREAMS:  # a consumer group's partitions too
            names += self._pool.run(lambda c: groups.row_names(c, subscription_name))
        total = 0
        for name in names:
            mark = functools.partial(parked.mark_replay, stream_uuid=stream_uuid, name=name)
            count = self._pool.run(mark)
            ref = self._registry.peek(_child_id(stream_uuid, name))
            if ref is not None and count:
                try:
                    ref.tell(ReplayParked())
                except pykka.ActorDeadError:
                    pass
            total += int(count)
        return total

    # Transient subscriptions ------------------------------------------------------------------
    def subscribe(
        self,
        stream_uuid: str,
        subscriber: Any,
        *,
        selector: Callable[[RecordedEvent], Any] | None = None,
        mapper: Callable[[RecordedEvent], Any] | None = None,
    ) -> TransientSubscription:
        """Tell `subscriber` every event of `stream_uuid` ("$all": of every stream) committed
        from now on, in order; no name, no acks, no checkpoint (see subscriptions.transient)."""
        check_name(stream_uuid, "stream_uuid")
        if not callable(getattr(subscriber, "tell", None)):
            raise TypeError("subscriber must be a pykka ActorRef or have a tell(message) method")
        if selector is not None and not callable(selector):
            raise TypeError("selector must be callable or None")
        if mapper is not None and not callable(mapper):
            raise TypeError("mapper must be callable or None")
        if not subscriber_alive(subscriber):
            raise ValueError("the subscriber is not running (a stopped actor?)")
        if self._registry.closed_reason is not None:
            raise StoreUnavailableError(
                f"the event store is stopped: {self._registry.closed_reason}"
            )
        child_id = f"subscription:transient:{uuid.uuid4().hex}"
        head = self._pool.run(reader.last_event_id)
        control = TransientControl(self._settings.subscription_max_size, subscriber, head)
        handle = TransientSubscription.make(stream_uuid, lambda: self._forget_and_stop(child_id))
        spec = TransientSpec(stream_uuid, subscriber, selector, mapper, control)
        settings, pool, registry = self._settings, self._pool, self._registry

        def factory(sup: pykka.ActorRef[Any], cid: str, generation: int) -> pykka.ActorRef[Any]:
            return TransientActor.start(sup, cid, settings, pool, spec, handle, registry)

        def on_give_up(reason: str) -> None:
            told = control.close(reason)
            if told is not None:
                threading.Thread(
                    target=tell_stopped, args=(subscriber, handle, told), daemon=True
                ).start()

        self._ask_supervisor(
            "start_child",
            ChildSpec(child_id, factory, on_give_up=on_give_up, attachment=control),
        )
        return handle

    def unsubscribe(self, handle: TransientSubscription) -> None:
        """End a transient subscription: nothing more is told once this returns."""
        if not isinstance(handle, TransientSubscription):
            raise TypeError("unsubscribe takes the handle returned by subscribe()")
        handle.unsubscribe()

    # Subscription info ------------------------------------------------------------------------
    def subscriptions(self) -> list[SubscriptionInfo]:
        """Every durable subscription of the store, held or not, in any process."""
        schema = self._settings.schema
        return self._pool.run(lambda c: sub_info.load(c, schema))

    def subscription_info(
        self, subscription_name: str, stream_uuid: str = "$all", *, partition: Any = None
    ) -> SubscriptionInfo:
        """Where one durable subscription stands; SubscriptionNotFoundError if unknown (or if
        the group has no such `partition`), ValueError for a consumer group without one."""
        check_name(subscription_name, "subscription_name")
        check_name(stream_uuid, "stream_uuid")
        where = f"subscription {subscription_name!r} on {stream_uuid!r}"
        schema = self._settings.schema
        if partition is not None:  # a consumer group's partition
            rows = self._pool.run(lambda c: sub_info.load(c, schema))
            key = (stream_uuid, subscription_name, partition)
            for info in rows:
                if (info.stream_uuid, info.subscription_name, info.partition) == key:
                    return info
            raise SubscriptionNotFoundError(f"{where} has no partition {partition!r}")
        found = self._pool.run(lambda c: sub_info.load(c, schema, subscription_name, stream_uuid))
        if not found:
            if stream_uuid == checkpoints.ALL_STREAMS and self._pool.run(
                lambda c: groups.row_names(c, subscription_name)
            ):
                raise ValueError(f"{where} is a consumer group: pass partition=")
            raise SubscriptionNotFoundError(f"no {where}")
        return found[0]

    def unsubscribe_from_stream(self, stream_uuid: str, subscription_name: str) -> None:
        """Stop the subscription; its checkpoint is kept."""
        self._forget_and_stop(_child_id(check_name(stream_uuid, "stream_uuid"), subscription_name))

    def unsubscribe_from_all_streams(self, subscription_name: str) -> None:
        """Stop the all-streams subscription; its checkpoint is kept, and nothing more is
        delivered once this returns (a consumer group: this store leaves it)."""
        group = self._groups.get(subscription_name)
        if group is not None:
            group.close()
            return
        self._forget_and_stop(_child_id(checkpoints.ALL_STREAMS, subscription_name))

    def delete_subscription(self, stream_uuid: str, subscription_name: str) -> None:
        """Stop the subscription if it runs here and delete its checkpoint."""
        check_name(stream_uuid, "stream_uuid")
        check_name(subscription_name, "subscription_name")
        self._forget_and_stop(_child_id(stream_uuid, subscription_name))
        self._pool.run(lambda c: checkpoints.delete(c, stream_uuid, subscription_name))

    def delete_all_streams_subscription(self, subscription_name: str) -> None:
        """Stop the all-streams subscription if it runs here and delete its checkpoint (a
        new subscription of that name starts from its `start_from` again); for a consumer
        group, every partition's checkpoint."""
        group = self._groups.get(check_name(subscription_name, "subscription_name"))
        if group is not None:
            group.close()
        self._pool.run(lambda c: groups.delete_rows(c, subscription_name))
        self.delete_subscription(checkpoints.ALL_STREAMS, subscription_name)

    def _forget_and_stop(self, child_id: str, only: ChildSpec | None = None) -> None:
        """Unsubscribe: nothing more is told to the subscriber once this returns (or, called
        from inside the subscriber's own tell(), once that tell returns)."""
        ref, control = self._ask_supervisor("forget_child", child_id, only)
        if isinstance(control, Control):
            control.close(None)
        if ref is not None:
            _stop_actor(ref)

    # Metrics ----------------------------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        """This store instance's counters, gauges and latency summaries (docs/scale-out.md);
        empty when started with `metrics=False`. The subscription lags cost one pooled
        query, made here, never on the hot path; without the database they are left out
        and `subscription_lag_error` is 1."""
        out = self._registry.metrics.snapshot()
        if not out:
            return out
        out["subscriptions_running"] = float(len(self._registry.members("subscription:")))
        if self._replica is not None:
            out["replica_reads_total"] = float(self._replica.replica_reads)
            out["replica_primary_reads_total"] = float(self._replica.primary_reads)
        try:
            found = self.subscriptions()
        except StoreUnavailableError:
            out["subscription_lag_error"] = 1.0
            return out
        out["subscription_lag_error"] = 0.0
        for info in found:
            labels = {"stream": info.stream_uuid, "name": info.subscription_name}
            if info.partition is not None:
                labels["partition"] = str(info.partition)
            out[metric_key("subscription_lag", **labels)] = float(info.lag)
        return out

    # Snapshots --------------------------------------------------------------------------------
    def record_snapshot(self, snapshot: SnapshotData) -> None:
        """Insert or replace the snapshot of `snapshot.source_uuid`."""
        if not isinstance(snapshot, SnapshotData):
            raise TypeError("record_snapshot takes a SnapshotData")
        check_name(snapshot.source_uuid, "source_uuid")
        check_name(snapshot.source_type, "source_type")
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
        if not isinstance(row["data"], bytes) or not isinstance(
            row["metadata"], (bytes, type(None))
        ):
            raise SerializationError("the serializer must return bytes")
        self._pool.run(self._written(lambda c: snapshots.upsert(c, row)))

    def read_snapshot(self, source_uuid: str) -> SnapshotData:
        """The snapshot of `source_uuid`; SnapshotNotFoundError if there is none."""
        check_name(source_uuid, "source_uuid")
        row = self._reads.run(lambda c: snapshots.read(c, source_uuid))
        if row is None:
            raise SnapshotNotFoundError(source_uuid)
        uuid, version, source_type, data, metadata, created_at = row
        deserialize = self._settings.serializer.deserialize
        try:
            data = deserialize(data, source_type)
            metadata = None if metadata is None else deserialize(metadata, None)
        except Exception as exc:  # a custom serializer may raise anything
            reason = (
                str(exc) if isinstance(exc, SerializationError) else f"{type(exc).__name__}: {exc}"
            )
            raise SerializationError(
                f"cannot read the snapshot of {uuid!r} (type {source_type!r}): {reason}"
            ) from exc
        return SnapshotData(
            source_uuid=uuid,
            source_version=version,
            source_type=source_type,
            data=data,
            metadata=metadata,
            created_at=created_at,
        )

    def delete_snapshot(self, source_uuid: str) -> None:
        """Delete the snapshot of `source_uuid`, if any."""
        check_name(source_uuid, "source_uuid")
        self._pool.run(self._written(lambda c: snapshots.delete(c, source_uuid)))

    # Helpers ----------------------------------------------------------------------------------
    def _written(self, work: Callable[[Any], _T]) -> Callable[[Any], _T]:
        """`work`, a write through the pool, with its WAL position recorded for replica reads
        (read-your-writes); `work` itself without replica_dsn."""
        return work if self._tracker is None else self._tracker.tracked(work)

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


@dataclasses.dataclass(frozen=True)
class _Options:
    """Subscription options of version 2 (checked at subscribe time)."""

    standby: bool = False
    mixed_batches: bool = False
    max_batch: int = 1000
    selector: Callable[[RecordedEvent], Any] | None = None
    event_types: tuple[str, ...] | None = None
    stream_prefix: str | None = None
    checkpoint_threshold: int | None = None
    checkpoint_after: float | None = None
    max_retries: int = 10
    retry_delay: float = 1.0
    partition: tuple[int, int] | None = None  # (index, count): one consumer-group partition
    concurrency_limit: int = 1
    partition_by: Callable[[RecordedEvent], Any] | None = None
    buffer_size: int = 1

    @classmethod
    def checked(
        cls,
        standby: Any,
        mixed_batches: Any,
        max_batch: Any,
        *,
        selector: Any = None,
        event_types: Any = None,
        stream_prefix: Any = None,
        checkpoint_threshold: Any = None,
        checkpoint_after: Any = None,
        max_retries: Any = 10,
        retry_delay: Any = 1.0,
        consumers: tuple[Any, Any, Any] = (1, None, 1),
    ) -> _Options:
        if selector is not None and not callable(selector):
            raise TypeError("selector must be callable or None")
        limit, partition_by, buffer_size = consumers
        limit, buffer_size = (
            check_count(limit, "concurrency_limit"),
            check_count(buffer_size, "buffer_size"),
        )
        if partition_by is not None and not callable(partition_by):
            raise TypeError("partition_by must be callable or None")
        if limit > 1 and standby is True:
            raise ValueError("standby does not combine with concurrency_limit > 1")
        if limit > 1 and mixed_batches is True:
            raise ValueError(
                "mixed_batches does not apply with concurrency_limit > 1 (each subscriber's "
                "batch holds up to buffer_size events of any streams)"
            )
        return cls(
            concurrency_limit=limit,
            partition_by=partition_by,
            buffer_size=buffer_size,
            standby=_check_flag(standby, "standby"),
            mixed_batches=_check_flag(mixed_batches, "mixed_batches"),
            max_batch=check_count(max_batch, "max_batch"),
            selector=selector,
            event_types=check_event_types(event_types),
            stream_prefix=check_stream_prefix(stream_prefix),
            checkpoint_threshold=(
                None
                if checkpoint_threshold is None
                else check_count(checkpoint_threshold, "checkpoint_threshold")
            ),
            checkpoint_after=_check_seconds(checkpoint_after, "checkpoint_after"),
            max_retries=check_position(max_retries, "max_retries"),
            retry_delay=_check_seconds(retry_delay, "retry_delay") or 0.0,
        )


def _check_seconds(value: Any, name: str) -> float | None:
    """None or a finite number of seconds >= 0 (TypeError/ValueError otherwise)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


def _check_flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


#: Stands for "the store assigns it" in a NewEvent until _assign_uuids replaces it.
_NO_UUID = NIL_UUID


def _given_uuids(writes: list[StreamWrite]) -> bool:
    """Whether the caller gave any event_uuid; ValueError when one is given twice."""
    given = [ev.event_uuid for w in writes for ev in w.events if ev.event_uuid is not _NO_UUID]
    if len(set(given)) != len(given):
        raise ValueError("the same event_uuid is given to several events of one call")
    return bool(given)


def _assign_uuids(request: AppendRequest) -> None:
    """Fresh time-ordered UUIDs for the events the caller gave none."""
    for write in request.writes:
        events = write.events
        missing = [i for i, ev in enumerate(events) if ev.event_uuid is _NO_UUID]
        for i, fresh in zip(missing, new_uuids(len(missing)), strict=True):
            events[i] = events[i]._replace(event_uuid=fresh)


def _event_ids(items: Any) -> list[int]:
    """The event_ids of a link_to_stream call: a non-empty sequence of RecordedEvents or
    ints >= 1 (TypeError/ValueError otherwise, before anything is written)."""
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence):
        raise TypeError(
            "events_or_event_ids must be a sequence of RecordedEvents or event_ids, got "
            f"{type(items).__qualname__}"
        )
    if not items:
        raise ValueError("events_or_event_ids is empty: nothing to link")
    event_ids: list[int] = []
    for item in items:
        if isinstance(item, RecordedEvent):
            event_ids.append(item.event_id)
        elif isinstance(item, int) and not isinstance(item, bool):
            event_ids.append(check_count(item, "event_id"))
        else:
            raise TypeError(
                "events_or_event_ids must hold RecordedEvents or int event_ids, got "
                f"{type(item).__qualname__}"
            )
    return event_ids


def _child_id(stream_uuid: str, name: str) -> str:
    """Structured, so that ("order:1", "audit") and ("order", "1:audit") differ; the prefix
    is how the registry, the ticker and the publisher find subscriptions."""
    check_name(name, "subscription_name")
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


@dataclasses.dataclass(frozen=True)
class _Range:
    """One all-streams read: from `start` (inclusive) towards `end`, at most `count` events."""

    start: int
    count: int
    backward: bool = False
    end: int | None = None  # None: no bound (forward: `stop`; backward: down to the first)
    event_types: tuple[str, ...] | None = None
    stream_prefix: str | None = None

    def filtered(self, event_types: Any, stream_prefix: Any) -> _Range:
        """This range with the filters, checked: bad values raise here, before any read."""
        return dataclasses.replace(
            self,
            event_types=check_event_types(event_types),
            stream_prefix=check_stream_prefix(stream_prefix),
        )


def _from_last(start: int) -> int:
    """A backward read's start position: -1 means from the last event."""
    return reader.MAX_POSITION if start == -1 else start


def _stop(stop: Any) -> int | None:
    return None if stop is None else check_position(stop, "stop")


def _stream_info(row: reader.StreamRow) -> StreamInfo:
    stream_uuid, version, created_at, deleted_at = row
    status = "created" if deleted_at is None else "deleted"
    return StreamInfo(stream_uuid, version, created_at, deleted_at, status)


def _check_installed(settings: Settings) -> None:
    """Fail fast: the database must answer and hold this release's schema."""
    try:
        conn = connect(settings)
    except StoreUnavailableError as exc:
        message = scrub(str(exc), settings.dsn)
        hint = hints.missing_database(message, settings.dsn, settings.schema)
        raise ConfigError(hint or message) from None
    with conn:
        version = schema_ops.installed_version(conn, settings.schema)
        if settings.pooled:
            check_session_dsn(settings, conn)
    if version is None:
        raise ConfigError(hints.not_initialised(settings.schema, settings.dsn))
    if version < schema_ops.SCHEMA_VERSION:
        raise ConfigError(schema_ops.outdated(settings.schema, version))
    if version > schema_ops.SCHEMA_VERSION:
        raise ConfigError(schema_ops.too_new(settings.schema, version))
