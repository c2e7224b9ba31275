"""What a subscriber is told, and the handle it acks through (the handles live in
`handles.py`; imported from here as before)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeAlias, runtime_checkable

from typing_extensions import TypeVar

from ..events import RecordedEvent
from .handles import NACK_ACTIONS, Subscription, TransientSubscription

__all__ = [
    "NACK_ACTIONS",
    "Events",
    "ParkedEvent",
    "Subscribed",
    "Subscriber",
    "Subscription",
    "SubscriptionMessage",
    "SubscriptionStopped",
    "TransientSubscription",
]

#: What a batch holds: RecordedEvent, or whatever the subscription's mapper returns.
E = TypeVar("E", default=RecordedEvent)


@dataclass(frozen=True)
class ParkedEvent:
    """An event a subscription gave up on (nack "park", or retries exhausted)."""

    event: RecordedEvent
    reason: str | None
    retries: int
    parked_at: datetime


@dataclass(frozen=True)
class Subscribed:
    """First message to a subscriber: the subscription is live."""

    subscription: Subscription


@dataclass(frozen=True)
class Events(Generic[E]):
    """A batch of events (never empty; one stream only unless `mixed_batches`). Ack them to
    get the next batch (transient subscriptions take no acks).

    `Events` alone means `Events[RecordedEvent]`; a subscription with a mapper delivers
    `Events[T]`, T being what the mapper returns. A type checker cannot know which one a
    `tell` receives at run time: annotate the message (`SubscriptionMessage`, or
    `Events[MyView]` for a mapper) and `isinstance` narrows to it.
    """

    subscription: Subscription
    events: list[E]


@dataclass(frozen=True)
class SubscriptionStopped:
    """Last message to a subscriber whose subscription ended for any reason other than its own
    `unsubscribe_*` or `delete_*` (given up after failures, lock lost for good, store stopped,
    a mapper or the subscriber itself failing). Nothing follows it."""

    subscription: Subscription
    reason: str


#: Everything a subscription without a mapper tells its subscriber: annotate a subscriber's
#: `tell` or `on_receive` parameter with it and `isinstance(message, Events)` gives
#: `Events[RecordedEvent]` (with a mapper: `Subscribed | Events[T] | SubscriptionStopped`).
SubscriptionMessage: TypeAlias = Subscribed | Events[RecordedEvent] | SubscriptionStopped


@runtime_checkable
class Subscriber(Protocol):
    """What `subscribe_*` accepts: a pykka `ActorRef`, or any object with `tell(message)`.

    `tell` is called from the subscription's own actor thread with `Subscribed`, `Events`
    and `SubscriptionStopped` messages; it should return quickly (hand the work to a queue
    or an actor), because the next batch waits for it and for the ack.
    """

    def tell(self, message: Any) -> None:
        """Receive one message; must not block for long."""
