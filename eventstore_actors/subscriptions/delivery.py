"""How a durable subscription hands its events out, as data the one actor reads (`Delivery`).

- "single": one subscriber, batches in order, cumulative acks (`SubscriptionState`);
- "partition": a consumer group's partition, delivered as a single one (its reads and the
  publisher's events are filtered to the partition's streams: `SubscriptionSpec.partition`);
- "competing": competing consumers (`concurrency_limit > 1`), several subscribers of this
  store ("members", each with its own handle) share the events, each holding up to its
  `buffer_size` in flight, acks per event (`ConcurrentState`), optionally keyed by
  `partition_by`.

Transient subscriptions (`store.subscribe`) keep no checkpoint and take no acks: they have
their own small actor (`transient.py`), not this one.

Every subscription keeps its subscribers as members (a single one has exactly one, never
removed: it ends instead), so one delivery path serves all kinds.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from ..events import RecordedEvent
from ..storage import checkpoints
from .concurrent import ConcurrentState
from .messages import Subscription, SubscriptionStopped
from .spec import SubscriptionSpec
from .state import SubscriptionState

__all__ = ["Delivery", "mapped", "subscriber_alive", "tell_stopped"]


@dataclass(frozen=True)
class Delivery:
    """What differs between the kinds of durable subscription, read by the actor."""

    kind: str  # "single", "partition" or "competing"
    limit: int  # most subscribers at once
    partition_by: Callable[[RecordedEvent], Any] | None  # competing consumers' keys

    @classmethod
    def of(cls, spec: SubscriptionSpec) -> Delivery:
        if spec.concurrency_limit > 1:
            return cls("competing", spec.concurrency_limit, spec.partition_by)
        return cls("single" if spec.partition is None else "partition", 1, None)

    @property
    def shared(self) -> bool:
        """Several subscribers share the events, acked one by one; else one subscriber,
        acked cumulatively (also in the caller's transaction), that ends with its tell()."""
        return self.kind == "competing"

    def new_state(
        self,
        spec: SubscriptionSpec,
        checkpoint: int,
        members: dict[int, int],
        key: Callable[[RecordedEvent], Hashable | None],
    ) -> SubscriptionState[RecordedEvent] | ConcurrentState[RecordedEvent]:
        """A fresh state machine after the stored `checkpoint` (`members`: their
        buffer_size, by member number)."""
        all_streams = spec.stream_uuid == checkpoints.ALL_STREAMS
        if self.shared:
            state: ConcurrentState[RecordedEvent] = ConcurrentState(
                checkpoint,
                spec.max_size,
                position=_event_id if all_streams else _event_number,
                key=None if self.partition_by is None else key,
            )
            for member, buffer_size in members.items():
                state.add_member(member, buffer_size)
            return state
        if all_streams:
            return SubscriptionState(
                checkpoint,
                spec.max_size,
                position=_event_id,
                stream_key=_stream_uuid,
                max_batch=spec.max_batch,
                mixed=spec.mixed,
            )
        # links: batches hold the events of the stream subscribed to, from any stream
        return SubscriptionState(
            checkpoint,
            spec.max_size,
            position=_event_number,
            stream_key=_one_stream,
            max_batch=spec.max_batch,
        )


def mapped(
    mapper: Callable[[RecordedEvent], Any] | None, events: list[RecordedEvent]
) -> tuple[list[Any], str | None]:
    """What to send for `events` (the mapper's results, if any), and why it stopped early:
    a mapper failing on an event gives the results before it."""
    if mapper is None:
        return events, None
    payload: list[Any] = []
    for event in events:
        try:
            payload.append(mapper(event))
        except Exception as exc:
            return payload, f"the mapper failed on event {event.event_id}: {exc!r}"
    return payload, None


def tell_stopped(subscriber: Any, handle: Subscription, reason: str) -> None:
    """Tell `SubscriptionStopped`; a subscriber that is gone or fails is past caring."""
    try:
        subscriber.tell(SubscriptionStopped(handle, reason))
    except Exception:  # includes pykka.ActorDeadError
        pass


def subscriber_alive(subscriber: Any) -> bool:
    is_alive = getattr(subscriber, "is_alive", None)
    return not callable(is_alive) or bool(is_alive())


def _event_id(event: RecordedEvent) -> int:
    return event.event_id


def _event_number(event: RecordedEvent) -> int:
    return event.event_number


def _stream_uuid(event: RecordedEvent) -> str:
    return event.stream_uuid


def _one_stream(event: RecordedEvent) -> str:
    return ""
