"""The messages of the notifications layer: what the listener tells the publisher, and what
the publisher (or its fan-out) tells subscriptions. Apart from the actors, so the fan-out and
the subscriptions depend on them without depending on the publisher."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..events import RecordedEvent

__all__ = ["CatchUp", "Notified", "Published", "StreamDeleted", "StreamNotice"]


@dataclass(frozen=True)
class Notified:
    """From the listener: events up to `last_event_id` are committed (maybe by another process)."""

    last_event_id: int


@dataclass(frozen=True)
class CatchUp:
    """Read whatever storage holds beyond what was published (after a (re)connect or restart);
    sent to subscriptions too, telling them to re-check storage."""


@dataclass(frozen=True)
class Published:
    """Told to every subscription: committed events in event_id order. `covered` (first,
    last): every committed event with an event_id in that range is among `events` (the
    others were hard-deleted); None: only that `events` are contiguous."""

    events: list[RecordedEvent]
    covered: tuple[int, int] | None = None
    #: perf_counter time of the commit (this process's) or of this publication (read from
    #: storage): where delivery latency starts.
    at: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class StreamNotice:
    """From the listener: another process linked events into a stream ("link") or deleted
    it ("delete")."""

    kind: str
    stream_uuid: str


@dataclass(frozen=True)
class StreamDeleted:
    """Told to the subscriptions of a stream that was deleted (softly or for good): they end
    with `SubscriptionStopped`."""

    stream_uuid: str
