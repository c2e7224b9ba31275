"""AsyncEventStore: the EventStore facade, awaitable, on the same supervised actors.

One runtime: an `AsyncEventStore` wraps one running `EventStore` (`.sync`), whose actors,
pool and writer it shares with any sync code given that object. Every blocking call runs on
the store's own thread pool (`calls.Calls`), so the event loop only ever schedules and
awaits; nothing here holds the loop for longer than a queue hand-over.

Each awaitable method is derived from the sync one by `_awaitable`: same parameters, defaults,
errors and result, typed through ParamSpec so that type checkers see the sync signature. The
streaming reads and the subscriptions have shapes of their own and are written out.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import types
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

import psycopg
from typing_extensions import Unpack

from ..config import Settings
from ..events import AppendResult, EventData, ExpectedVersion, RecordedEvent, StreamAppend
from ..lifecycle.encryption import Encryption
from ..options import options_checked, start_options
from ..serialization import Serializer
from ..storage.asyncconn import BorrowedAsyncConnection
from ..store import EventStore
from ..subscriptions import options as sub_options
from ..subscriptions.handles import MemberSubscription
from ..subscriptions.messages import Subscription, TransientSubscription
from ..subscriptions.options import AllStreamsSubscribeOptions, SubscribeOptions
from .calls import APPEND_THREADS, Calls, default_threads
from .subscription import AsyncSubscription, AsyncTransientSubscription
from .wrapping import awaitable as _awaitable
from .wrapping import streaming as _streaming

__all__ = ["AsyncEventStore"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

_ALL = "$all"

#: What `conn=` takes here: the caller's psycopg connection, async or not.
CallerConnection = psycopg.AsyncConnection[Any] | psycopg.Connection[Any]

#: Methods with a shape of their own here; every other public EventStore method is awaitable.
_SPECIAL = frozenset(
    {
        "start",
        "stop",
        "settings",
        "stream_forward",
        "stream_backward",
        "stream_all_forward",
        "stream_all_backward",
        "subscribe_to_stream",
        "subscribe_to_all_streams",
        "ack",
        "append_to_stream",
        "append_to_streams",
        "unsubscribe_from_stream",
        "unsubscribe_from_all_streams",
        "delete_subscription",
        "delete_all_streams_subscription",
        "subscribe",
        "unsubscribe",
    }
)


def _start_primed(calls: Calls, *args: Any, **kwargs: Any) -> EventStore:
    store = EventStore.start(*args, **kwargs)
    calls.prime()
    return store


def _take(events: Iterator[RecordedEvent], size: Any) -> list[RecordedEvent]:
    return list(itertools.islice(events, size))


def _stop_if_started(future: Future[EventStore]) -> None:
    """A start whose caller was cancelled: stop what it started (not left until exit)."""
    if not future.cancelled() and future.exception() is None:
        future.result().stop()


def _count(value: Any, default: int) -> int:
    return (
        value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default
    )


class AsyncEventStore:
    """A running event store for asyncio code. Create it with
    ``await AsyncEventStore.start(...)`` (or wrap a running `EventStore`); stop it with
    ``await store.stop()`` or ``async with``."""

    def __init__(self, store: EventStore, *, threads: int | None = None) -> None:
        """Wrap a running `EventStore` (its `stop()` is then `await self.stop()`'s job).
        `threads`: the size of the pool running blocking calls (default: the store's pool
        size plus 64, so that many concurrent appends share the writer's group commits)."""
        if not isinstance(store, EventStore):
            raise TypeError("AsyncEventStore wraps a running EventStore")
        settings = store.settings
        count = default_threads(settings.pool_size, settings.pool_overflow)
        calls = Calls(count if threads is None else threads)
        calls.prime_in_background()
        self._setup(store, calls)

    def _setup(self, store: EventStore, calls: Calls) -> None:
        self._store = store
        self._calls = calls
        self._subs: weakref.WeakSet[AsyncSubscription[Any]] = weakref.WeakSet()
        self._stopping: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"AsyncEventStore(schema={self._store.settings.schema!r})"

    # Starting and stopping --------------------------------------------------------------------
    @classmethod
    @options_checked
    async def start(
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
        shared_lock_session: bool = True,
        encryption: Encryption | None = None,
        archive: str | None = None,
        threads: int | None = None,
    ) -> AsyncEventStore:
        """`EventStore.start(...)` with the same arguments, without blocking the loop; plus
        `threads` (see `AsyncEventStore`). Cancelling it stops whatever it started."""
        options = start_options(locals())  # every parameter but cls, dsn and threads
        if threads is None:
            threads = _count(pool_size, 10) + _count(pool_overflow, 0) + APPEND_THREADS
        calls = Calls(threads)
        future = calls.submit(_start_primed, calls, dsn, **options)
        try:
            store = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.add_done_callback(_stop_if_started)
            calls.close()
            raise
        except BaseException:
            calls.close()
            raise
        self = cls.__new__(cls)
        self._setup(store, calls)
        return self

    async def stop(self) -> None:
        """Stop every actor and close every connection. Idempotent. Every running iteration
        over one of this store's subscriptions ends (quietly). Cancelling the caller does not
        cancel the stop."""
        if self._stopping is None:
            for sub in list(self._subs):
                sub._close()
            self._subs.clear()
            self._stopping = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._stopping)

    async def _stop(self) -> None:
        try:
            await self._calls.run(self._store.stop)
        finally:
            self._calls.close()

    async def __aenter__(self) -> AsyncEventStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def settings(self) -> Settings:
        return self._store.settings

    @property
    def sync(self) -> EventStore:
        """The sync facade of the same runtime, for code running on threads."""
        return self._store

    @property
    def threads(self) -> int:
        """How many blocking calls may run at once."""
        return self._calls.threads

    # Writing: conn= may be the caller's AsyncConnection ----------------------------------------
    async def append_to_stream(
        self,
        stream_uuid: str,
        expected_version: int | ExpectedVersion,
        events: Sequence[EventData],
        *,
        conn: CallerConnection | None = None,
    ) -> AppendResult | None:
        """Awaitable `EventStore.append_to_stream`: append `events` atomically if the stream
        matches `expected_version`; where they went, or None for no events.

        With `conn` (a psycopg `AsyncConnection`, or a sync `Connection`, to the store's
        database), in that connection's current transaction (the outbox): nothing is visible
        before the caller commits, nothing stored if it rolls back. Cancelling the caller
        then waits for the append to finish on `conn` before the cancellation goes on (the
        connection is the caller's to use again)."""
        append = self._store.append_to_stream
        if conn is None:
            return await self._calls.run(append, stream_uuid, expected_version, events)
        return await self._on_conn(
            conn, lambda c: append(stream_uuid, expected_version, events, conn=c)
        )

    async def append_to_streams(
        self,
        appends: Sequence[StreamAppend],
        *,
        conn: CallerConnection | None = None,
    ) -> list[AppendResult]:
        """Awaitable `EventStore.append_to_streams`: append to several streams all or nothing,
        each checked against its own expected version; `conn` as for `append_to_stream`."""
        append = self._store.append_to_streams
        if conn is None:
            return await self._calls.run(append, appends)
        return await self._on_conn(conn, lambda c: append(appends, conn=c))

    async def _on_conn(self, conn: Any, work: Callable[[Any], R]) -> R:
        """Run `work(conn)` on a thread, an AsyncConnection lent to it (see
        `storage.asyncconn`). The call is never abandoned: a cancelled caller waits for it to
        end first, since it runs statements on the caller's connection and in its transaction."""
        if isinstance(conn, psycopg.AsyncConnection):
            conn = BorrowedAsyncConnection(conn, asyncio.get_running_loop())
        future = asyncio.wrap_future(self._calls.submit(work, conn))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            while not future.done():
                try:
                    await asyncio.shield(future)
                except asyncio.CancelledError:
                    continue
                except BaseException:
                    break
            raise

    # Reading, stream info, snapshots: the sync methods, awaitable -------------------------------
    read_stream_forward = _awaitable(EventStore.read_stream_forward)
    read_stream_backward = _awaitable(EventStore.read_stream_backward)
    read_all_streams_forward = _awaitable(EventStore.read_all_streams_forward)
    read_all_streams_backward = _awaitable(EventStore.read_all_streams_backward)
    stream_info = _awaitable(EventStore.stream_info)
    paginate_streams = _awaitable(EventStore.paginate_streams)
    record_snapshot = _awaitable(EventStore.record_snapshot)
    read_snapshot = _awaitable(EventStore.read_snapshot)
    forget_subject = _awaitable(EventStore.forget_subject)
    is_forgotten = _awaitable(EventStore.is_forgotten)
    delete_snapshot = _awaitable(EventStore.delete_snapshot)
    delete_stream = _awaitable(EventStore.delete_stream)
    link_to_stream = _awaitable(EventStore.link_to_stream)
    set_stream_retention = _awaitable(EventStore.set_stream_retention)
    truncate_stream = _awaitable(EventStore.truncate_stream)
    subscriptions = _awaitable(EventStore.subscriptions)
    subscription_info = _awaitable(EventStore.subscription_info)
    parked_events = _awaitable(EventStore.parked_events)
    replay_parked = _awaitable(EventStore.replay_parked)
    metrics = _awaitable(EventStore.metrics)
    archive = _awaitable(EventStore.archive)
    forget_parked = _awaitable(EventStore.forget_parked)

    # Streaming reads: async iterators ----------------------------------------------------------
    stream_forward = _streaming(EventStore.stream_forward)
    stream_backward = _streaming(EventStore.stream_backward)
    stream_all_forward = _streaming(EventStore.stream_all_forward)
    stream_all_backward = _streaming(EventStore.stream_all_backward)

    async def _paged(
        self, open_events: Callable[[], Iterator[RecordedEvent]], size: Any
    ) -> AsyncIterator[RecordedEvent]:
        events = await self._calls.run(open_events)
        while page := await self._calls.run(_take, events, size):
            for event in page:
                yield event

    # Subscriptions ----------------------------------------------------------------------------
    @overload
    async def subscribe_to_stream(
        self,
        stream_uuid: str,
        subscription_name: str,
        start_from: str | int = ...,
        mapper: None = ...,
        max_size: int | None = ...,
        **options: Unpack[SubscribeOptions],
    ) -> AsyncSubscription[RecordedEvent]: ...
    @overload
    async def subscribe_to_stream(
        self,
        stream_uuid: str,
        subscription_name: str,
        start_from: str | int = ...,
        *,
        mapper: Callable[[RecordedEvent], T],
        max_size: int | None = ...,
        **options: Unpack[SubscribeOptions],
    ) -> AsyncSubscription[T]: ...
    @overload
    async def subscribe_to_stream(
        self,
        stream_uuid: str,
        subscription_name: str,
        start_from: str | int,
        mapper: Callable[[RecordedEvent], T],
        max_size: int | None = ...,
        **options: Unpack[SubscribeOptions],
    ) -> AsyncSubscription[T]: ...
    @sub_options.documented(SubscribeOptions)
    async def subscribe_to_stream(
        self,
        stream_uuid: str,
        subscription_name: str,
        start_from: str | int = "origin",
        mapper: Callable[[RecordedEvent], Any] | None = None,
        max_size: int | None = None,
        **options: Unpack[SubscribeOptions],
    ) -> AsyncSubscription[Any]:
        """`EventStore.subscribe_to_stream` without a subscriber: iterate the result.

        start_from (default "origin"): where a new subscription starts: "origin", "current"
            or an int position; delivery starts after it (an existing one resumes after its
            checkpoint).
        mapper (default None): fn(event) applied to each event; acks then take int positions.
        max_size (default None: the store's subscription_max_size): events buffered ahead
            of the acks; beyond it they are caught up from storage later.
        """
        subscribe = functools.partial(
            self._store.subscribe_to_stream,
            stream_uuid,
            subscription_name,
            start_from=start_from,
            mapper=mapper,
            max_size=max_size,
            **options,
        )
        sub: AsyncSubscription[Any] = AsyncSubscription(self, stream_uuid, subscription_name)
        return await self._subscribe(sub, subscribe)

    @overload
    async def subscribe_to_all_streams(
        self,
        subscription_name: str,
        start_from: str | int = ...,
        mapper: None = ...,
        max_size: int | None = ...,
        **options: Unpack[AllStreamsSubscribeOptions],
    ) -> AsyncSubscription[RecordedEvent]: ...
    @overload
    async def subscribe_to_all_streams(
        self,
        subscription_name: str,
        start_from: str | int = ...,
        *,
        mapper: Callable[[RecordedEvent], T],
        max_size: int | None = ...,
        **options: Unpack[AllStreamsSubscribeOptions],
    ) -> AsyncSubscription[T]: ...
    @overload
    async def subscribe_to_all_streams(
        self,
        subscription_name: str,
        start_from: str | int,
        mapper: Callable[[RecordedEvent], T],
        max_size: int | None = ...,
        **options: Unpack[AllStreamsSubscribeOptions],
    ) -> AsyncSubscription[T]: ...
    @sub_options.documented(SubscribeOptions, AllStreamsSubscribeOptions)
    async def subscribe_to_all_streams(
        self,
        subscription_name: str,
        start_from: str | int = "origin",
        mapper: Callable[[RecordedEvent], Any] | None = None,
        max_size: int | None = None,
        **options: Unpack[AllStreamsSubscribeOptions],
    ) -> AsyncSubscription[Any]:
        """`EventStore.subscribe_to_all_streams` without a subscriber: iterate the result
        (with `partitions=N`, as one member of a consumer group).

        start_from (default "origin"): where a new subscription starts: "origin", "current"
            or an int event_id; delivery starts after it (an existing one resumes after its
            checkpoint).
        mapper (default None): fn(event) applied to each event; acks then take int positions.
        max_size (default None: the store's subscription_max_size): events buffered ahead
            of the acks; beyond it they are caught up from storage later.
        """
        subscribe = functools.partial(
            self._store.subscribe_to_all_streams,
            subscription_name,
            start_from=start_from,
            mapper=mapper,
            max_size=max_size,
            **options,
        )
        sub: AsyncSubscription[Any] = AsyncSubscription(self, _ALL, subscription_name)
        return await self._subscribe(sub, subscribe)

    async def _subscribe(
        self, sub: AsyncSubscription[T], subscribe: Callable[[Any], Subscription]
    ) -> AsyncSubscription[T]:
        # Cancelled meanwhile: `sub` is dropped, so its bridge reads as a dead subscriber and
        # a subscription started anyway stops on its next tick (the name is freed).
        handle = await self._calls.run(subscribe, sub.bridge)
        sub._started(handle)
        if self._stopping is not None:  # stopped meanwhile: end it like the others
            sub._close()
        else:
            self._subs.add(sub)
        return sub

    async def ack(
        self,
        subscription: AsyncSubscription[Any] | Subscription,
        acked: Sequence[Any] | RecordedEvent | int,
        *,
        conn: CallerConnection | None = None,
    ) -> None:
        """Acknowledge events of a subscription; same as
        ``await subscription.ack(acked, conn=conn)``. With `conn` (a psycopg `AsyncConnection`
        or `Connection`), the checkpoint is written in that connection's current transaction:
        it moves iff the caller commits (exactly-once projections)."""
        if isinstance(subscription, AsyncSubscription):
            await subscription.ack(acked, conn=conn)
        elif conn is None:
            await self._calls.run(self._store.ack, subscription, acked)
        else:
            ack = self._store.ack
            await self._on_conn(conn, lambda c: ack(subscription, acked, conn=c))

    # Transient subscriptions ------------------------------------------------------------------
    @overload
    async def subscribe(
        self,
        stream_uuid: str,
        *,
        selector: Callable[[RecordedEvent], Any] | None = ...,
        mapper: None = ...,
    ) -> AsyncTransientSubscription[RecordedEvent]: ...
    @overload
    async def subscribe(
        self,
        stream_uuid: str,
        *,
        selector: Callable[[RecordedEvent], Any] | None = ...,
        mapper: Callable[[RecordedEvent], T],
    ) -> AsyncTransientSubscription[T]: ...
    async def subscribe(
        self,
        stream_uuid: str,
        *,
        selector: Callable[[RecordedEvent], Any] | None = None,
        mapper: Callable[[RecordedEvent], Any] | None = None,
    ) -> AsyncTransientSubscription[Any]:
        """`EventStore.subscribe` without a subscriber: iterate the result. Every event of
        `stream_uuid` ("$all": of every stream) committed after this returns, in order, in
        batches; no name, no acks, no checkpoint. End it with ``await store.unsubscribe(sub)``
        or ``await sub.unsubscribe()``."""
        sub: AsyncTransientSubscription[Any] = AsyncTransientSubscription(self, stream_uuid)
        subscribe = functools.partial(
            self._store.subscribe, stream_uuid, selector=selector, mapper=mapper
        )
        await self._subscribe(sub, subscribe)
        return sub

    async def unsubscribe(
        self, handle: AsyncTransientSubscription[Any] | TransientSubscription
    ) -> None:
        """End a transient subscription: an iteration over it ends, and no batch is yielded
        (or told) after this returns."""
        if isinstance(handle, AsyncTransientSubscription):
            await handle.unsubscribe()
        else:
            await self._calls.run(self._store.unsubscribe, handle)

    # Durable subscriptions: the end -----------------------------------------------------------
    async def unsubscribe_from_stream(self, stream_uuid: str, subscription_name: str) -> None:
        """Stop the subscription (checkpoint kept); an iteration over it here ends."""
        self._close_local(stream_uuid, subscription_name)
        await self._calls.run(self._store.unsubscribe_from_stream, stream_uuid, subscription_name)

    async def unsubscribe_from_all_streams(self, subscription_name: str) -> None:
        self._close_local(_ALL, subscription_name)
        await self._calls.run(self._store.unsubscribe_from_all_streams, subscription_name)

    async def delete_subscription(self, stream_uuid: str, subscription_name: str) -> None:
        """Stop the subscription if it runs here and delete its checkpoint."""
        self._close_local(stream_uuid, subscription_name)
        await self._calls.run(self._store.delete_subscription, stream_uuid, subscription_name)

    async def delete_all_streams_subscription(self, subscription_name: str) -> None:
        self._close_local(_ALL, subscription_name)
        await self._calls.run(self._store.delete_all_streams_subscription, subscription_name)

    async def _unsubscribe(self, sub: AsyncSubscription[Any]) -> None:
        self._subs.discard(sub)
        if sub._close():
            handle = sub._handle
            if isinstance(handle, TransientSubscription):
                await self._calls.run(handle.unsubscribe)
                return
            if isinstance(handle, MemberSubscription):  # one competing consumer
                await self._calls.run(handle.unsubscribe)
                return
            unsubscribe = (
                self._store.unsubscribe_from_all_streams
                if sub.stream_uuid == _ALL
                else functools.partial(self._store.unsubscribe_from_stream, sub.stream_uuid)
            )
            await self._calls.run(unsubscribe, sub.subscription_name)

    def _close_local(self, stream_uuid: Any, name: Any) -> None:
        for sub in list(self._subs):
            if isinstance(sub, AsyncTransientSubscription):
                continue
            if sub.stream_uuid == stream_uuid and sub.subscription_name == name:
                self._subs.discard(sub)
                sub._close()

    if not TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any:
            """A public EventStore method without a typed counterpart here yet (added to the
            facade later): awaitable all the same, by the same rule as the others."""
            method = getattr(EventStore, name, None)
            if name.startswith("_") or name in _SPECIAL or not inspect.isfunction(method):
                raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
            return types.MethodType(_awaitable(method), self)
