"""LISTEN on the store's channel on a dedicated connection, in a thread of its own.

Notifications sent while the connection is down are lost, so every (re)connect is followed by
a catch-up request: LISTEN first, then tell the publisher to read from storage.

A listening connection only reads, so a peer that went silent (a half-open socket, a frozen
middlebox) would leave it waiting for ever while other processes' events stop arriving. After
`health_interval` seconds without traffic it is probed with a round trip (re-issuing LISTEN
on the control channel, a no-op that keeps the connection recognisable in pg_stat_activity);
a probe unanswered within `health_timeout` ends the connection (a watchdog shuts its socket
down, which wakes the blocked read) and the listener reconnects. A store with encryption's
listener also notifies itself every `eviction.RENEW` s (the lease of its key cache), and a
notice of its own that does not come back within `health_timeout` ends the connection too.
"""

from __future__ import annotations

import functools
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

import psycopg

from .. import logs
from ..config import Settings
from ..errors import StoreUnavailableError
from ..lifecycle.eviction import LEASE, RENEW, Leasing
from ..storage import keys
from ..storage.connection import connect

__all__ = ["Listener", "Listening"]

log = logs.get_logger("eventstore_actors.listener")  # warnings rate-limited

#: Notifications about one stream rather than new events (sql/migrations/v2.sql), and
#: "forget" (a data subject was forgotten: drop cached keys; sql/keys/notify.sql).
_STREAM_NOTICES = ("link", "delete", "forget")

#: Longest single wait for notifications: how often the stop flag and the health are checked.
_POLL = 1.0


class _Silent(Exception):
    """The connection did not answer a health probe in time."""


class Listening:
    """Whether the store listens yet. The listener starts with the store's first subscription
    (`want`, before that subscription reads anything), not with the store: a store that only
    appends and reads holds no connection for it and is not woken by its own commits. A store
    with encryption listens from its start (`wanted`: forgets evict its cached keys). Kept by
    the runtime across restarts of the publisher, which owns the listener (`attach`)."""

    def __init__(self, wanted: bool = False) -> None:
        self._lock = threading.Lock()
        self._wanted = wanted
        self._start: Callable[[], None] | None = None
        self._ready = threading.Event()  # set at each LISTEN, or when a connect failed

    def attach(self, start: Callable[[], None]) -> None:
        """The current publisher's listener starts with `start` (at once if wanted already)."""
        with self._lock:
            self._start = start
            wanted = self._wanted
        if wanted:
            start()

    def detach(self) -> None:
        """The publisher stopped: its listener no longer listens."""
        with self._lock:
            self._start = None
            self._ready.clear()

    def answered(self) -> None:
        """The listener has LISTENed and told the publisher to catch up (on each connect), or
        it could not connect: a subscribe waits no longer (it fails on its own if the
        database is down; the listener's catch-up after its connect covers it if not)."""
        self._ready.set()

    def want(self, timeout: float) -> None:
        """Listen from now on, waiting up to `timeout` s for the LISTEN (then what a
        subscription reads from storage meets what it is notified of), or for a connect
        that failed. Either way, the listener's catch-up after its connect covers the rest."""
        with self._lock:
            self._wanted = True
            start = self._start
        if start is not None:
            start()
        self._ready.wait(timeout)


class Listener:
    """Calls `on_notify(last_event_id)` per notification and `on_connect()` after each LISTEN;
    `on_stream(kind, stream_uuid)` for a stream's links ("link") or deletion ("delete"), and
    `on_stream("forget", "")` for a forget (of any instance, this one's included).

    Notifications of commits made by the store instance `origin` itself are skipped: its writer
    hands those rows to the publisher directly, and it tells its own subscriptions of its
    links and deletes. With `leasing` (a store with encryption), it also keeps its key
    cache's lease and answers forgets (lifecycle/eviction.py).
    """

    def __init__(
        self,
        settings: Settings,
        origin: str,
        on_notify: Callable[[int], None],
        on_connect: Callable[[], None],
        on_stream: Callable[[str, str], None] | None = None,
        on_unreachable: Callable[[], None] | None = None,
        leasing: Leasing | None = None,
    ) -> None:
        self._settings = settings
        self._leasing = leasing
        self._on_unreachable = on_unreachable
        self._origin = origin
        self._on_notify = on_notify
        self._on_connect = on_connect
        self._on_stream = on_stream
        self._stop = threading.Event()
        self._started = False
        self._start_lock = threading.Lock()
        self._control = settings.control_channel
        # A duplicate of the current connection's socket: shutting it down from another thread
        # (stop, the probe's watchdog) ends a read blocked on the connection. Being our own
        # descriptor, it can never name another connection's socket.
        self._sock: socket.socket | None = None
        self._sock_lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name=f"eventstore-listener-{settings.schema}", daemon=True
        )
        self.log = log.bind(schema=settings.schema)

    def start(self) -> None:
        """Start listening: once (later calls do nothing), from any thread, never after stop."""
        with self._start_lock:
            if self._started or self._stop.is_set():
                return
            self._started = True
            self._thread.start()

    def stop(self) -> None:
        with self._start_lock:
            self._stop.set()
            started = self._started
        if started:
            self._abort()  # wakes a blocked notifies() or probe at once, without a new connection
            self._thread.join(timeout=self._settings.connect_timeout + 5.0)

    def reconnect(self) -> None:
        """Drop the current connection and listen again on a new one: the reconnect is
        followed by `on_connect` (a catch-up), as after any loss."""
        self._abort()

    def _run(self) -> None:
        delay = 0.05
        while not self._stop.is_set():
            try:
                conn = connect(self._settings, session=True)
            except StoreUnavailableError as exc:
                if self._on_unreachable is not None:
                    self._on_unreachable()
                self._backoff("listener cannot connect; retrying", exc, delay)
                delay = min(delay * 2, 2.0)
                continue
            try:
                with conn:
                    self._attach(conn)
                    leasing = self._leasing
                    listening_from = time.monotonic()
                    conn.execute(f'LISTEN "{self._settings.channel}"')
                    if leasing is not None:
                        keys.listen(conn, leasing.probe_channel)
                        # Named a listener only once it listens: a forget that finds this
                        # session in pg_locks gets its answer (see lifecycle/eviction.py).
                        keys.take_listener_lock(conn, leasing.lock)
                    conn.execute(f'LISTEN "{self._control}"')  # last: recognisable
                    delay = 0.05
                    self._on_connect()  # a store with encryption evicts its cached keys
                    if leasing is not None:  # what is notified from now on comes here
                        leasing.keyring.lease(listening_from + LEASE)
                    self._listen(conn)
            except (psycopg.Error, _Silent) as exc:
                self._backoff("listener connection lost; reconnecting", exc, delay)
                delay = min(delay * 2, 2.0)
            except Exception as exc:  # a bug must not end the thread: events would stop
                self.log.exception("listener failed; reconnecting", error=repr(exc))
                self._stop.wait(delay)
                delay = min(delay * 2, 2.0)
            finally:
                if self._leasing is not None:
                    self._leasing.keyring.lease(0.0)  # forgets may be missed from now on
                self._detach()

    def _backoff(self, message: str, exc: BaseException, delay: float) -> None:
        if not self._stop.is_set():
            self.log.warning(message, error=str(exc).strip().split("\n")[0], delay=delay)
            self._stop.wait(delay)

    def _listen(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        interval = self._settings.health_interval
        last_traffic = time.monotonic()
        leasing = self._leasing
        renew_at = time.monotonic() + RENEW if leasing is not None else math.inf
        probe: tuple[str, float] | None = None  # a notice to itself in flight: (token, sent)
        while not self._stop.is_set():
            now = time.monotonic()
            if probe is not None and now - probe[1] > self._settings.health_timeout:
                raise _Silent(
                    f"its own notice did not come back within {self._settings.health_timeout:g} s"
                )
            if leasing is not None and probe is None and now >= renew_at:
                token = uuid.uuid4().hex[:16]
                probe = (token, time.monotonic())
                self._probe(
                    functools.partial(
                        keys.answer, conn, leasing.probe_channel, token, self._control
                    )
                )
                last_traffic = time.monotonic()
                continue
            idle = now - last_traffic
            if idle >= interval:
                self._probe(functools.partial(keys.listen, conn, self._control))
                last_traffic = time.monotonic()
                continue
            wait = min(_POLL, interval - idle)
            if leasing is not None:
                # Up to the next renewal, or to the deadline of the one in flight.
                due = renew_at if probe is None else probe[1] + self._settings.health_timeout
                wait = min(wait, due - now)
            answers: list[str] = []
            for note in conn.notifies(timeout=max(wait, 0.0), stop_after=1):
                last_traffic = time.monotonic()
                if self._stop.is_set():
                    return
                if leasing is not None and note.channel == leasing.probe_channel:
                    if probe is not None and note.payload == probe[0]:
                        # Every notice committed before it was sent came (and was handled)
                        # before it: the cache is current as of the send.
                        leasing.keyring.lease(probe[1] + LEASE)
                        renew_at, probe = probe[1] + RENEW, None
                    continue
                if note.channel != self._settings.channel:
                    continue
                kind, _, rest = note.payload.partition(",")
                if kind in _STREAM_NOTICES:  # "link|delete|forget,origin,stream_uuid|token"
                    origin, _, stream_uuid = rest.partition(",")
                    if kind == "forget":  # any instance's, this one's too: then answered
                        if self._on_stream is not None:
                            self._on_stream(kind, "")
                        if leasing is not None and stream_uuid:
                            answers.append(stream_uuid)
                    elif origin != self._origin and self._on_stream is not None:
                        self._on_stream(kind, stream_uuid)
                    continue
                last, _, origin = rest.partition(",")
                if origin == self._origin:
                    continue
                try:
                    self._on_notify(int(last))
                except ValueError:
                    self.log.warning("ignoring malformed notification")
            for token in answers:  # evicted: the forget may go on
                assert leasing is not None
                self._probe(
                    functools.partial(
                        keys.answer, conn, leasing.forgets_channel, token, self._control
                    )
                )

    def _probe(self, trip: Callable[[], None]) -> None:
        """One round trip (`trip`) within health_timeout, or the connection is given up
        (_Silent)."""
        fired = threading.Event()

        def expire() -> None:
            fired.set()
            self._abort()

        watchdog = threading.Timer(self._settings.health_timeout, expire)
        watchdog.daemon = True
        watchdog.start()
        try:
            trip()
        except psycopg.Error:
            if fired.is_set():
                raise _Silent(
                    f"no answer to a health probe within {self._settings.health_timeout:g} s"
                ) from None
            raise
        finally:
            watchdog.cancel()
            watchdog.join()

    def _attach(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        with self._sock_lock:
            self._sock = socket.socket(fileno=os.dup(conn.fileno()))
        if self._stop.is_set():
            self._abort()  # stop() ran before this socket was known

    def _detach(self) -> None:
        with self._sock_lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def _abort(self) -> None:
        """Shut the current connection's socket down: a blocked read ends with an error."""
        with self._sock_lock:
            if self._sock is not None:
                try:
                    self._sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
