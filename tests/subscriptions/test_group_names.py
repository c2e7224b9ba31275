"""A consumer group and a plain all-streams subscription never share a name.

API "Subscriptions": names are unique per all-streams across every process sharing the
database; "Scale-out": only members with the same `partitions=N` share a name, and a group of
another N is refused with ValueError (delete it first). A plain subscription under a group's
name, or a group under a plain subscription's name, is refused the same way: whichever comes
second, live or idle, until the first is deleted; and two of them created at the same moment
in two store instances are never both accepted.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

import pytest
from support import QueueSubscriber, events

from eventstore_actors import Events, EventStore, Subscribed

GROUP = "subscribe with partitions=4, or delete it first"
PLAIN = "an all-streams subscription without partitions"


def test_a_plain_subscription_under_a_live_groups_name_is_refused(
    make_store: Callable[..., EventStore],
) -> None:
    a, b = make_store(), make_store()
    for i in range(6):
        a.append_to_stream(f"s{i}", 0, events(1))
    member = QueueSubscriber()
    a.subscribe_to_all_streams("proj", member, partitions=4)
    plain = QueueSubscriber()
    for store in (b, a):  # another store instance, and the member's own
        for standby in (False, True):
            with pytest.raises(ValueError, match=GROUP):
                store.subscribe_to_all_streams("proj", plain, standby=standby)
    ids: list[int] = []
    while len(ids) < 6:
        message = member.next()
        if isinstance(message, Events):
            ids.extend(e.event_id for e in message.events)
            message.subscription.ack(message.events)
    assert sorted(ids) == list(range(1, 7))
    plain.nothing(0.5)  # told nothing: a subscribe that raises tells nothing
    with pytest.raises(ValueError, match="consumer group: pass partition="):
        b.subscription_info("proj")
    assert {r.partition for r in b.subscriptions()} == {0, 1, 2, 3}


def test_a_group_under_a_live_plain_subscriptions_name_is_refused(
    make_store: Callable[..., EventStore],
) -> None:
    a, b = make_store(), make_store()
    a.append_to_stream("s", 0, events(2))
    plain = QueueSubscriber()
    handle = b.subscribe_to_all_streams("proj", plain)
    assert isinstance(plain.next(), Subscribed)
    member = QueueSubscriber()
    for store in (a, b):
        with pytest.raises(ValueError, match=PLAIN):
            store.subscribe_to_all_streams("proj", member, partitions=2)
    assert [e.event_id for e in plain.collect(handle, 2)] == [1, 2]
    member.nothing(0.5)
    assert [(r.subscription_name, r.partition) for r in a.subscriptions()] == [("proj", None)]
    assert a.subscription_info("proj").checkpoint in (0, 2)


def test_an_idle_row_keeps_its_kind_until_it_is_deleted(store: EventStore) -> None:
    """A plain subscription unsubscribed (its row kept, to resume) still owns the name: a
    group under it is refused until `delete_all_streams_subscription`; and the other way."""
    store.append_to_stream("s", 0, events(1))
    store.subscribe_to_all_streams("proj", QueueSubscriber())
    store.unsubscribe_from_all_streams("proj")
    with pytest.raises(ValueError, match=PLAIN):
        store.subscribe_to_all_streams("proj", QueueSubscriber(), partitions=2)
    store.delete_all_streams_subscription("proj")
    member = QueueSubscriber()
    store.subscribe_to_all_streams("proj", member, partitions=2)
    assert isinstance(member.next(), Subscribed)
    store.unsubscribe_from_all_streams("proj")
    with pytest.raises(ValueError, match="consumer group of 2 partitions"):
        store.subscribe_to_all_streams("proj", QueueSubscriber(), standby=True)
    store.delete_all_streams_subscription("proj")
    plain = QueueSubscriber()
    store.subscribe_to_all_streams("proj", plain)
    assert isinstance(plain.next(), Subscribed)
    assert [(r.partition, r.active) for r in store.subscriptions()] == [(None, True)]


def _at_once(joins: dict[str, Callable[[], object]]) -> dict[str, Any]:
    """Run the `joins` on threads released together: "accepted" or the exception, by key."""
    barrier = threading.Barrier(len(joins))
    outcome: dict[str, Any] = {}

    def run(key: str, join: Callable[[], object]) -> None:
        barrier.wait()
        try:
            join()
            outcome[key] = "accepted"
        except Exception as exc:  # the refusal is the result
            outcome[key] = exc

    threads = [threading.Thread(target=run, args=item) for item in joins.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return outcome


def test_a_group_and_a_plain_subscription_subscribing_at_once_are_never_both_accepted(
    make_store: Callable[..., EventStore],
) -> None:
    a, b = make_store(), make_store()
    a.append_to_stream("s", 0, events(1))
    for round_ in range(10):
        name = f"race{round_}"
        outcome = _at_once(
            {
                "group": functools.partial(
                    a.subscribe_to_all_streams, name, QueueSubscriber(), partitions=3
                ),
                "plain": functools.partial(b.subscribe_to_all_streams, name, QueueSubscriber()),
            }
        )
        accepted = sorted(k for k, v in outcome.items() if v == "accepted")
        refused = [v for v in outcome.values() if v != "accepted"]
        assert len(accepted) == 1, (round_, outcome)
        assert len(refused) == 1 and isinstance(refused[0], ValueError), outcome
        kinds = {r.partition is None for r in a.subscriptions() if r.subscription_name == name}
        assert kinds == {accepted == ["plain"]}
