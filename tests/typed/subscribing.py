"""Subscribing, typed: every subscribe option in the sync and asyncio APIs, transient
subscriptions, conn= with an AsyncConnection, and what a batch holds. Checked with
`mypy --strict` by tests/project/test_typing.py, which also reads the `reveal_type` notes:
a batch is
`list[RecordedEvent]` unless a mapper says otherwise, also after `isinstance(message, Events)`
on a `SubscriptionMessage`, and `Events` alone means `Events[RecordedEvent]`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import reveal_type

import psycopg

from eventstore_actors import (
    EventData,
    Events,
    EventStore,
    RecordedEvent,
    Subscriber,
    SubscriptionMessage,
)
from eventstore_actors.aio import AsyncEventStore


class Projection:
    """The subscriber of docs/getting-started.md: `message.events` holds RecordedEvent."""

    def tell(self, message: SubscriptionMessage) -> None:
        if isinstance(message, Events):
            for event in message.events:
                reveal_type(event)  # R1
            message.subscription.ack(message.events)


def batch(message: Events) -> None:
    reveal_type(message.events)  # R2


def sync_options(store: EventStore, subscriber: Subscriber) -> None:
    store.subscribe_to_stream(
        "s",
        "one",
        subscriber,
        "origin",
        None,
        100,
        standby=False,
        max_batch=10,
        selector=lambda e: e.event_type == "x",
        event_types=["x"],
        checkpoint_threshold=10,
        checkpoint_after=1.0,
        max_retries=3,
        retry_delay=0.5,
        concurrency_limit=2,
        partition_by=lambda e: e.stream_uuid,
        buffer_size=4,
    )
    store.subscribe_to_all_streams(
        "all",
        subscriber,
        start_from="current",
        mixed_batches=True,
        stream_prefix="order-",
        partitions=None,
        max_batch=500,
    )


async def async_options(store: AsyncEventStore, conn: psycopg.AsyncConnection[object]) -> None:
    sub = await store.subscribe_to_all_streams(
        "all", start_from=0, partitions=4, event_types=("x",), checkpoint_after=2.0
    )
    async for events in sub:
        reveal_type(events)  # R3
        await sub.ack(events, conn=conn)
    mapped = await store.subscribe_to_stream("s", "one", mapper=lambda e: e.event_id, standby=True)
    async for numbers in mapped:
        reveal_type(numbers)  # R4
        await mapped.ack(numbers[-1])
    live = await store.subscribe("$all", selector=lambda e: e.stream_uuid.startswith("a"))
    async for fresh in live:
        reveal_type(fresh)  # R5
    await store.unsubscribe(live)
    await store.append_to_stream("s", 0, [EventData(data={"a": 1})], conn=conn)
    reveal_type(store.stream_all_forward())  # R6


def read_all(store: AsyncEventStore) -> AsyncIterator[RecordedEvent]:
    return store.stream_forward("s")
