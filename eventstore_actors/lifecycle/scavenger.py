"""The scavenger: a supervised actor that deletes the rows retention has hidden.

Reads stop returning hidden events at once (storage/retention.py); the rows themselves go
here, later, in bounded batches: each batch deletes the rows at `BATCH` positions of one
stream (its own events and links together, with the links of other streams to those events),
in one statement of its own short transaction holding row locks only, so a stream of a
million hidden events never locks a table and appends carry on. Each batch starts where the
one before it stopped, never walking again what earlier batches deleted (whose dead index
entries stay until vacuum): the actor keeps, per stream, the position below which nothing is
stored any more (`_lows`), across passes for as long as its connection lives (rows never come
back below a stream's first readable position; a batch whose commit a crashed server lost
dies with the connection). After each batch the actor rests for a while proportional
to the batch's time, so that it takes at most `SHARE` of one connection's time (`pace`), and
lets its inbox run (a stop is never kept waiting by a long pass); the batches shrink when
they are slow (a loaded machine), so the rests stay short without being cut.

Its transactions commit without waiting for the disk (`synchronous_commit` off for them
only, sql/retention/begin_purge.sql), so appends never queue behind a WAL flush of the
scavenger's. What that risks is harmless: a server crash may lose the last batches'
commits, which puts back rows that were hidden before the batch and still are (the stream's
first readable position was committed durably by the truncation or limit that hid them,
and reads filter on it), so no reader ever sees them; and a crash ends every connection,
which makes the actor forget the positions it had learnt were empty (`_lows`, kept per
connection): its next pass starts from each stream's lowest stored row and deletes them
again (tests/lifecycle/test_scavenger.py).

A pass starts on every `Tick` (every `INTERVAL` seconds, from the store's own ticker) and
whenever this process sets a retention or truncates a stream (`wake`); it visits the streams
that have retention (a partial index) in stream_id order. Only one process of a store
scavenges at a time (a transaction-level advisory lock per batch); the others find it taken
and leave the work to it. Like hard deletes, it stays idle while a process of an earlier
release holds a subscription (such a subscription cannot read past a gap). A lost connection
is reopened at the next pass; any other failure ends the actor and its supervisor restarts it
with a fresh connection.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg
import pykka

from ..actors.registry import Registry
from ..actors.supervised import SupervisedActor
from ..actors.ticker import Tick
from ..config import Settings
from ..errors import StoreUnavailableError
from ..storage import deletes
from ..storage import retention as rows
from ..storage.connection import connect
from ..storage.deadline import guard
from ..storage.errors import is_connection_loss
from . import sweep

__all__ = ["BATCH", "CHILD_ID", "INTERVAL", "SHARE", "ScavengerActor", "Wake", "pace", "wake"]

#: The scavenger's child id (and its ticker's prefix).
CHILD_ID = "scavenger"
#: Seconds between passes: rows hidden by a limit (or by another process) are gone well within
#: a minute. A pass over a store without retention is one index probe.
INTERVAL = 5.0
#: Most positions one batch covers (at most as many rows of the stream): one short transaction.
BATCH = 1000
#: Fewest positions a batch covers when batches are slow (smaller ones cost more per row).
MIN_BATCH = 100
#: The largest share of one database connection's time the scavenger takes while it works:
#: after each batch it rests (1 / SHARE - 1) times as long as the batch took. A batch is
#: mostly the server's CPU (its commit does not wait for the disk), and this process's side
#: of it about half as much again (measured: docs/benchmarks.md), so on a machine whose
#: cores appends keep busy, the scavenger takes about 1.5 x SHARE of one core from them:
#: under 4 % of a 2-core machine, under 8 % of a single core. It deletes about 10,000 rows a
#: second on a loaded 2-core machine (a million hidden rows in two minutes, unseen by reads).
SHARE = 0.05
#: The time a batch aims at: a slower batch halves the next one (down to MIN_BATCH), one
#: under a quarter of it doubles the next (up to BATCH). Short batches keep the rests short
#: (about a second at most: a stop waits for one batch and its rest) and the rest never needs
#: cutting (MAX_REST), so the share holds on a loaded machine too, where batches take longer.
SLOW = 0.05
#: The longest rest: reached only when even a batch of MIN_BATCH takes longer than
#: MAX_REST / (1 / SHARE - 1) seconds (a stalled server), where a stop matters more.
MAX_REST = 2.0
#: Streams fetched per look-up of the partial index.
_PAGE = 100


@dataclass(frozen=True)
class Wake:
    """Start a pass now (retention set or a stream truncated in this process)."""


@dataclass(frozen=True)
class _Continue:
    """The next batch of the pass under way."""


_CONTINUE = _Continue()


def wake(registry: Registry) -> None:
    """Tell the store's scavenger to start a pass (nothing if it is not running)."""
    ref = registry.peek(CHILD_ID)
    if ref is not None:
        try:
            ref.tell(Wake())
        except pykka.ActorDeadError:
            pass


def pace(size: int, seconds: float) -> tuple[int, float]:
    """After a batch of `size` positions that took `seconds`: (the next batch's size, the
    rest before it). The rest keeps the scavenger's share of its connection's time at SHARE;
    the size keeps each batch near SLOW."""
    if seconds > SLOW:
        size = max(MIN_BATCH, size // 2)
    elif seconds < SLOW / 4:
        size = size * 2
    return min(size, BATCH), min(MAX_REST, seconds * (1 / SHARE - 1))


class ScavengerActor(SupervisedActor):
    """Deletes hidden rows of streams with retention, a bounded batch at a time."""

    def __init__(
        self,
        supervisor: pykka.ActorRef[Any] | None,
        child_id: str,
        settings: Settings,
        registry: Registry,
    ) -> None:
        super().__init__(supervisor, child_id)
        self._settings = settings
        self._metrics = registry.metrics
        self._lock = f"eventstore_actors.scavenger.{settings.schema}"
        self._conn: psycopg.Connection[Any] | None = None
        self._busy = False
        self._again = False  # woken during a pass: another pass right after it
        self._after = 0  # the last stream_id looked at in this pass
        # stream_id -> a position below which nothing of the stream is stored: the streams
        # seen in the last pass and this one, on this connection.
        self._lows: dict[int, int] = {}
        self._seen: dict[int, int] = {}  # the same, for the streams of this pass
        self._queue: list[tuple[int, int]] = []
        self._sweep: int | None = None  # the sweep's event_id cursor while one runs
        self._swept = -sweep.INTERVAL  # time.monotonic() when the last sweep started
        self._hid = False  # woken since the last sweep: this process hid something
        self._size = BATCH  # positions of the next batch (pace())
        self._rest = threading.Event()  # never set: a bounded wait between batches
        #: Rows deleted since the actor started (read by tests and the metrics).
        self.deleted = 0
        #: Seconds spent in batches that deleted rows, and resting after them (read by tests).
        self.working = 0.0
        self.resting = 0.0

    def cleanup(self) -> None:
        self._close()

    def handle(self, message: Any) -> Any:
        if isinstance(message, (Tick, Wake)):
            self._hid = self._hid or isinstance(message, Wake)
            if self._busy:
                self._again = True
                return None
            self._begin()
        elif isinstance(message, _Continue):
            if self._sweep is None:
                self._step()
            else:
                self._sweep_step()
        else:
            return super().handle(message)
        return None

    # A pass -----------------------------------------------------------------------------------
    def _begin(self) -> None:
        conn = self._connection()
        if conn is None:
            return
        try:
            with guard(conn, self._settings.io_timeout):
                queue = rows.candidates(conn, 0, _PAGE)  # none: the whole pass, one probe
                if not queue:
                    return
                older = deletes.older_holders(conn, self._settings.schema)
        except psycopg.Error as exc:
            self._failed(exc)
            return
        if older:
            self.log.info("scavenger idle: a process of an earlier release holds subscriptions")
            return
        self._busy, self._again, self._after, self._queue = True, False, 0, queue
        self._seen = {}
        self.actor_ref.tell(_CONTINUE)

    def _step(self) -> None:
        conn = self._connection()
        if conn is None:
            self._end()
            return
        started = time.monotonic()
        try:
            with guard(conn, self._settings.io_timeout):
                if not self._queue:
                    self._queue = rows.candidates(conn, self._after, _PAGE)
                    if not self._queue:
                        self._lows = self._seen  # every stream with retention was seen
                        self._sweep_or_end()
                        return
                stream_id, bound = self._queue[0]
                low = self._seen.get(stream_id) or self._lows.get(stream_id, 1)
                size = min(self._size, BATCH)
                if bound <= low:
                    done, free, low = 0, True, low
                else:
                    done, free, low = rows.purge(conn, self._lock, stream_id, bound, size, low)
        except psycopg.Error as exc:
            self._failed(exc)
            self._end()
            return
        if not free:  # another process scavenges this store
            self._end()
            return
        if done:
            self.deleted += done
            self._metrics.count("scavenged_rows_total", done)
        self._seen[stream_id] = low
        if low >= bound:  # this stream has nothing hidden left
            self._after = stream_id
            self._queue.pop(0)
        if done:
            self._pause(size, started)
        self.actor_ref.tell(_CONTINUE)

    def _pause(self, size: int, started: float) -> None:
        """After a batch of `size` that started at `started`: rest (`pace`)."""
        took = time.monotonic() - started
        self._size, rest = pace(size, took)
        self._rest.wait(rest)
        self.working += took
        self.resting += time.monotonic() - started - took

    # The sweep of references to archived events (lifecycle/sweep.py) ---------------------------
    def _sweep_or_end(self) -> None:
        """At the end of a pass: start a sweep when this process hid something since the last
        one, or when it is due; otherwise end the pass."""
        now = time.monotonic()
        if not self._hid and now - self._swept < sweep.INTERVAL:
            self._end()
            return
        self._sweep, self._swept, self._hid = 0, now, False
        self.actor_ref.tell(_CONTINUE)

    def _sweep_step(self) -> None:
        conn = self._connection()
        if conn is None or self._sweep is None:
            self._end()
            return
        started = time.monotonic()
        size = min(self._size, BATCH)
        try:
            swept = sweep.sweep_batch(
                conn, self._lock, self._sweep, size, self._settings.io_timeout
            )
        except psycopg.Error as exc:
            self._failed(exc)
            self._end()
            return
        except StoreUnavailableError as exc:  # a file that cannot be read: at the next sweep
            self.log.warning("scavenger cannot read the archive; retrying later", error=str(exc))
            self._end()
            return
        if not swept.free or not swept.checked:  # another process scavenges, or all seen
            self._end()
            return
        if swept.deleted:
            self.deleted += swept.deleted
            self._metrics.count("scavenged_rows_total", swept.deleted)
        self._sweep = swept.after
        self._pause(size, started)
        self.actor_ref.tell(_CONTINUE)

    def _end(self) -> None:
        self._lows.update(self._seen)
        self._seen = {}
        self._sweep = None
        self._busy = False
        if self._again:
            self._again = False
            self.actor_ref.tell(Wake())

    # The connection ---------------------------------------------------------------------------
    def _connection(self) -> psycopg.Connection[Any] | None:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        self._lows, self._seen = {}, {}  # learnt on the connection before, which may be lost
        try:
            self._conn = connect(self._settings)
        except StoreUnavailableError as exc:
            self.log.warning("scavenger cannot connect; retrying at the next pass", error=str(exc))
            return None
        return self._conn

    def _failed(self, exc: psycopg.Error) -> None:
        """A lost connection is reopened at the next pass; anything else fails the actor."""
        if not is_connection_loss(exc, self._conn):
            raise exc
        self.log.warning("scavenger lost its connection; reconnecting at the next pass")
        self._close()

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass
