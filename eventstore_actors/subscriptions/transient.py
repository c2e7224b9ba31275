"""Transient subscriptions (`store.subscribe`): live events only, no name, lock or checkpoint.

Each one is a small supervised actor fed by the publisher's fan-out like any subscription
(its child id starts with "subscription:"), with no connection of its own. It remembers the
last event_id it handed on; a hole in what the publisher hands over (the publisher skipped a
wide gap, reconnected, or could not decode a batch) is filled from storage through the read
pool, so nothing committed after the subscribe is skipped, and events arrive in event_id
order.

Memory stays bounded whatever the subscriber does. The publisher queues at most `limit`
events in the actor's inbox (see `Control`); a pykka subscriber's own inbox is watched too.
A transient subscriber that falls further behind than that (its `tell()` blocks, or its
actor's inbox holds more than `limit` messages) is ended with `SubscriptionStopped` saying it
fell behind: a transient subscription has no checkpoint to catch up from later, and growing
without bound would take the whole process down. A selector, mapper or subscriber that fails
ends it the same way (the events before the failing one are delivered).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import pykka

from ..actors.registry import Registry
from ..actors.supervised import SupervisedActor
from ..actors.ticker import Tick
from ..config import Settings
from ..errors import StoreUnavailableError
from ..events import RecordedEvent
from ..lifecycle.encryption import keyring_of
from ..lifecycle.handout import forgotten_since
from ..notifications.messages import CatchUp, Published
from ..storage import reader
from ..storage.pool import ReadPool
from .control import Admit, Control
from .messages import Events, SubscriptionStopped, TransientSubscription

__all__ = ["TransientActor", "TransientControl", "TransientSpec", "fresh_events"]

#: Events read from storage per round when filling a hole.
_PAGE = 1000

ALL = "$all"


class TransientControl(Control):
    """A subscription's `Control`, remembering whether the publisher ever had to hold events
    back (the subscription fell behind) and where delivery stands (across restarts)."""

    def __init__(self, limit: int, subscriber: Any, last: int) -> None:
        super().__init__(limit, subscriber)
        self.overflowed = False
        self.last = last  # the last event_id handed on (or skipped as not selected)

    def admit_events(self, count: int) -> Admit:
        admit = super().admit_events(count)
        if admit is Admit.CATCH_UP:
            self.overflowed = True
        return admit


@dataclass(frozen=True)
class TransientSpec:
    stream_uuid: str  # "$all" for every stream
    subscriber: Any
    selector: Callable[[RecordedEvent], Any] | None
    mapper: Callable[[RecordedEvent], Any] | None
    control: TransientControl


def fresh_events(
    events: Sequence[RecordedEvent], last: int
) -> tuple[tuple[int, int] | None, list[RecordedEvent]]:
    """Pure: the events after `last`, and the hole (first, last event_id) to read from storage
    before them, if they do not follow `last` directly."""
    fresh = [e for e in events if e.event_id > last]
    if fresh and fresh[0].event_id > last + 1:
        return (last + 1, fresh[0].event_id - 1), fresh
    return None, fresh


def _read_page(conn: Any, *, start: int, last: int, stream: str | None) -> list[reader.Row]:
    return reader.read_all(conn, start, _PAGE, last, stream_prefix=stream)


class TransientActor(SupervisedActor):
    def __init__(
        self,
        supervisor: pykka.ActorRef[Any],
        child_id: str,
        settings: Settings,
        pool: ReadPool,
        spec: TransientSpec,
        handle: TransientSubscription,
        registry: Registry,
    ) -> None:
        super().__init__(supervisor, child_id)
        self.log = self.log.bind(transient=spec.stream_uuid)
        self._settings = settings
        self._pool = pool
        self._spec = spec
        self._control = spec.control
        self._handle = handle
        self._registry = registry
        self._token = 0
        self._ended = False
        self._behind = False  # a read from storage failed: retried on the ticks

    # Lifecycle --------------------------------------------------------------------------------
    def register(self) -> None:
        self._token = self._control.started()
        self._registry.put(self.child_id, self.actor_ref, self._control)

    def after_exit(self) -> None:
        reason = self._control.finished(self._token)
        if reason is not None:
            try:
                self._spec.subscriber.tell(SubscriptionStopped(self._handle, reason))
            except Exception:  # gone or failing: past caring
                pass

    def _end(self, reason: str | None) -> None:
        if self._ended:
            return
        self._ended = True
        self._control.close(reason)
        if reason is not None:
            self.log.warning("transient subscription stopped", reason=reason)
        self.actor_ref.stop(block=False)

    # Messages ---------------------------------------------------------------------------------
    def handle(self, message: Any) -> Any:
        if isinstance(message, Tick):
            self._control.took_tick()
        elif isinstance(message, Published):
            self._control.took_events(len(message.events))
        elif isinstance(message, CatchUp):
            self._control.took_catch_up()
        if self._ended:
            return
        if self._control.closed:
            self._end(None)
            return
        try:
            if isinstance(message, Tick):
                self._tick()
            elif isinstance(message, Published):
                self._published(message.events)
            elif isinstance(message, CatchUp):
                if self._control.overflowed:
                    self._fell_behind(f"more than {self._settings.subscription_max_size} events")
                else:
                    self._catch_up(None)
            else:
                super().handle(message)
        except StoreUnavailableError as exc:
            self.log.warning("transient subscription cannot read storage; retrying", error=str(exc))
            self._behind = True

    def _tick(self) -> None:
        is_alive = getattr(self._spec.subscriber, "is_alive", None)
        if callable(is_alive) and not is_alive():
            self._end("the subscriber stopped")
        elif self._behind:
            self._catch_up(None)

    def _published(self, events: list[RecordedEvent]) -> None:
        if self._behind:
            self._catch_up(events[-1].event_id if events else None)
            return
        hole, fresh = fresh_events(events, self._control.last)
        if hole is not None:
            self._read(hole[0], hole[1])
        if fresh and not self._ended:
            self._deliver(fresh)

    def _catch_up(self, up_to: int | None) -> None:
        """Read from storage everything after the last event handed on, up to `up_to` (None:
        the last event committed now)."""
        if up_to is None:
            up_to = self._pool.run(reader.last_event_id)
        self._read(self._control.last + 1, up_to)
        self._behind = False

    def _read(self, first: int, last: int) -> None:
        stream = None if self._spec.stream_uuid == ALL else self._spec.stream_uuid
        start = first
        while start <= last and not self._ended:
            rows = self._pool.run(partial(_read_page, start=start, last=last, stream=stream))
            if not rows:
                break
            try:
                events = reader.decode(rows, self._settings.serializer)
            except Exception as exc:
                self._end(f"an event cannot be decoded: {exc}")
                return
            self._deliver(events)
            start = rows[-1][0] + 1
        if not self._ended:
            self._control.last = max(self._control.last, last)

    def _deliver(self, events: list[RecordedEvent]) -> None:
        """Hand on the selected (and mapped) events; a selector, mapper or subscriber that
        fails ends the subscription after the events before the failing one."""
        spec = self._spec
        payload: list[Any] = []
        failure: str | None = None
        # A subject forgotten since these were decoded is not handed out in clear.
        for event in forgotten_since(events, keyring_of(self._settings.serializer)):
            if spec.stream_uuid != ALL and event.stream_uuid != spec.stream_uuid:
                continue
            try:
                if spec.selector is not None and not spec.selector(event):
                    continue
                payload.append(event if spec.mapper is None else spec.mapper(event))
            except Exception as exc:
                failure = f"the selector or mapper failed on event {event.event_id}: {exc!r}"
                break
        if payload:
            self._tell(Events(self._handle, payload))
        if self._ended:
            return
        if failure is not None:
            self._end(failure)
            return
        self._control.last = max(self._control.last, events[-1].event_id)
        inbox = getattr(spec.subscriber, "actor_inbox", None)
        limit = self._settings.subscription_max_size
        if inbox is not None and inbox.qsize() > limit:
            self._fell_behind(f"more than {limit} messages in the subscriber's inbox")

    def _tell(self, message: Any) -> None:
        if self._control.closed:
            self._end(None)
            return
        try:
            self._spec.subscriber.tell(message)
        except pykka.ActorDeadError:
            self._end("the subscriber stopped")
            return
        except Exception as exc:
            self._end(f"the subscriber's tell() failed: {exc!r}")
            return
        if self._control.closed:
            self._end(None)

    def _fell_behind(self, how: str) -> None:
        self._end(f"the transient subscriber fell behind ({how} waiting for it)")
