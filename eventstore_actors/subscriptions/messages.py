"""What a subscriber is told, and the handle it acks through."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..events import RecordedEvent

__all__ = ["Events", "Subscribed", "Subscription", "SubscriptionStopped"]


@dataclass(frozen=True, eq=False)
class Subscription:
    """A running subscription as its subscriber sees it: names, and `ack`."""

    stream_uuid: str  # "$all" for an all-streams subscription
    subscription_name: str
    _ack: Callable[[int], None] = field(repr=False, compare=False)

    @property
    def all_streams(self) -> bool:
        return self.stream_uuid == "$all"

    def position_of(self, event: RecordedEvent) -> int:
        """An event's position in this subscription: event_id for all streams, event_number
        for one stream (its stream_version, or a linked event's position in that stream)."""
        return event.event_id if self.all_streams else event.event_number

    def ack(self, acked: Sequence[Any] | RecordedEvent | int) -> None:
        """Acknowledge everything up to and including `acked` (cumulative)."""
        self._ack(self._position(acked))

    def _position(self, acked: Any) -> int:
        if isinstance(acked, bool):
            raise TypeError("ack takes events, an event or an int position, not a bool")
        if isinstance(acked, int):
            if acked < 0:
                raise ValueError(f"ack position must be >= 0, got {acked}")
            return acked
        if isinstance(acked, RecordedEvent):
            return self.position_of(acked)
        if isinstance(acked, Sequence) and not isinstance(acked, (str, bytes)):
            if not acked:
                raise ValueError("ack of an empty list")
            return self._position(acked[-1])
        raise TypeError(
            "ack takes a list of events, a RecordedEvent or an int position "
            f"(with a mapper, use int positions), got {type(acked).__qualname__}"
        )


@dataclass(frozen=True)
class Subscribed:
    """First message to a subscriber: the subscription is live."""

    subscription: Subscription


@dataclass(frozen=True)
class Events:
    """A batch of events (never empty; one stream only). Ack them to get the next batch."""

    subscription: Subscription
    events: list[Any]


@dataclass(frozen=True)
class SubscriptionStopped:
    """Last message to a subscriber whose subscription ended for any reason other than its own
    `unsubscribe_*` or `delete_*` (given up after failures, lock lost for good, store stopped,
    a mapper or the subscriber itself failing). Nothing follows it."""

    subscription: Subscription
    reason: str
