"""Subscription health: is each durable subscription live, catching up, stalled or stopped?

Why a module of its own: a subscription that silently stops acking is the most common
complaint about event stores, and finding it must cost nothing where events flow. So:

- The actor calls `SubscriptionHealth.update` after each message it handles and before it
  tells a subscriber a batch (plain attribute writes, no I/O: a tell() that never returns
  is a stall too), and `ended` when it stops with a reason. That is all it does (two hook
  lines in `actor.py`; the competing consumers' actor inherits them).
- One `HealthMonitor` thread per store looks at its trackers a few times a second. A held
  subscription with events in flight and no ack (or nack) for `stall_after` seconds, counted
  from the delivery of the oldest unacked event, is stalled: one WARNING naming it, the
  counter `subscription_stalls_total`, and the state written to its row; the first ack after
  that clears it (the actor wakes the monitor). The monitor writes a row when its state
  changes ('live' once caught up, 'stalled', back), once as each run starts (what an earlier
  run wrote is over), and to renew its vouch (below), in one statement per pass, and only
  while the row names this store as its holder.
- The vouch: a holder that cannot run its monitor (the process is frozen by SIGSTOP, a C
  extension holds the GIL, the host is swapped out) keeps its lock, and what it wrote last
  ('live') would stand for ever. So the monitor also writes how long it vouches that nothing
  stalls (`vouched_until`, the database's clock, `vouched_by` naming it): the delivery of the
  oldest unacked event plus `stall_after` while events are in flight, now plus `stall_after`
  otherwise (a delivery from now on cannot stall before then). Its claim of the name writes
  the first vouch and `stall_after`; the monitor renews it once less than half of
  `stall_after` is left of it: about one row write per `stall_after` / 2 seconds per held
  subscription, none per event. A vouch that ran out is a holder that stopped looking.
- A subscription that gave up on an error (its subscriber was told `SubscriptionStopped`) is
  written 'stopped' once nobody holds its lock; a new holder's claim (another store) or the
  first look at this store's next run clears it.
- Appends are untouched; an ack's checkpoint UPDATE sets `last_ack_at` as well (one column).

What a reader sees (`state_of`, used by `subscriptions()`, `subscription_info` and
`eventstore-actors status` in any process): not held -> "stopped" if so written, else "idle";
held -> "stalled" as written, or when lag > 0 and the holder is `overdue` (its own vouch ran
out `VOUCH_MARGIN` seconds ago and the oldest unacked event is `stall_after` old: the rule
applied by the reader, which needs nothing of the holder); else "live" as written, else "live"
at lag 0 and "catching_up" otherwise. A row whose vouch was written by another holder than the
current one (a holder of release 5, which writes none) is judged only by what it wrote.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

from ..logs import get_logger
from ..metrics import Metrics
from ..storage.locks import lock_key
from ..storage.pool import ReadPool
from ..storage.subscriptions import write_health, write_stopped

__all__ = [
    "STATES",
    "VOUCH_MARGIN",
    "HealthMonitor",
    "SubscriptionHealth",
    "check_stall_after",
    "in_flight",
    "overdue",
    "state_of",
]

log = get_logger(__name__)

#: Every state a subscription can be in (`SubscriptionInfo.state`).
STATES = ("live", "catching_up", "stalled", "stopped", "idle")
#: Seconds between the monitor's looks at its subscriptions (a stall is found at most this
#: late, plus the write).
_INTERVAL = 0.25
#: How long the monitor keeps trying to mark a subscription that gave up 'stopped' while
#: its lock is still held (its actor is letting go of it, or another process took it over).
_STOP_WRITE_FOR = 15.0
#: What the row holds for a run the monitor has not written yet: whatever an earlier run of
#: this store wrote, or nothing (another holder's claim cleared it). Never a state: the run's
#: first look writes its state, None included.
_UNKNOWN = "?"
#: Seconds a holder's vouch must have run out before a reader finds it stalled: the
#: monitor's renewal (a look, then a write) may come that late after a clock restarted just
#: in time, and the database's clock reads it. A frozen holder is reported stalled at most
#: this long after the in-process rule would have found it.
VOUCH_MARGIN = 2.0
#: Seconds before a row the monitor could not write (another transaction held it, or it no
#: longer names this store) is tried again.
_RETRY_AFTER = 1.0
#: Reasons for `SubscriptionStopped` that are not an error of the subscription.
_NOT_ERRORS = (
    "the event store stopped",
    "the subscription's checkpoint was deleted",
    # Its subscriber is gone (a stopped actor, an asyncio subscription dropped or its loop
    # closed): how an application shuts down (docs/subscriptions.md), and nobody is left to
    # be told SubscriptionStopped. Not "the subscriber's tell() failed: ...", an error.
    "the subscriber stopped",
)


def check_stall_after(value: Any) -> float:
    """`stall_after` as seconds: a finite number > 0, else ValueError (checked at subscribe
    time, before anything starts)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"stall_after must be a number of seconds > 0, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"stall_after must be a finite number of seconds > 0, got {value!r}")
    return float(value)


def is_error(reason: str | None) -> bool:
    """Whether a subscription that ended with `reason` gave up on an error (not: its own
    unsubscribe, the store stopping, its stream or checkpoint being deleted)."""
    if reason is None or reason.startswith(_NOT_ERRORS):
        return False
    return not (reason.startswith("the stream ") and reason.endswith(" was deleted"))


def in_flight(intake: Any) -> bool:
    """Whether a subscription's state machine has events delivered and not acked yet
    (`state.SubscriptionState` or `concurrent.ConcurrentState`)."""
    count = getattr(intake, "in_flight", None)
    if isinstance(count, int):
        return count > 0 or getattr(intake, "replaying", None) is not None
    return bool(intake.held > intake.queued)


def overdue(
    unvouched_for: float | None, stall_after: float | None, lag_seconds: float | None
) -> bool:
    """Whether a held subscription's holder is overdue, from its row (the stall rule as a
    reader applies it): the vouch its holder wrote ran out `VOUCH_MARGIN` seconds ago or
    more (`unvouched_for`; None: no vouch of the current holder) and the oldest unacked event
    is `stall_after` old (`lag_seconds`; None: its age is not known, the vouch decides)."""
    if unvouched_for is None or stall_after is None or unvouched_for < VOUCH_MARGIN:
        return False
    return lag_seconds is None or lag_seconds >= stall_after


def state_of(active: bool, lag: int, written: str | None, late: bool = False) -> str:
    """A subscription's state from its row: held (`active`), its lag, what was written, and
    whether its holder is `overdue` (`late`)."""
    if not active:
        return "stopped" if written == "stopped" else "idle"
    if written == "stalled" or (lag > 0 and late):
        return "stalled"
    if written == "live":
        return written
    return "live" if lag == 0 else "catching_up"


class SubscriptionHealth:
    """What the monitor needs to know of one subscription (all its runs in this store).

    `update` and `ended` run on the subscription's actor thread; everything else on the
    monitor's. They share a few plain attributes (each written by one side only)."""

    def __init__(self, stream_uuid: str = "", name: str = "", stall_after: float = 60.0) -> None:
        self.stream_uuid = stream_uuid
        self.name = name
        self.stall_after = stall_after
        self.wake: Callable[[], None] | None = None  # set by the monitor watching it
        # Actor side.
        self.intake: Any = None  # the state machine of the current run (None: not held)
        self.run = 0  # counts runs (lock taken, restart, resync): each starts catching up
        self.since: float | None = None  # the stall clock: oldest unacked delivery, or ack
        self._clocked_at = -1  # the checkpoint when the clock last started
        self.live = False  # caught up once in this run
        self.caught_up_at: int | None = None  # the cursor when its reads first reached the head
        self.reason: str | None = None  # set once it ended (with a reason)
        self.finished = False
        # Monitor side.
        self.stalled = False
        self.stalls = 0  # how many times it stalled
        self.written: tuple[int, str | None] | None = None  # (run, state) last written
        self.vouched: tuple[int, float] | None = None  # (run, monotonic end) last written
        self.retry_at = 0.0  # a write that did not land: not tried again before then
        self.stop_until = 0.0  # how long the 'stopped' write is tried

    # Actor side -------------------------------------------------------------------------------
    def update(self, intake: Any, answered: bool, nacked: bool = False) -> None:
        """After each message the actor handled: `intake` its state machine (None while it
        does not hold the lock); `answered`: the message was an ack or a nack (`nacked`)."""
        if intake is not self.intake:
            self.intake = intake
            self.run += 1
            self.live = False
            self.caught_up_at = None
            self.since = None
        if intake is None:
            self.since = None
            return
        if in_flight(intake):
            checkpoint = intake.checkpoint
            if self.since is None or (answered and (nacked or checkpoint != self._clocked_at)):
                # Delivered now, or the oldest unacked event was acked (the checkpoint moved)
                # or nacked: the clock restarts. Not for an ack of a later event: with
                # competing consumers (or partition_by) one subscriber acking kept a stalled
                # sibling's event from ever counting as stalled.
                self.since = time.monotonic()
                self._clocked_at = checkpoint
        else:
            self.since = None
        if not self.live:
            # Live once every event stored before it caught up (its first read that reached
            # the head) is acked: busy from the start, it still gets there.
            if self.caught_up_at is None and not intake.behind:
                self.caught_up_at = intake.cursor
            if self.caught_up_at is not None and intake.checkpoint >= self.caught_up_at:
                self.live = True
        if answered and self.stalled and self.wake is not None:
            self.wake()  # cleared at once, not on the next look

    def ended(self, reason: str | None) -> None:
        """The subscription stopped: `reason` told to the subscriber (None: nothing)."""
        if self.finished:
            return
        self.reason = reason
        self.since = None
        self.intake = None
        self.finished = True
        if self.wake is not None:
            self.wake()

    # Monitor side -----------------------------------------------------------------------------
    def desired(self, now: float) -> str | None:
        """The state to write for the current run ('live', 'stalled' or None: derived from
        the lag by readers); sets `stalled`."""
        since = self.since
        self.stalled = since is not None and now - since >= self.stall_after
        if self.stalled:
            return "stalled"
        return "live" if self.live else None

    def vouch(self, now: float) -> float:
        """Until when (monotonic) nothing of the current run can stall: the delivery of the
        oldest unacked event plus stall_after, else now plus stall_after."""
        since = self.since
        return (now if since is None else since) + self.stall_after

    def renew(self, run: int, until: float, now: float) -> bool:
        """Whether the vouch written for `run` is to be renewed to `until`: none written for
        this run yet, or less than half of stall_after left of it and `until` later."""
        vouched = self.vouched
        if vouched is None or vouched[0] != run:
            return True
        return until > vouched[1] and vouched[1] - now < self.stall_after / 2


class HealthMonitor:
    """The thread that finds stalls and writes the subscriptions' states of one store."""

    def __init__(
        self,
        pool: ReadPool,
        metrics: Metrics,
        holder: str,
        schema: str,
        closed: Callable[[], bool],
    ) -> None:
        self._pool = pool
        self._metrics = metrics
        self._holder = holder
        self._schema = schema
        self._closed = closed  # the store is stopping: nothing is marked stopped then
        self._lock = threading.Lock()
        self._watched: list[SubscriptionHealth] = []
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._failing = False
        self._stalls = 0  # stalls found by this store

    def watch(self, health: SubscriptionHealth) -> None:
        """Look after `health` from now on (the thread starts with the first one)."""
        health.wake = self._wake.set
        with self._lock:
            if self._stopping:
                return
            self._watched.append(health)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="eventstore-subscription-health", daemon=True
                )
                self._thread.start()

    def stop(self) -> None:
        """No more looks or writes (the store stops: its subscriptions become idle)."""
        with self._lock:
            self._stopping = True
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)

    def _run(self) -> None:
        while True:
            self._wake.wait(_INTERVAL)
            self._wake.clear()
            with self._lock:
                if self._stopping:
                    return
                watched = list(self._watched)
            try:
                self._look(watched)
            except Exception as exc:  # the database is away: tried again on the next look
                if not self._failing:
                    log.warning("could not write subscription health", error=str(exc))
                self._failing = True
            else:
                self._failing = False

    def _look(self, watched: list[SubscriptionHealth]) -> None:
        now = time.monotonic()
        writes: list[tuple[SubscriptionHealth, int, str | None, float]] = []
        for health in watched:
            if health.finished:
                self._stopped(health, now)
                continue
            was = health.stalled
            run = health.run
            state = health.desired(now)
            if health.stalled and not was:
                health.stalls += 1
                self._stalls += 1
                self._metrics.count("subscription_stalls_total")
                # Bound, so that each stall is its own line: the rate limit of repeated
                # warnings (logs.py) keys on the bound context.
                log.bind(
                    subscription=health.name,
                    stream=health.stream_uuid,
                    stall=self._stalls,
                    holder=self._holder,
                ).warning(
                    "subscription stalled: events delivered and not acked",
                    stall_after=health.stall_after,
                )
            elif was and not health.stalled:
                log.info(
                    "subscription acks resumed", subscription=health.name, stream=health.stream_uuid
                )
            if health.intake is None:  # not held: nothing to write until a run holds it
                continue
            if health.written is None or health.written[0] != run:
                health.written = (run, _UNKNOWN)  # a new run: write its state once
            until = health.vouch(now)
            if (health.written[1] != state or health.renew(run, until, now)) and (
                now >= health.retry_at or (health.stalled != was)
            ):
                writes.append((health, run, state, until))
        if writes:

            def write(conn: Any) -> set[tuple[str, str]]:
                at = time.monotonic()  # the vouches count from the statement, not the look
                rows = [(h.stream_uuid, h.name, st, None, until - at) for h, _, st, until in writes]
                return write_health(conn, self._holder, rows)

            done = self._pool.run(write)
            for health, run, state, until in writes:
                if (health.stream_uuid, health.name) in done:
                    health.written = (run, state)
                    health.vouched = (run, until)
                else:  # held by a subscriber's transaction, or no longer this store's
                    health.retry_at = now + _RETRY_AFTER

    def _stopped(self, health: SubscriptionHealth, now: float) -> None:
        """An ended subscription: marked 'stopped' (it gave up on an error) once nobody
        holds it, then forgotten."""
        reason = health.reason
        done = not is_error(reason) or self._closed()
        if not done and reason is not None:
            if health.stop_until == 0.0:
                health.stop_until = now + _STOP_WRITE_FOR
            key = lock_key(self._schema, health.stream_uuid, health.name)
            stream, name = health.stream_uuid, health.name
            done = self._pool.run(lambda c: write_stopped(c, stream, name, reason, key))
            done = done or now >= health.stop_until
        if done:
            with self._lock:
                if health in self._watched:
                    self._watched.remove(health)
