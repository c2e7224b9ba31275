"""What the handles, the service and the actor itself tell a subscription's actor.

Kept apart from the actor so that the handles (`acks`) and the service import the messages
without the actor's machinery.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .messages import Subscription

__all__ = ["Ack", "Attach", "Detach", "Nack", "Pump", "ReplayParked", "Resync"]


@dataclass(frozen=True)
class Ack:
    """A cumulative ack from the subscriber holding `subscription` (a handle from an earlier
    subscribe of the same name is ignored). `in_transaction`: the caller wrote the checkpoint
    in its own transaction; the actor only lets delivery go on and never writes it itself."""

    position: int
    subscription: Subscription
    in_transaction: bool = False
    each: tuple[int, ...] = ()  # competing consumers: per-event acks (position is the last)


@dataclass(frozen=True)
class Nack:
    """A nack from the subscriber holding `subscription` (see `Subscription.nack`)."""

    position: int
    action: str
    reason: str | None
    subscription: Subscription


@dataclass(frozen=True)
class Resync:
    """An ack in a transaction found the stored checkpoint at `stored`, beyond this run's
    (another holder acked those events during a take-over, or the subscriber acked an
    earlier copy of them): go on after it. `latest`: the refused ack named the batch in
    flight (`Control.delivery_of`), whose subscriber rolled back: it is told again even when
    the stored checkpoint is no further than this run's own."""

    stored: int
    subscription: Subscription
    latest: bool = False


@dataclass(frozen=True)
class ReplayParked:
    """`replay_parked` marked this subscription's parked events: load them now."""


@dataclass(frozen=True)
class Attach:
    """Asked by a subscribe of the name in this store: add a member (competing consumers).
    Replies the handle, "full" (the limit is reached, or the subscription takes one
    subscriber), "dead" (its tell failed) or None (the subscription is ending)."""

    subscriber: Any
    handle: Subscription
    buffer_size: int


@dataclass(frozen=True)
class Detach:
    """The member with this handle unsubscribed."""

    handle: Subscription


@dataclass(frozen=True)
class Pump:
    """Told by the actor to itself: deliver or read what the state machine asks for now."""
