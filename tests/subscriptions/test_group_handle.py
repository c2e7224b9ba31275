"""Acks and nacks through a consumer group's own handle (what `subscribe_to_all_streams(...,
partitions=N)` returns): checked as a plain subscription's handle checks them (API "Nack,
retry, park": another action is a ValueError), then routed to the partition that sent the
event. An int position must name what was sent: for an ack the last event of a batch (docs:
scale-out.md), for a nack an event of the batch in flight; any other is a ValueError, never
a silent no-op that leaves the partition waiting for an ack forever.
"""

from __future__ import annotations

import pytest
from support import QueueSubscriber, events, wait_until

from eventstore_actors import EventStore
from eventstore_actors.storage.reader import partition_of


def _one_batch(sub: QueueSubscriber) -> list[int]:
    sub.subscribed()
    return [e.event_id for e in sub.batch()]


def test_an_int_nack_through_the_groups_handle_parks_the_event(store: EventStore) -> None:
    store.append_to_stream("one", 0, events(3))  # one stream: one partition, one batch
    sub = QueueSubscriber()
    handle = store.subscribe_to_all_streams("g", sub, partitions=2)
    assert _one_batch(sub) == [1, 2, 3]
    with pytest.raises(ValueError, match="action must be one of retry, skip, park"):
        handle.nack(1, "bogus")
    with pytest.raises(TypeError, match="reason must be a str"):
        handle.nack(1, "park", 5)
    with pytest.raises(TypeError, match="not a list"):
        handle.nack([1], "park")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nack position 7 is not an event"):
        handle.nack(7, "park", "bad")  # never sent
    handle.nack(1, "park", "bad")
    wait_until(lambda: store.parked_events("g"), what="the event parked")
    assert [(p.event.event_id, p.reason) for p in store.parked_events("g")] == [(1, "bad")]
    assert [e.event_id for e in sub.batch()] == [2, 3]  # the events after it, again


def test_an_int_ack_through_the_groups_handle_must_end_a_batch(store: EventStore) -> None:
    store.append_to_stream("one", 0, events(3))
    sub = QueueSubscriber()
    handle = store.subscribe_to_all_streams("g", sub, partitions=2)
    assert _one_batch(sub) == [1, 2, 3]
    with pytest.raises(ValueError, match="ack position 2 is not the last event of a batch"):
        handle.ack(2)
    with pytest.raises(ValueError, match="ack position must be >= 0"):
        handle.ack(-1)
    with pytest.raises(TypeError):
        handle.ack(True)
    handle.ack(3)  # the batch's end: routed to its partition
    store.append_to_stream("one", 3, events(1, 4))
    assert [e.event_id for e in sub.batch()] == [4]
    handle.ack(4)
    partition = partition_of("one", 2)

    def acked() -> bool:
        return store.subscription_info("g", partition=partition).checkpoint == 4

    wait_until(acked, what="the checkpoint at 4")


def test_acks_of_a_partition_handed_over_are_not_errors(store: EventStore) -> None:
    store.append_to_stream("one", 0, events(2))
    sub = QueueSubscriber()
    handle = store.subscribe_to_all_streams("g", sub, partitions=2)
    assert _one_batch(sub) == [1, 2]
    store.unsubscribe_from_all_streams("g")  # its partitions stopped: acks go nowhere
    handle.ack(2)
    handle.nack(1, "skip")
    with pytest.raises(ValueError, match="ack position 1 is not the last event"):
        handle.ack(1)
