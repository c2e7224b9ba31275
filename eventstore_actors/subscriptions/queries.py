"""What the store tells about its durable subscriptions: where each stands (`subscriptions()`,
`subscription_info`) and the events they parked (`parked_events`, `replay_parked`)."""

from __future__ import annotations

import functools
from typing import Any

import pykka

from ..errors import SubscriptionNotFoundError
from ..runtime import Runtime
from ..storage import checkpoints, parked, reader
from ..validation import check_count, check_name
from . import group as groups
from . import info as sub_info
from .arguments import registry_id
from .inbox import ReplayParked
from .info import SubscriptionInfo
from .messages import ParkedEvent

__all__ = ["Queries"]


class Queries:
    """The subscription queries of one store (any process's subscriptions)."""

    def __init__(self, runtime: Runtime) -> None:
        self._settings = runtime.settings
        self._pool = runtime.pool
        self._registry = runtime.registry

    # The parked list -------------------------------------------------------------------------
    def parked_events(self, subscription_name: Any, stream_uuid: Any) -> list[ParkedEvent]:
        """`EventStore.parked_events` (a consumer group's: every partition's)."""
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

    def replay_parked(self, subscription_name: Any, stream_uuid: Any) -> int:
        """`EventStore.replay_parked`: marked in the database, the holder told here."""
        check_name(subscription_name, "subscription_name")
        check_name(stream_uuid, "stream_uuid")
        names = [subscription_name]
        if stream_uuid == checkpoints.ALL_STREAMS:  # a consumer group's partitions too
            names += self._pool.run(lambda c: groups.row_names(c, subscription_name))
        total = 0
        for name in names:
            mark = functools.partial(parked.mark_replay, stream_uuid=stream_uuid, name=name)
            count = self._pool.run(mark)
            ref = self._registry.peek(registry_id(stream_uuid, name))
            if ref is not None and count:
                try:
                    ref.tell(ReplayParked())
                except pykka.ActorDeadError:
                    pass
            total += int(count)
        return total

    def forget_parked(self, subscription_name: Any, stream_uuid: Any, event_ids: Any) -> int:
        """`EventStore.forget_parked` (a consumer group's: every partition's list)."""
        check_name(subscription_name, "subscription_name")
        check_name(stream_uuid, "stream_uuid")
        ids = None if event_ids is None else _event_ids(event_ids)
        names = [subscription_name]
        if stream_uuid == checkpoints.ALL_STREAMS:  # a consumer group's partitions too
            names += self._pool.run(lambda c: groups.row_names(c, subscription_name))
        total = 0
        for name in names:
            drop = functools.partial(
                parked.discard, stream_uuid=stream_uuid, name=name, event_ids=ids
            )
            total += int(self._pool.run(drop))
        return total

    def subscriptions(self) -> list[SubscriptionInfo]:
        """`EventStore.subscriptions`."""
        schema = self._settings.schema
        return self._pool.run(lambda c: sub_info.load(c, schema))

    def subscription_info(
        self, subscription_name: Any, stream_uuid: Any, partition: Any
    ) -> SubscriptionInfo:
        """`EventStore.subscription_info`."""
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


def _event_ids(event_ids: Any) -> list[int]:
    """`event_ids` as a list of positive ints (TypeError, ValueError before anything is sent)."""
    if isinstance(event_ids, (str, bytes)) or not hasattr(event_ids, "__iter__"):
        raise TypeError("event_ids must be a collection of ints or None")
    ids = list(event_ids)
    return [check_count(event_id, "event_id") for event_id in ids]
