"""Durable subscriptions as async iterators of batches.

The subscription actor is the sync one, unchanged: what it tells its subscriber goes to a
`_Bridge`, whose `tell()` (called on the actor's thread) hands the message to the event loop
with ``call_soon_threadsafe``. Back-pressure is the actor's: it sends no batch until the
previous ones are acked, so the iteration simply waits; the queue never holds more than the
actor may send.

How an iteration ends:
- `unsubscribe()` (or the store's `unsubscribe_*`, `delete_*`, `stop()`): it ends (a running
  ``async for`` leaves its loop), batches not yet taken are dropped, unacked events are
  delivered again after a resubscribe;
- any other end (the subscription was given up after failures, lost its lock for good, met an
  event it cannot decode, a mapper failed): `SubscriptionStoppedError` with the reason, so
  that a projection task does not stop silently.

Dropping every reference to an `AsyncSubscription` (or closing its loop) counts as its
subscriber dying: the subscription stops within a second, its checkpoint kept.

A transient subscription (`AsyncEventStore.subscribe`) is iterated the same way, without
acks: an `AsyncTransientSubscription`. It has no back-pressure (nothing waits for an ack), so
its batches queue here; a consumer that falls more than `subscription_max_size` batches behind
ends it with `SubscriptionStoppedError`, as a sync transient subscriber's full inbox does.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

import psycopg

from ..config import Settings
from ..errors import EventStoreError
from ..events import RecordedEvent
from ..lifecycle.encryption import keyring_of
from ..lifecycle.handout import forgotten_since
from ..subscriptions.messages import (
    Events,
    Subscription,
    SubscriptionStopped,
    TransientSubscription,
)

__all__ = ["AsyncSubscription", "AsyncTransientSubscription", "SubscriptionStoppedError"]

T = TypeVar("T")
R = TypeVar("R")


class _Owner(Protocol):
    """What a subscription asks of the store that made it (`AsyncEventStore`): run an ack on a
    connection, and end the subscription. Declared here so this module need not import the
    store's."""

    async def _on_conn(self, conn: Any, work: Callable[[Any], R]) -> R: ...

    async def _unsubscribe(self, sub: AsyncSubscription[Any]) -> None: ...

    @property
    def settings(self) -> Settings: ...


#: Wakes an iteration waiting for a message: the subscription was closed on our side.
_CLOSED = object()


class SubscriptionStoppedError(EventStoreError):
    """An async subscription ended for another reason than its own unsubscribe or delete or
    the store's stop (see `SubscriptionStopped`); the iteration over it raises this."""

    def __init__(self, subscription: AsyncSubscription[Any], reason: str) -> None:
        what = (
            "transient subscription"
            if isinstance(subscription, AsyncTransientSubscription)
            else f"subscription {subscription.subscription_name!r}"
        )
        super().__init__(f"{what} on {subscription.stream_uuid!r} stopped: {reason}")
        self.subscription = subscription
        self.reason = reason


class _Bridge:
    """The subscriber object the subscription actor tells (any thread)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[Any],
        owner: AsyncSubscription[Any],
    ) -> None:
        self._loop = loop
        self._queue = queue
        self._owner = weakref.ref(owner)
        self.ended = False  # told SubscriptionStopped: the actor is gone

    def tell(self, message: Any) -> None:
        if isinstance(message, SubscriptionStopped):
            self.ended = True
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, message)
        except RuntimeError:  # the loop is closed: nobody will read it
            pass

    def is_alive(self) -> bool:
        """Checked by the actor on its ticks: False once the owner is gone or closed, or its
        loop is closed; the subscription then stops (checkpoint kept, name freed)."""
        owner = self._owner()
        return owner is not None and not owner.closed and not self._loop.is_closed()


class _TransientBridge(_Bridge):
    """A transient subscription's subscriber: it counts the batches not yet taken, which the
    transient actor reads as its subscriber's inbox (`actor_inbox.qsize()`)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[Any],
        owner: AsyncSubscription[Any],
    ) -> None:
        super().__init__(loop, queue, owner)
        self._mutex = threading.Lock()
        self._pending = 0

    def tell(self, message: Any) -> None:
        with self._mutex:
            self._pending += 1
        super().tell(message)

    def taken(self) -> None:
        with self._mutex:
            self._pending -= 1

    @property
    def actor_inbox(self) -> _TransientBridge:
        return self

    def qsize(self) -> int:
        with self._mutex:
            return self._pending


class AsyncSubscription(Generic[T]):
    """``async for events in sub:`` yields each batch (a non-empty list of `RecordedEvent`,
    or of what the mapper returned); ``await sub.ack(events)`` acknowledges them and lets
    the next batch come. ``async with sub:`` unsubscribes on exit."""

    def __init__(self, store: _Owner, stream_uuid: str, subscription_name: str) -> None:
        self.stream_uuid = stream_uuid  # "$all" for an all-streams subscription
        self.subscription_name = subscription_name
        self._store = store
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._bridge = self._make_bridge(asyncio.get_running_loop(), self._queue)
        self._handle: Subscription | None = None
        self._closed = False  # our side ended it: iterations end quietly
        self._stopped: str | None = None  # the reason of a SubscriptionStopped
        self._keyring = keyring_of(store.settings.serializer)  # see `__anext__`

    def _make_bridge(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any]) -> _Bridge:
        return _Bridge(loop, queue, self)

    def __repr__(self) -> str:
        return (
            f"AsyncSubscription(stream_uuid={self.stream_uuid!r}, "
            f"subscription_name={self.subscription_name!r})"
        )

    @property
    def subscription(self) -> Subscription:
        """The sync handle (what `Events.subscription` and `EventStore.ack` know)."""
        if self._handle is None:
            raise RuntimeError("the subscription has not started")
        return self._handle

    @property
    def closed(self) -> bool:
        """Whether it was unsubscribed, deleted or its store stopped, from this side."""
        return self._closed

    @property
    def stopped_reason(self) -> str | None:
        """Why the subscription stopped on its own (see `SubscriptionStoppedError`), or None."""
        return self._stopped

    # Iteration ----------------------------------------------------------------------------------
    def __aiter__(self) -> AsyncSubscription[T]:
        return self

    async def __anext__(self) -> list[T]:
        while not self._closed and self._stopped is None:
            message = await self._queue.get()
            self._took(message)
            if self._closed:
                break
            if isinstance(message, Events):
                # They may have waited in this queue: a subject forgotten since they were
                # told is not handed out in clear (see handout.forgotten_since).
                events: list[T] = message.events
                if self._keyring is not None and all(isinstance(e, RecordedEvent) for e in events):
                    events = forgotten_since(events, self._keyring)  # type: ignore[arg-type,assignment]
                return events
            if isinstance(message, SubscriptionStopped):
                self._stopped = message.reason
                raise SubscriptionStoppedError(self, message.reason)
            # Subscribed (told before the subscribe returned) and _CLOSED: nothing to yield.
        raise StopAsyncIteration

    def _took(self, message: Any) -> None:
        """A message left the queue (what the bridge counts, for a transient subscription)."""

    # Acks and the end ----------------------------------------------------------------------------
    async def ack(
        self,
        acked: Sequence[Any] | RecordedEvent | int,
        *,
        conn: psycopg.AsyncConnection[Any] | psycopg.Connection[Any] | None = None,
    ) -> None:
        """Acknowledge everything up to and including `acked` (events, an event, or an int
        position: event_id for all streams, stream_version for one stream; with a mapper,
        ints). Plain acks only queue a message: they run on the loop, without a thread.

        With `conn` (a psycopg `AsyncConnection`, or a sync `Connection`, to the store's
        database), the checkpoint is written in that connection's current transaction: it
        moves iff the caller commits, so a projection that updates its tables and acks in
        one transaction applies each event exactly once."""
        if conn is None:
            self.subscription.ack(acked)
        else:
            ack = self.subscription.ack
            await self._store._on_conn(conn, lambda c: ack(acked, conn=c))

    async def nack(
        self, event_or_position: RecordedEvent | int, action: str = "retry", reason: Any = None
    ) -> None:
        """Refuse one event of the batch in flight ("retry", "skip" or "park"), as
        `Subscription.nack`; it only queues a message, on the loop."""
        self.subscription.nack(event_or_position, action, reason)

    async def unsubscribe(self) -> None:
        """Stop the subscription (checkpoint kept): a running ``async for`` over it ends, and
        no batch is yielded after this returns."""
        await self._store._unsubscribe(self)

    def _started(self, handle: Subscription) -> None:
        self._handle = handle

    def _close(self) -> bool:
        """End iterations now (on the loop). Whether the actor may still run (not closed or
        stopped before)."""
        if self._closed:
            return False
        self._closed = True
        self._queue.put_nowait(_CLOSED)
        return self._stopped is None and not self._bridge.ended

    @property
    def bridge(self) -> _Bridge:
        return self._bridge

    async def __aenter__(self) -> AsyncSubscription[T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.unsubscribe()


class AsyncTransientSubscription(AsyncSubscription[T]):
    """A transient subscription (`AsyncEventStore.subscribe`): ``async for events in sub:``
    yields each batch of events committed after the subscribe (a non-empty list of
    `RecordedEvent`, or of what the mapper returned); no name, no acks, no checkpoint.
    ``await sub.unsubscribe()`` (or ``async with sub:``) ends it: no batch is yielded after
    that returns. A selector or mapper that fails, or a consumer that falls behind, ends the
    iteration with `SubscriptionStoppedError`."""

    def __init__(self, store: _Owner, stream_uuid: str) -> None:
        super().__init__(store, stream_uuid, "")

    def _make_bridge(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any]) -> _Bridge:
        return _TransientBridge(loop, queue, self)

    def __repr__(self) -> str:
        return f"AsyncTransientSubscription(stream_uuid={self.stream_uuid!r})"

    @property
    def subscription(self) -> TransientSubscription:
        """The sync handle (what `Events.subscription` is)."""
        handle = super().subscription
        assert isinstance(handle, TransientSubscription)
        return handle

    def _took(self, message: Any) -> None:
        if message is not _CLOSED:
            bridge = self._bridge
            assert isinstance(bridge, _TransientBridge)
            bridge.taken()

    async def ack(self, acked: Any, *, conn: Any = None) -> None:
        """Transient subscriptions take no acks: always TypeError."""
        raise TypeError("a transient subscription takes no acks")

    async def nack(
        self, event_or_position: RecordedEvent | int, action: str = "retry", reason: Any = None
    ) -> None:
        """Transient subscriptions take no nacks: always TypeError."""
        raise TypeError("a transient subscription takes no nacks")

    async def unsubscribe(self) -> None:
        """End it: a running ``async for`` over it ends, and no batch is yielded after this
        returns."""
        await self._store._unsubscribe(self)

    async def __aenter__(self) -> AsyncTransientSubscription[T]:
        return self
