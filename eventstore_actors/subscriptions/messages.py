"""What a subscriber is told, and the handle it acks through."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Protocol, TypeAlias, runtime_checkable

from typing_extensions import TypeVar

from ..events import RecordedEvent
from ..validation import MAX_BIGINT

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


@dataclass(frozen=True, eq=False)
class Subscription:
    """A running subscription as its subscriber sees it: names, and `ack`."""

    stream_uuid: str  # "$all" for an all-streams subscription
    subscription_name: str
    _ack: Callable[[int], None] = field(repr=False, compare=False)
    #: Writes an ack in the caller's transaction (see `ack(..., conn=)`).
    _ack_in: Callable[[int, Any], None] | None = field(default=None, repr=False, compare=False)
    #: Tells a nack (position, action, reason) to the subscription.
    _nack: Callable[[int, str, str | None], None] | None = field(
        default=None, repr=False, compare=False, kw_only=True
    )
    #: Competing consumers: per-event acks (positions), and the unsubscribe of this handle.
    _ack_each: Callable[[list[int]], None] | None = field(
        default=None, repr=False, compare=False, kw_only=True
    )
    _detach: Callable[[], None] | None = field(
        default=None, repr=False, compare=False, kw_only=True
    )

    @property
    def all_streams(self) -> bool:
        """Whether this is an all-streams subscription (positions are event_ids)."""
        return self.stream_uuid == "$all"

    def position_of(self, event: RecordedEvent) -> int:
        """An event's position in this subscription: event_id for all streams, event_number
        for one stream (its stream_version, or a linked event's position in that stream)."""
        return event.event_id if self.all_streams else event.event_number

    def ack(self, acked: Sequence[Any] | RecordedEvent | int, *, conn: Any = None) -> None:
        """Acknowledge everything up to and including `acked` (cumulative); with competing
        consumers (`concurrency_limit > 1`) each event given: a list acks each event in it,
        an int the event at that position.

        With `conn` (an open psycopg 3 connection to the store's database), the checkpoint is
        written in that connection's current transaction: it moves iff the caller commits, so
        a projection that updates its tables and acks in one transaction applies each event
        exactly once. The store never writes such a position itself (positions no such ack
        covers, events a filter left out, it stores once the acks before them are committed).
        The ack of a replayed parked event takes it off the parked list in that transaction.
        """
        if self._ack_each is not None:
            if conn is not None:
                raise ValueError("acks in a transaction need concurrency_limit=1")
            self._ack_each(self._positions(acked))
            return
        position = self._position(acked)
        if conn is None:
            self._ack(position)
        elif self._ack_in is None:
            raise TypeError("this subscription takes no acks in a transaction")
        else:
            self._ack_in(position, conn)

    def nack(
        self, event_or_position: RecordedEvent | int, action: str = "retry", reason: Any = None
    ) -> None:
        """Refuse one event of the batch in flight (the events before it count as acked):
        "retry" delivers it again after `retry_delay` (up to `max_retries` times, then it is
        parked), "skip" counts it as acked, "park" stores it in the parked list (see
        `store.parked_events`) and counts it as acked. Later events wait, so order holds."""
        if action not in NACK_ACTIONS:
            raise ValueError(f"action must be one of {', '.join(NACK_ACTIONS)}, got {action!r}")
        if reason is not None and not isinstance(reason, str):
            raise TypeError(f"reason must be a str or None, got {type(reason).__qualname__}")
        if isinstance(event_or_position, (list, tuple)):
            raise TypeError("nack takes one event or an int position, not a list")
        position = self._position(event_or_position)
        if self._nack is None:
            raise TypeError("this subscription takes no nacks")
        self._nack(position, action, reason)

    def unsubscribe(self) -> None:
        """Competing consumers: stop this subscriber only (its events in flight go to the
        others; the last one leaving ends the subscription, checkpoint kept). Otherwise the
        same as the store's `unsubscribe_from_*`."""
        if self._detach is None:
            raise TypeError("this subscription handle cannot unsubscribe itself")
        self._detach()

    def _positions(self, acked: Any) -> list[int]:
        if isinstance(acked, Sequence) and not isinstance(acked, (str, bytes)):
            if not acked:
                raise ValueError("ack of an empty list")
            return [self._position(item) for item in acked]
        return [self._position(acked)]

    def _position(self, acked: Any) -> int:
        if isinstance(acked, bool):
            raise TypeError("ack takes events, an event or an int position, not a bool")
        if isinstance(acked, int):
            if acked < 0:
                raise ValueError(f"ack position must be >= 0, got {acked}")
            if acked > MAX_BIGINT:
                raise ValueError(f"ack position is too large: {acked} (at most {MAX_BIGINT})")
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


def _no_ack(position: int) -> None:
    raise TypeError("a transient subscription takes no acks")


def _nothing() -> None:
    pass


@dataclass(frozen=True, eq=False)
class TransientSubscription(Subscription):
    """A transient subscription (`store.subscribe`): no name (""), no acks, no checkpoint."""

    _unsubscribe: Callable[[], None] = field(default=_nothing, repr=False, compare=False)

    @classmethod
    def make(cls, stream_uuid: str, unsubscribe: Callable[[], None]) -> TransientSubscription:
        """The handle `store.subscribe` returns (internal: built by the store)."""
        return cls(stream_uuid, "", _no_ack, None, unsubscribe)

    def ack(self, acked: Sequence[Any] | RecordedEvent | int, *, conn: Any = None) -> None:
        """Transient subscriptions take no acks: always TypeError."""
        raise TypeError("a transient subscription takes no acks")

    def unsubscribe(self) -> None:
        """Stop it: nothing more is told to the subscriber once this returns."""
        self._unsubscribe()


#: What `Subscription.nack` may do with an event.
NACK_ACTIONS = ("retry", "skip", "park")


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
