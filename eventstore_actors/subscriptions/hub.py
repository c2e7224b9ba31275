"""One session connection holding every advisory lock of a store's subscriptions.

With `shared_lock_session` (the default), a store's subscriptions do not open a dedicated
connection each (`LockSession`): they share its `LockHub`, one session connection (on
`session_dsn` when given) used under a mutex. Each subscription gets a `SharedLockSession`,
with the same interface as `LockSession` (plus `advance`, the batched checkpoint write).

Fencing: a lock and the checkpoint writes it guards go through the same connection, so they die
together. Every connection the hub opens starts a new generation; a session's lock belongs to
the generation it was taken in. When the connection is lost (seen by any session's statement or
probe), every lock of that generation is lost at once: each session's `alive()` turns False and
its `run()` raises `LockLost`, so every subscription stops delivering before its next batch
(or on its next health check), reconnects, retakes its lock and reloads its checkpoint, exactly
as after losing a dedicated connection.

Checkpoint writes are batched: `SharedLockSession.advance` queues the position and returns; the
hub's writer thread writes every queued checkpoint of a lock still held in one statement as
soon as the connection is free (so no subscription writes the others' checkpoints in its
delivery path). An unlock writes the queued ones first; if that write (or the unlock itself)
fails for a reason of the moment (a cancel, a timeout), the lock stays held and the hub's thread
retries both, in that order, so the last acked checkpoint of a subscription that stops is
never dropped. A queued write whose lock was lost is dropped (those events are delivered
again: at least once, as after any lost connection).

A lock is reported held (`alive`, `vouch`) only under the connection's lease (`lock.LEASE`,
3 s): while the last round trip on it that was answered (the probe, a checkpoint write, a lock
or an unlock) started less than that ago. In between, only the socket is looked at, and on a
frozen network path it never says that the backend was ended (by a DBA, or by the server's
keepalives) and its locks taken elsewhere; the probe meant to find out meanwhile waits, for up
to `io_timeout`, on that silent socket. So once the lease has run out, deliveries pause: a
fan-out batch is not vouched for, and `alive` waits for the connection (at most `io_timeout`,
as long as the call on it may take) and makes a round trip itself. An answer renews the lease
and delivery resumes (a probe merely late on a loaded machine loses nothing, and re-delivers
nothing); a connection that stays silent is lost when its call's deadline passes, with every
lock of its generation, as above. A holder whose lock connection stopped answering thus
delivers nothing once `LEASE` has passed since the start of its last answered round trip (the
probe runs every second while idle), whereas another process may take the name as soon as the
backend is gone. (The watchdog's deadline stays `io_timeout`: a shorter one would turn a slow
statement into a lost connection, every subscription of the store re-reading from its
checkpoint.)

Advisory locks are re-entrant within one session: the hub keeps the set of names it holds, so a
second subscription of the same name in this store is refused as another process's would be.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg

from .. import logs
from ..config import Settings
from ..errors import EventStoreError, StoreUnavailableError
from ..storage import checkpoints, locks, parked, reader
from ..storage.connection import has_input
from ..storage.deadline import guard
from ..storage.errors import is_gone
from ..storage.pool import ReadPool
from ..storage.sessions import Session
from .lock import Interrupted, Lease, LockLost, run_guarded

__all__ = ["LockHub", "SharedLockSession"]

T = TypeVar("T")
log = logs.get_logger("eventstore_actors.subscriptions")
#: Seconds of idleness after which the hub's thread probes its connection.
_PROBE_INTERVAL = 1.0
#: Seconds the probe's findings serve the health checks: a few probe intervals, so that a
#: probe late on a loaded machine does not send every subscription to the read pool at once.
_FRESH_FOR = 5.0 * _PROBE_INTERVAL
#: Seconds the fan-out waits for a call on the connection whose answer is arriving.
_VOUCH_WAIT = 0.03


class LockHub:
    """The store's shared lock connection (thread-safe: every call holds `_mutex`)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._mutex = threading.Lock()
        self._session = Session(settings)  # ends the backend of a connection lost in use
        self._conn: psycopg.Connection[Any] | None = None  # the session's, while in use
        self.generation = 0  # bumped by every connection opened
        self._lease = Lease()  # renewed by every answered round trip (see the module doc)
        self._held: set[str] = set()  # keys locked in the current generation
        # Keys let go of whose last checkpoint or unlock is still to be done (by the thread).
        self._releasing: set[str] = set()
        self._closed = False
        # Checkpoints to write: key -> (generation, stream_uuid, name, position).
        self._pending: dict[str, tuple[int, str, str, int]] = {}
        self._pending_mutex = threading.Lock()
        self.writes = 0  # batched checkpoint statements run (for tests and the benchmark)
        self._queued = threading.Event()
        self._head: tuple[int, float] | None = None  # (last event_id, when) from the probe
        self._writer: threading.Thread | None = None
        self._vouched: tuple[int, int | None] = (-1, None)  # (fan-out batch, generation)
        self._follows: dict[str, tuple[str, str]] = {}  # key -> (stream_uuid, name)
        # From the probe: (the subscriptions asked about, those with parked events marked
        # for replay, when).
        self._replay: tuple[frozenset[tuple[str, str]], frozenset[tuple[str, str]], float] = (
            frozenset(),
            frozenset(),
            0.0,
        )

    # Called with the mutex held -------------------------------------------------------------
    def _ensure(self) -> None:
        conn = self._conn
        if conn is not None and not is_gone(conn):
            return
        self._lose()
        if self._closed:
            raise LockLost("the store is stopping")
        conn = self._session.get()  # StoreUnavailableError if unreachable
        started = time.monotonic()
        try:
            # Losing the last acks in a server crash only means re-delivery (at least once).
            with guard(conn, self._settings.io_timeout):
                locks.relax_commits(conn)
        except BaseException:
            self._session.lost()
            raise
        self._lease.renew(started)
        self._conn = conn
        self.generation += 1
        self._start_writer()

    def _lose(self) -> None:
        """The connection is gone: so is every lock of its generation."""
        self._conn = None
        self._held.clear()
        self._releasing.clear()
        self._lease.end()
        self._session.lost()  # its backend may live on (a frozen network), holding locks

    def _run(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        conn = self._conn
        if conn is None:
            raise LockLost("no lock connection")
        return run_guarded(conn, self._settings.io_timeout, work, self._lose, self._lease)

    def _answers(self, renew: bool = True) -> bool:
        """Whether the connection's backend is alive, holding this generation's locks: yes
        while the lease holds and the socket has nothing to say, else as a round trip finds
        (a lost connection: lost, with its locks); no round trip to renew a lease run out
        unless `renew`. Called with the mutex held."""
        conn = self._conn
        if conn is None or is_gone(conn):
            self._lose()
            return False
        if not self._lease.held() and not renew:
            return False
        if self._lease.held() and not has_input(conn):
            return True
        try:
            head = self._run(reader.last_event_id)
        except LockLost:
            return False
        except (Interrupted, EventStoreError):
            pass  # answered with an error: the backend is there (if the server said it)
        else:
            self._head = (head, time.monotonic())
        return self._lease.held()

    def _flush(self) -> bool:
        """Write every queued checkpoint whose lock is still held, in one statement (False:
        it failed for a reason of the moment, and they are queued again)."""
        with self._pending_mutex:
            pending, self._pending = self._pending, {}
        rows = sorted(
            (stream, name, position)
            for key, (generation, stream, name, position) in pending.items()
            if self._current(key, generation)
        )
        if not rows:
            return True
        self.writes += 1
        try:
            self._run(lambda c: checkpoints.advance_many(c, rows))
        except LockLost:
            return True  # every lock went with the connection: each session finds out
        except (Interrupted, EventStoreError) as exc:  # a refused statement too: retried
            log.warning("checkpoint writes failed; retried", error=str(exc))
            with self._pending_mutex:  # queued again, unless a later ack replaced them
                for key, entry in pending.items():
                    self._pending.setdefault(key, entry)
            self._queued.set()
            return False
        return True

    @contextmanager
    def _holding(self) -> Iterator[None]:
        with self._mutex:
            yield

    def _start_writer(self) -> None:
        with self._pending_mutex:
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_queued, name="eventstore-lock-hub", daemon=True
                )
                self._writer.start()

    def _write_queued(self) -> None:
        """The hub's thread: writes the queued checkpoints as soon as the connection is free,
        all in one statement (whatever queued while it waited goes in the same one); probes
        the connection once per health interval (a round trip also finds a half-open socket),
        for every subscription at once."""
        probed = time.monotonic()
        while not self._closed:
            self._queued.wait(max(0.0, probed + _PROBE_INTERVAL - time.monotonic()))
            self._queued.clear()
            with self._mutex:
                if self._conn is None or self._closed:
                    continue
                written = self._flush() and self._release_pending()
                if time.monotonic() >= probed + _PROBE_INTERVAL:
                    probed = time.monotonic()
                    written = self._probe() and written
            if not written:
                time.sleep(self._settings.tick_interval)  # not in a tight loop

    def _probe(self) -> bool:
        """A round trip that also reads the head of all streams and which subscriptions have
        parked events marked for replay, shared by the subscriptions' health checks (see
        `SharedLockSession.head` and `replay_marked`): two statements for all of them, not
        two each."""
        try:
            head = self._run(reader.last_event_id)
            self._head = (head, time.monotonic())
            asked = [self._follows[k] for k in sorted(self._held) if k in self._follows]
            found = self._run(lambda c: parked.marked(c, asked))
            self._replay = (frozenset(asked), frozenset(found), time.monotonic())
        except LockLost:
            pass  # every session finds out (alive() is False)
        except (Interrupted, EventStoreError):
            return False
        return True

    def _release(self, key: str) -> bool:
        """Unlock `key` (held in this generation), unless its last checkpoint is still queued
        or the unlock fails for a reason of the moment: then the key stays held, left to the
        thread (False). A lost connection released it with the others."""
        if key in self._pending:
            self._releasing.add(key)
            return False
        try:
            self._run(lambda c: locks.unlock(c, key))
        except LockLost:
            return True  # lost with every lock of its generation
        except (Interrupted, EventStoreError) as exc:
            log.warning("subscription unlock failed; retried", error=str(exc))
            self._releasing.add(key)
            self._queued.set()
            return False
        self._held.discard(key)
        self._releasing.discard(key)
        self._follows.pop(key, None)
        return True

    def _release_pending(self) -> bool:
        """The thread's part of `unlock`: the keys whose checkpoint is now written."""
        for key in sorted(self._releasing):
            if self._conn is None:
                break
            if key in self._held and not self._release(key):
                return False  # retried after a tick
        return True

    def _current(self, key: str, generation: int) -> bool:
        return generation == self.generation and key in self._held and self._conn is not None

    # For SharedLockSession ----------------------------------------------------------------------
    def connect(self) -> None:
        with self._holding():
            self._ensure()

    def try_lock(self, key: str, follows: tuple[str, str] | None = None) -> int | None:
        """The generation the lock was taken in, or None (held elsewhere, or here).
        `follows`: the subscription's (stream_uuid, name), for the probe's parked read."""
        with self._holding():
            self._ensure()
            if key in self._held:
                return None
            if not self._run(lambda c: locks.try_lock(c, key)):
                return None
            self._held.add(key)
            if follows is not None:
                self._follows[key] = follows
            return self.generation

    def run(self, key: str, generation: int, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """`work` on the connection, if the lock `key` of `generation` is still held."""
        with self._holding():
            if not self._current(key, generation):
                raise LockLost("the shared lock connection was lost")
            return self._run(work)

    def alive(self, key: str, generation: int) -> bool:
        """Whether the lock is still held; while the lease holds, a round trip only if the
        socket has something to say (see `_answers`). Every delivery looks at the socket: a
        backend that was ended wrote its farewell there before its locks went, so a lock
        another session may hold now is not reported alive, unless the farewell is held up
        on the network path: what the lease bounds.

        While another call holds the connection and the lease holds, its socket is looked at
        without reading it: nothing to read means the backend is alive (and holds the lock);
        something to read is that call's answer or the backend's farewell, so this waits for
        the call to end (at most `io_timeout`, the call's own deadline) and checks then. Once
        the lease has run out, it always waits so, then makes a round trip unless that call
        renewed it: the delivery asking pauses meanwhile."""
        if not self._current(key, generation):
            return False  # a lost generation: no need for the mutex
        if not self._mutex.acquire(blocking=False):
            if self._lease.held() and not _readable(self._conn):
                return self._current(key, generation)
            if not self._mutex.acquire(timeout=self._settings.io_timeout):
                return False
        try:
            return self._current(key, generation) and self._answers()
        finally:
            self._mutex.release()

    def vouch(self, batch: int) -> int | None:
        """The generation whose locks still hold, looked at once per fan-out `batch` (a
        number the fan-out gives each published batch): every direct delivery of that batch
        (see `subscriptions.direct`) relies on this one look at the socket, where `alive`
        looks once per delivery. While a call holds the connection and its answer is
        arriving, waits for it at most `_VOUCH_WAIT`; None (the connection is gone, or still
        busy, or the lease has run out) sends the batch the actors' way, where `alive`
        decides."""
        vouched = self._vouched
        if vouched[0] == batch:
            return vouched[1]
        generation, found = self.generation, None
        conn = self._conn if self._lease.held() else None  # run out: never on this thread
        busy = conn is not None and not self._mutex.acquire(blocking=False)
        if busy and not _readable(conn):
            found = generation  # in use by a call, and nothing came back: alive
        elif conn is not None and (not busy or self._mutex.acquire(timeout=_VOUCH_WAIT)):
            try:
                if generation == self.generation and self._answers(renew=False):
                    found = generation
            finally:
                self._mutex.release()
        if found is not None and generation != self.generation:
            found = None
        self._vouched = (batch, found)
        return found

    def holds(self, key: str, generation: int) -> bool:
        """Whether the lock `key` of `generation` is held, as far as known (no I/O)."""
        return self._current(key, generation)

    def advance(
        self, key: str, generation: int, stream_uuid: str, name: str, position: int
    ) -> None:
        """Queue a checkpoint write; the hub's thread writes it with the others queued."""
        with self._pending_mutex:
            self._pending[key] = (generation, stream_uuid, name, position)
        if not self._queued.is_set():  # set() is a Condition's notify: not once per ack
            self._queued.set()  # (the thread clears it before it takes what is queued)

    def unlock(self, key: str, generation: int) -> None:
        """Release the lock if this generation still holds it (else it went with the
        connection)."""
        with self._holding():
            if not self._current(key, generation) or key in self._releasing:
                return
            if key in self._pending:
                self._flush()  # this lock's last checkpoint, before the lock goes
            if self._current(key, generation):
                self._release(key)  # or, if still queued, once the thread wrote it

    def replay_marked(self, follows: tuple[str, str]) -> bool | None:
        """Whether the subscription had parked events marked for replay as of the last
        probe, if recent and it was asked about (None: unknown, read them)."""
        asked, found, at = self._replay
        if time.monotonic() - at > _FRESH_FOR or follows not in asked:
            return None
        return follows in found

    def head(self) -> int | None:
        """The last event_id as of the last probe, if recent."""
        head = self._head
        if head is None or time.monotonic() - head[1] > _FRESH_FOR:
            return None
        return head[0]

    def backend(self) -> int | None:
        """The pid of the hub's backend (None: not connected)."""
        with self._holding():
            return self._session.pid if self._conn is not None else None

    def close(self) -> None:
        """Close the connection (every lock goes with it); no reconnect afterwards, so the
        backend of a connection lost before, if ending it at once failed, is ended now."""
        with self._holding():
            if self._conn is not None and self._pending:
                self._flush()  # a last try for the checkpoints still queued
            self._closed = True
            self._conn = None
            self._held.clear()
            self._session.close()
            self._session.settle()
        self._queued.set()
        writer = self._writer
        if writer is not None and writer is not threading.current_thread():
            writer.join(timeout=5.0)


def _readable(conn: psycopg.Connection[Any] | None) -> bool:
    """Whether the connection's socket has something to read (or is gone), not reading it."""
    return conn is None or has_input(conn)


class SharedLockSession:
    """`LockSession`'s interface for one subscription's lock on a `LockHub`."""

    def __init__(
        self,
        hub: LockHub,
        key: str,
        pool: ReadPool | None = None,
        follows: tuple[str, str] | None = None,
    ) -> None:
        self._hub = hub
        self._pool = pool
        self._key = key
        self._follows = follows  # (stream_uuid, name): see `replay_marked`
        self._generation = -1
        self.locked = False

    def connect(self) -> None:
        self._hub.connect()

    def try_lock(self) -> bool:
        generation = self._hub.try_lock(self._key, self._follows)
        self.locked = generation is not None
        if generation is not None:
            self._generation = generation
        return self.locked

    def run(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """`work` on the hub's connection while this lock holds: LockLost otherwise."""
        if not self.locked:
            raise LockLost("no lock held")
        try:
            return self._hub.run(self._key, self._generation, work)
        except LockLost:
            self.locked = False
            raise

    def alive(self) -> bool:
        return self.locked and self._hub.alive(self._key, self._generation)

    def vouched(self, batch: int) -> bool:
        """Whether this lock holds, as of the hub's one look for fan-out `batch` (see
        `LockHub.vouch`): what a direct delivery checks instead of `alive`."""
        if not self.locked:
            return False
        generation = self._hub.vouch(batch)
        return generation == self._generation and self._hub.holds(self._key, generation)

    def advance(self, stream_uuid: str, name: str, position: int) -> None:
        """Queue a checkpoint write (batched with the others'); LockLost if not held."""
        if not self.locked:
            raise LockLost("no lock held")
        self._hub.advance(self._key, self._generation, stream_uuid, name, position)

    def read(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """A single-statement read, from the read pool (any connection will do) while this
        lock holds: LockLost otherwise, or when the database went away with the lock."""
        if self._pool is None:
            return self.run(work)
        if not self.alive():
            raise LockLost("the shared lock connection is gone")
        try:
            return self._pool.run(work)
        except StoreUnavailableError:
            if not self.alive():
                raise LockLost("the shared lock connection is gone") from None
            raise

    def replay_marked(self) -> bool | None:
        """Whether this subscription has parked events marked for replay, as of the hub's
        last probe (None: unknown; see `LockHub.replay_marked`)."""
        if self._follows is None or not self.locked:
            return None
        return self._hub.replay_marked(self._follows)

    def head(self, stream_uuid: str | None) -> int:
        """The last position (see `LockSession.head`); for all streams, the hub's probe's
        (at most `_FRESH_FOR` old: a backstop a moment later) while this lock holds."""
        if stream_uuid is None:
            head = self._hub.head()
            if head is not None and self.alive():
                return head
            return self.read(reader.last_event_id)
        return self.read(lambda c: reader.stream_version(c, stream_uuid)) or 0

    def release(self) -> None:
        self.drop()

    def drop(self) -> None:
        """Let go of the lock (the hub's connection stays for the others)."""
        if self.locked:
            self.locked = False
            self._hub.unlock(self._key, self._generation)
