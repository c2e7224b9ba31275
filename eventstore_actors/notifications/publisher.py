"""The publisher actor: fans committed events out to the subscription actors in global order.

It keeps `last_published`, the highest event_id already fanned out, and publishes only the
contiguous continuation of it. Batches committed in this process arrive straight from the
writer; commits of other processes arrive as notifications and are read from storage; any gap
(a batch from another process, a restart, a lost notification) is filled from storage first.
Hard deletes leave gaps that no commit will ever fill, so each `Published` says which range
of event_ids it covers (every committed event in it is among its events): storage reads say
how far they covered (`reader.read_all_covered`), and `last_published` moves over deleted
event_ids, but never over one that may still be committing.

Links and deletes of other processes arrive as stream notices: the stream's subscriptions
are told to re-check storage (`CatchUp`) or that the stream is gone (`StreamDeleted`).

Each subscription's inbox is bounded (see `subscriptions.control.Control`): once one holds
`max_size` events not yet taken, it is told one coalesced `CatchUp` instead of more events.
A store whose last event_id went below last_published (`admin.reset` while running) is
noticed and published from the start again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import psycopg
import pykka

from ..actors.registry import Registry
from ..actors.supervised import SupervisedActor
from ..config import Settings
from ..errors import StoreUnavailableError
from ..lifecycle import forgetting
from ..lifecycle.encryption import keyring_of
from ..lifecycle.eviction import Leasing
from ..storage import reader
from ..storage.connection import connect, is_alive
from ..storage.deadline import guard
from ..storage.errors import unavailable
from ..subscriptions.control import Control
from ..writer import Committed
from .fanout import FanOut, tell_alive
from .listener import Listener, Listening
from .messages import CatchUp, Notified, Published, StreamDeleted, StreamNotice

__all__ = [
    "CatchUp",
    "Notified",
    "Published",
    "PublisherActor",
    "StreamDeleted",
    "StreamNotice",
    "stream_prefix",
    "tell_stream_subscriptions",
]

#: Most events read from storage per round when filling a gap.
_READ_BATCH = 1000
#: A gap wider than this is not filled here: the subscriptions are told to catch up from
#: storage themselves (each from its own position), instead of the publisher reading it all.
_MAX_GAP = 10_000
#: The child ids of subscription actors start with this.
_SUBSCRIPTIONS = "subscription:"


class PublisherActor(SupervisedActor):
    def __init__(
        self,
        supervisor: pykka.ActorRef[Any],
        child_id: str,
        settings: Settings,
        registry: Registry,
        origin: str,
        listening: Listening,
    ) -> None:
        super().__init__(supervisor, child_id)
        self._origin = origin
        self._listening = listening
        self._settings = settings
        self._registry = registry
        # Its own connection for reads: a pool checkout costs ~0.1 ms on the delivery path.
        self._conn: psycopg.Connection[Any] | None = None
        self._last_published = 0
        # True until last_published is known: at start, and after losing the database (a
        # publisher that failed on every read would exhaust its restarts in a short outage).
        self._resync = True
        self._listener: Listener | None = None
        self._metrics = registry.metrics
        self._connects = 0  # of its own connection: after the first, reconnects
        self._fanout: FanOut | None = None  # hands each batch to the subscriptions

    def setup(self) -> None:
        ref, metrics, listening = self.actor_ref, self._metrics, self._listening
        listens = [0]

        serializer = self._settings.serializer

        keyring = keyring_of(serializer)

        def on_connect() -> None:
            listens[0] += 1
            if listens[0] > 1:
                metrics.count("reconnects_total", connection="listener")
            # Forgets may have been missed while not listening: the cached keys go before
            # the cache's lease starts (lifecycle/eviction.py). Reads and appends never
            # needed it (each checks the forget generation in the database).
            forgetting.on_notice(serializer)
            _notify(ref, CatchUp())
            listening.answered()

        self._listener = Listener(
            self._settings,
            self._origin,
            on_notify=lambda last: _notify(ref, Notified(last)),
            on_connect=on_connect,
            on_stream=lambda kind, stream: (
                forgetting.on_notice(serializer)  # at once, on the listener's thread
                if kind == "forget"
                else _notify(ref, StreamNotice(kind, stream))
            ),
            on_unreachable=listening.answered,
            leasing=(
                None if keyring is None else Leasing.of(self._settings, keyring, self._origin)
            ),
        )
        # Its first connect tells us CatchUp, which resyncs; it starts when wanted (Listening).
        self._listening.attach(self._listener.start)

    def cleanup(self) -> None:
        self._listening.detach()
        if self._listener is not None:
            self._listener.stop()
        if self._fanout is not None:
            self._fanout.close()
        self._close()

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is not None and not is_alive(self._conn):
            self._close()
        if self._conn is None:
            self._conn = connect(self._settings)  # StoreUnavailableError: resync later
            self._connects += 1
            if self._connects > 1:
                self._metrics.count("reconnects_total", connection="publisher")
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def handle(self, message: Any) -> Any:
        if isinstance(message, StreamNotice):  # no database needed
            stream = message.stream_uuid
            notice = StreamDeleted(stream) if message.kind == "delete" else _CATCH_UP
            tell_stream_subscriptions(self._registry, stream, notice)
            return
        if (
            isinstance(message, Committed)
            and self._follows(message.rows)
            and not _sealed(message.rows)
        ):
            # The usual case: the writer's next rows, right after the last published. No
            # database call, so no connection check and no watchdog on the delivery path.
            rows = message.rows
            self._publish(rows, rows[0][0], rows[-1][0], message.at)
            return
        try:
            # Under the watchdog: a server that stops answering without closing the connection
            # must not block the publisher for ever (the call fails as a lost connection).
            with guard(self._connection(), self._settings.io_timeout):
                self._handle(message)
        except psycopg.OperationalError as exc:
            self._lost_database(unavailable(exc))
        except StoreUnavailableError as exc:
            self._lost_database(exc)

    def _follows(self, rows: Sequence[reader.Row]) -> bool:
        """Whether `rows` continue last_published without a gap (publishable as they are)."""
        if self._resync or not rows:
            return False
        first, last = rows[0][0], rows[-1][0]
        return first == self._last_published + 1 and last - first == len(rows) - 1

    def _handle(self, message: Any) -> None:
        if self._resync:
            self._resync_now()
        if isinstance(message, Committed):
            self._committed(message.rows, message.at)
        elif isinstance(message, Notified):
            if message.last_event_id <= self._last_published:
                self._went_back()
            self._fill_gap(message.last_event_id)
        elif isinstance(message, CatchUp):
            # After a (re)connect: the same cut-off as any gap.
            last = reader.last_event_id(self._connection())
            if last < self._last_published:
                self._went_back()
            self._fill_gap(last)
        else:
            super().handle(message)

    def _lost_database(self, exc: StoreUnavailableError) -> None:
        # The listener's reconnect, once the database is back, tells us CatchUp. Its own
        # connection may look fine while ours died (a cut, a frozen peer): make it reconnect.
        self._close()
        if self._listener is not None:
            self._listener.reconnect()
        self.log.warning("publisher lost the database; resyncing when it is back", error=str(exc))
        self._resync = True

    def _resync_now(self) -> None:
        """Start over from the store's last event: every subscription re-checks storage, so
        nothing committed meanwhile (or before a restart) is missed."""
        self._last_published = reader.last_event_id(self._connection())
        self._resync = False
        self._fan_out_catch_up()

    def _went_back(self) -> bool:
        """Whether storage's last event_id went below last_published (the store was reset
        while running); if so, publish from the start again."""
        last = reader.last_event_id(self._connection())
        if last >= self._last_published:
            return False
        self.log.warning(
            "the store's last event_id went back; publishing from the start",
            last_event_id=last,
            last_published=self._last_published,
        )
        self._last_published = 0
        self._fan_out_catch_up()
        return True

    def _committed(self, rows: Sequence[reader.Row], at: float) -> None:
        if not rows:
            return
        if rows[-1][0] <= self._last_published and not self._went_back():
            return
        for run in _runs(rows):  # one transaction's rows are contiguous; a group's may not be
            if run[0][0] > self._last_published + 1:
                self._fill_gap(run[0][0] - 1)
            fresh = [row for row in run if row[0] > self._last_published]
            if fresh and _sealed(fresh):
                self._catch_up(fresh[-1][0])
            elif fresh and fresh[0][0] == self._last_published + 1:
                self._publish(fresh, fresh[0][0], fresh[-1][0], at)

    def _fill_gap(self, up_to: int) -> None:
        """Publish what lies between last_published and `up_to` (events committed elsewhere,
        or while no subscription ran and the writer did not tell us)."""
        if up_to - self._last_published > _MAX_GAP:
            self._last_published = up_to
            self._fan_out_catch_up()
            return
        self._catch_up(up_to)

    def _catch_up(self, up_to: int) -> None:
        """Publish from storage everything after last_published up to `up_to`, stepping over
        event_ids the reads covered and found empty (hard-deleted)."""
        if not self._registry.has_prefix(_SUBSCRIPTIONS):
            # Nobody to tell: skip the read. A subscription that starts later reads storage
            # itself, after it is registered, so it cannot miss what is skipped here.
            self._last_published = max(self._last_published, up_to)
            return
        while self._last_published < up_to:
            start = self._last_published + 1
            rows, covered = reader.read_all_covered(self._connection(), start, _READ_BATCH, up_to)
            if covered < start:
                return  # nothing committed there (the store was reset meanwhile)
            self._publish(rows, start, covered)

    def _publish(
        self, rows: Sequence[reader.Row], first: int, last: int, at: float | None = None
    ) -> None:
        """Fan out `rows`: every committed event with first <= event_id <= last."""
        self._last_published = last
        members = self._registry.members(_SUBSCRIPTIONS)
        if not members:
            return  # nothing to decode for (see _catch_up)
        try:
            events = reader.decode(rows, self._settings.serializer)
        except Exception as exc:
            # A stored event this serializer cannot read must not stop the store: each
            # subscription reads the batch from storage itself, delivers the events before
            # the bad one and stops with SubscriptionStopped.
            self.log.error("cannot decode published events", error=str(exc))
            self._fan_out_catch_up(members)
            return
        published = Published(events, (first, last), at or time.perf_counter())
        if self._fanout is None:  # on first use: a store without subscriptions needs none
            self._fanout = FanOut()
        self._fanout.publish(members, published)  # directly or as messages: see fanout.py

    def _fan_out_catch_up(
        self, members: list[tuple[pykka.ActorRef[Any], Any]] | None = None
    ) -> None:
        """Tell every subscription to re-check storage (at most one CatchUp queued in each)."""
        if members is None:
            members = self._registry.members(_SUBSCRIPTIONS)
        for ref, control in members:
            if not isinstance(control, Control):
                tell_alive(ref, _CATCH_UP)
            elif control.admit_catch_up() and not tell_alive(ref, _CATCH_UP):
                control.took_catch_up()


_CATCH_UP = CatchUp()


def _sealed(rows: Sequence[reader.Row]) -> bool:
    """Whether any of the writer's rows has a data subject: such rows are read back from the
    database, which says whether the subject was forgotten since (lifecycle/forgetting.py)."""
    return any(row[11] is not None for row in rows if len(row) > 11)


def _runs(rows: Sequence[reader.Row]) -> list[Sequence[reader.Row]]:
    """`rows` (ascending event_ids) cut where event_ids are not consecutive."""
    runs: list[Sequence[reader.Row]] = []
    start = 0
    for i in range(1, len(rows)):
        if rows[i][0] != rows[i - 1][0] + 1:
            runs.append(rows[start:i])
            start = i
    runs.append(rows[start:])
    return runs


def stream_prefix(stream_uuid: str) -> str:
    """The child-id prefix of the subscriptions to one stream (child ids are
    "subscription:" + json.dumps([stream_uuid, name]), see subscriptions.arguments.registry_id)."""
    return _SUBSCRIPTIONS + json.dumps([stream_uuid])[:-1] + ", "


def tell_stream_subscriptions(registry: Registry, stream_uuid: str, message: Any) -> None:
    """Tell every subscription to `stream_uuid` in this store instance (a `CatchUp` at most
    once queued, as the publisher does)."""
    for ref, control in registry.members(stream_prefix(stream_uuid)):
        if isinstance(message, CatchUp) and isinstance(control, Control):
            if control.admit_catch_up() and not tell_alive(ref, message):
                control.took_catch_up()
        else:
            tell_alive(ref, message)


def _notify(ref: pykka.ActorRef[Any], message: Any) -> None:
    tell_alive(ref, message)
