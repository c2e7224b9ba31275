"""The handles a subscriber acks through: small classes with public methods, one per kind.

- `Subscription`: a durable subscription's handle (one subscriber, or a consumer group's
  partition): cumulative acks, also in the caller's transaction, nacks, unsubscribe;
- `MemberSubscription`: a competing consumer's handle (`concurrency_limit > 1`): per-event
  acks, nacks, its own unsubscribe;
- `TransientSubscription`: what `store.subscribe` returns: no acks, an unsubscribe;
- a consumer group's own handle, `group.GroupSubscription`, routes to its partitions'.

A handle checks its arguments, then tells its `Port` (built by the subscriptions service,
see `acks.py`), so that nothing outside reaches into it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from ..events import RecordedEvent
from ..validation import MAX_BIGINT

__all__ = [
    "NACK_ACTIONS",
    "MemberPort",
    "MemberSubscription",
    "Port",
    "Subscription",
    "TransientSubscription",
]

#: What `Subscription.nack` may do with an event.
NACK_ACTIONS = ("retry", "skip", "park")


class Port(Protocol):
    """What a durable subscription's handle tells the subscription (positions checked)."""

    def ack(self, position: int) -> None:
        """A cumulative ack."""

    def ack_in(self, position: int, conn: Any, acked: RecordedEvent | None = None) -> None:
        """A cumulative ack written in the caller's transaction on `conn`; `acked`: the
        event object given (the last of a list), which tells which delivery it acks."""

    def nack(self, position: int, action: str, reason: str | None) -> None:
        """A nack of the event at `position`."""

    def detach(self) -> None:
        """The handle's own unsubscribe."""


class MemberPort(Port, Protocol):
    """A competing consumer's port: per-event acks too."""

    def ack_each(self, positions: list[int]) -> None:
        """Acks of each event at these positions."""


@dataclass(frozen=True, eq=False)
class Subscription:
    """A running subscription as its subscriber sees it: names, and `ack`."""

    stream_uuid: str  # "$all" for an all-streams subscription
    subscription_name: str
    _port: Port | None = field(default=None, repr=False, compare=False)

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
        position = self._position(acked)
        port = self._port
        if port is None:
            raise TypeError("this subscription takes no acks")
        if conn is None:
            port.ack(position)
        else:
            port.ack_in(position, conn, _last_event(acked))

    def nack(
        self, event_or_position: RecordedEvent | int, action: str = "retry", reason: Any = None
    ) -> None:
        """Refuse one event of the batch in flight (the events before it count as acked):
        "retry" delivers it again after `retry_delay` (up to `max_retries` times, then it is
        parked), "skip" counts it as acked, "park" stores it in the parked list (see
        `store.parked_events`) and counts it as acked. Later events wait, so order holds."""
        position = self._nack_position(event_or_position, action, reason)
        if self._port is None:
            raise TypeError("this subscription takes no nacks")
        self._port.nack(position, action, reason)

    def unsubscribe(self) -> None:
        """Competing consumers: stop this subscriber only (its events in flight go to the
        others; the last one leaving ends the subscription, checkpoint kept). Otherwise the
        same as the store's `unsubscribe_from_*`."""
        if self._port is None:
            raise TypeError("this subscription handle cannot unsubscribe itself")
        self._port.detach()

    def _nack_position(self, event_or_position: Any, action: Any, reason: Any) -> int:
        """A nack's arguments checked (ValueError, TypeError): the position it names."""
        if action not in NACK_ACTIONS:
            raise ValueError(f"action must be one of {', '.join(NACK_ACTIONS)}, got {action!r}")
        if reason is not None and not isinstance(reason, str):
            raise TypeError(f"reason must be a str or None, got {type(reason).__qualname__}")
        if isinstance(event_or_position, (list, tuple)):
            raise TypeError("nack takes one event or an int position, not a list")
        return self._position(event_or_position)

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


@dataclass(frozen=True, eq=False)
class MemberSubscription(Subscription):
    """A competing consumer's handle (`concurrency_limit > 1`): acks are per event."""

    def ack(self, acked: Sequence[Any] | RecordedEvent | int, *, conn: Any = None) -> None:
        """Acknowledge each event given: a list acks each event in it, an int the event at
        that position (never in the caller's transaction: that needs concurrency_limit=1)."""
        if conn is not None:
            raise ValueError("acks in a transaction need concurrency_limit=1")
        cast(MemberPort, self._port).ack_each(self._positions(acked))


def _nothing() -> None:
    pass


@dataclass(frozen=True, eq=False)
class TransientSubscription(Subscription):
    """A transient subscription (`store.subscribe`): no name (""), no acks, no checkpoint."""

    _unsubscribe: Callable[[], None] = field(default=_nothing, repr=False, compare=False)

    @classmethod
    def make(cls, stream_uuid: str, unsubscribe: Callable[[], None]) -> TransientSubscription:
        """The handle `store.subscribe` returns (internal: built by the store)."""
        return cls(stream_uuid, "", None, unsubscribe)

    def ack(self, acked: Sequence[Any] | RecordedEvent | int, *, conn: Any = None) -> None:
        """Transient subscriptions take no acks: always TypeError."""
        raise TypeError("a transient subscription takes no acks")

    def unsubscribe(self) -> None:
        """Stop it: nothing more is told to the subscriber once this returns."""
        self._unsubscribe()


def _last_event(acked: Any) -> RecordedEvent | None:
    """The event object an ack names (the last of a list), None for a position."""
    if isinstance(acked, Sequence) and not isinstance(acked, (str, bytes)):
        acked = acked[-1]
    return acked if isinstance(acked, RecordedEvent) else None
