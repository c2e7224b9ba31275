"""asyncio API: `AsyncEventStore`, every `EventStore` method awaitable, on the same actors.

store = await AsyncEventStore.start(dsn)
await store.append_to_stream("order-1", NO_STREAM, [EventData(...)])
async for event in store.stream_forward("order-1"): ...
sub = await store.subscribe_to_all_streams("projection")
async for events in sub:
    ...
    await sub.ack(events)
live = await store.subscribe("$all")      # transient: events committed from now on, no acks
async for events in live: ...
"""

from __future__ import annotations

from .store import AsyncEventStore
from .subscription import (
    AsyncSubscription,
    AsyncTransientSubscription,
    SubscriptionStoppedError,
)

__all__ = [
    "AsyncEventStore",
    "AsyncSubscription",
    "AsyncTransientSubscription",
    "SubscriptionStoppedError",
]
