"""Shared helpers for the subscription tests: subscribers, waits, SQL probes, child processes.

Imported as ``support`` (pytest puts ``tests/`` on ``sys.path`` since it has no ``__init__.py``).
Every wait here is bounded: a queue read with a timeout or a poll loop with a deadline.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pykka
from psycopg import sql

import eventstore_actors
from eventstore_actors import EventData, Events, EventStore, RecordedEvent, Subscribed, Subscription

__all__ = [
    "QUIET",
    "WAIT",
    "ActorSubscriber",
    "ChildProcess",
    "Delivery",
    "QueueSubscriber",
    "actor_subscriber",
    "all_events",
    "checkpoint",
    "checkpoints",
    "events",
    "fresh_schema",
    "kill_backends",
    "listener_backends",
    "lock_backends",
    "process_backends",
    "query",
    "subscribe_retrying",
    "subscription_lock_key",
    "wait_until",
]

T = TypeVar("T")

#: Default seconds to wait for something that should happen.
WAIT = 10.0
#: Seconds during which something that should not happen is watched for.
QUIET = 0.5


def events(count: int, start: int = 1, **extra: Any) -> list[EventData]:
    """`count` simple events numbered `start`, `start + 1`, ... in their data."""
    return [
        EventData(
            data={"n": n, **extra},
            event_type="tests.Numbered",
            metadata={"meta": n},
            correlation_id=f"corr-{n}",
            causation_id=f"cause-{n}",
        )
        for n in range(start, start + count)
    ]


def wait_until(
    predicate: Callable[[], T], timeout: float = WAIT, interval: float = 0.02, what: str = ""
) -> T:
    """Poll `predicate` until it returns a truthy value (returned), failing after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


# Subscribers ----------------------------------------------------------------------------------
class QueueSubscriber:
    """A plain subscriber: `tell` puts each message in a queue the test reads with timeouts."""

    def __init__(self) -> None:
        self.queue: queue.Queue[Any] = queue.Queue()

    def tell(self, message: Any) -> None:
        self.queue.put(message)

    def next(self, timeout: float = WAIT) -> Any:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message within {timeout} s") from None

    def subscribed(self, timeout: float = WAIT) -> Subscription:
        message = self.next(timeout)
        assert isinstance(message, Subscribed), f"expected Subscribed, got {message!r}"
        return message.subscription

    def batch(self, timeout: float = WAIT) -> list[Any]:
        """The events of the next message, which must be an `Events`."""
        message = self.next(timeout)
        assert isinstance(message, Events), f"expected Events, got {message!r}"
        assert message.events, "an empty Events batch was sent"
        return list(message.events)

    def nothing(self, within: float = QUIET) -> None:
        """Assert that no message arrives within `within` seconds."""
        try:
            message = self.queue.get(timeout=within)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected message: {message!r}")

    def collect(
        self,
        sub: Subscription,
        count: int,
        timeout: float = WAIT,
        ack: bool = True,
    ) -> list[Any]:
        """Receive batches (acking each if `ack`) until `count` events arrived; return them."""
        got: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"got {len(got)} of {count} events within {timeout} s")
            message = self.next(remaining)
            if isinstance(message, Subscribed):
                continue
            assert isinstance(message, Events), f"unexpected message {message!r}"
            got.extend(message.events)
            if ack:
                sub.ack(message.events if _all_recorded(message.events) else _last(message))
        return got


def _all_recorded(items: Sequence[Any]) -> bool:
    return all(isinstance(e, RecordedEvent) for e in items)


def _last(message: Events) -> int:
    last = message.events[-1]
    if isinstance(last, int):
        return last
    raise TypeError("mapped events must be int positions to be acked by collect()")


class ActorSubscriber(pykka.ThreadingActor):
    """A pykka actor subscriber that forwards every message to a queue, acking if `auto_ack`."""

    def __init__(self, sink: queue.Queue[Any], auto_ack: bool = False) -> None:
        super().__init__()
        self.sink = sink
        self.auto_ack = auto_ack

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Events) and self.auto_ack:
            message.subscription.ack(message.events)
        self.sink.put(message)
        return None


def actor_subscriber(auto_ack: bool = False) -> tuple[pykka.ActorRef[Any], QueueSubscriber]:
    """Start an `ActorSubscriber`; returns its ref and a `QueueSubscriber` reading its queue."""
    reader = QueueSubscriber()
    ref = ActorSubscriber.start(reader.queue, auto_ack)
    return ref, reader


def subscribe_retrying(subscribe: Callable[[], Subscription], timeout: float = 5.0) -> Subscription:
    """Call `subscribe` until the name is free (SubscriptionAlreadyExistsError), bounded."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return subscribe()
        except eventstore_actors.SubscriptionAlreadyExistsError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


# SQL probes -----------------------------------------------------------------------------------
def checkpoints(dsn: str, schema: str) -> dict[tuple[str, str], int]:
    """Every subscription row: (stream_uuid, name) -> last_seen."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT stream_uuid, subscription_name, last_seen FROM {}.subscriptions"
            ).format(sql.Identifier(schema))
        ).fetchall()
    return {(r[0], r[1]): int(r[2]) for r in rows}


def checkpoint(dsn: str, schema: str, stream_uuid: str, name: str) -> int | None:
    return checkpoints(dsn, schema).get((stream_uuid, name))


def subscription_lock_key(schema: str, stream_uuid: str, name: str) -> str:
    """The text whose hash is a subscription's advisory lock key (an implementation detail of
    eventstore_actors.subscriptions.actor, used only to aim at one subscription's connection)."""
    return json.dumps(["eventstore_actors", schema, stream_uuid, name])


_LOCK_HOLDERS = """
SELECT DISTINCT a.pid
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted
  AND a.application_name = 'eventstore-actors'
  AND (%(key)s::text IS NULL
       OR ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended(%(key)s::text, 0))
"""


def _ints(dsn: str, text: str, params: Any) -> list[int]:
    """The first column of `text`'s rows, as ints, on a connection of its own."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [int(r[0]) for r in conn.execute(text, params).fetchall()]


def lock_backends(dsn: str, key: str | None = None) -> list[int]:
    """Pids of eventstore-actors backends holding an advisory lock (`key`: only that lock)."""
    return _ints(dsn, _LOCK_HOLDERS, {"key": key})


def _client_ports(pid: int) -> set[int]:
    """Local TCP ports of the sockets process `pid` holds (Linux /proc)."""
    inodes: set[str] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 9 and fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def process_backends(dsn: str, pid: int | None = None) -> dict[int, str]:
    """eventstore-actors backends whose client is process `pid` (default: this one), as
    {backend pid: last query}. Other sessions may share the server: never touch theirs.
    Over a unix socket (client_port -1, e.g. the throwaway embedded server, which only this
    test run uses) every eventstore-actors backend is returned."""
    ports = _client_ports(pid or os.getpid())
    if pid is None:  # PgBouncer mode: the server connections serving this process's stores
        from .pgbouncer import suite_server_ports

        ports |= suite_server_ports()
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid, client_port, query FROM pg_stat_activity "
            "WHERE application_name = 'eventstore-actors' AND pid <> pg_backend_pid()"
        ).fetchall()
    return {
        int(r[0]): str(r[2]) for r in rows if r[1] is None or int(r[1]) < 0 or int(r[1]) in ports
    }


def client_ports(dsn: str, pids: Iterable[int]) -> list[int]:
    """The client-side TCP ports of backends `pids` (through the test proxy: its upstream
    local ports, which `Proxy.freeze` takes)."""
    return _ints(dsn, "SELECT client_port FROM pg_stat_activity WHERE pid = ANY(%s)", [list(pids)])


def waiting_on_lock(dsn: str, app: str) -> list[int]:
    """Backends of the store named `app` (its application_name) blocked on a lock."""
    return _ints(
        dsn,
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'",
        [app],
    )


def listener_backends(dsn: str, schema: str) -> list[int]:
    """Backends LISTENing on `schema`'s channels (their last query names the channel)."""
    return _ints(
        dsn,
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'eventstore-actors' "
        "AND query LIKE %s",
        [f'LISTEN "eventstore_actors.{schema}.%'],
    )


def kill_backends(dsn: str, pids: Iterable[int]) -> int:
    """pg_terminate_backend each pid; returns how many were terminated."""
    killed = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        for pid in pids:
            row = conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
            killed += bool(row and row[0])
    return killed


# Child processes ------------------------------------------------------------------------------
CHILD_SCRIPT = Path(__file__).with_name("child.py")


class ChildProcess:
    """A child Python process running `child.py`: an EventStore on the same dsn and schema.

    Commands are JSON lines on its stdin; it answers each with one JSON line {"reply": ...}
    and reports subscription messages as {"event": ...} lines (see child.py).
    """

    def __init__(self, dsn: str, schema: str) -> None:
        command, env = self._command(dsn, schema)
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self.notices: queue.Queue[dict[str, Any]] = queue.Queue()
        self.stderr_tail: list[str] = []
        self._out = threading.Thread(target=self._read_stdout, daemon=True)
        self._err = threading.Thread(target=self._read_stderr, daemon=True)
        self._out.start()
        self._err.start()
        self.request({"cmd": "ping"}, timeout=30.0)

    def _command(self, dsn: str, schema: str) -> tuple[list[str], dict[str, str]]:
        """The child's command line and environment (this checkout's package first)."""
        package_root = str(Path(eventstore_actors.__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH", "")) if p
        )
        return [sys.executable, str(CHILD_SCRIPT), dsn, schema], env

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue  # not ours (a stray print)
            if not isinstance(message, dict):
                continue
            if "reply" in message:
                self.replies.put(message)
            elif "event" in message:
                self.notices.put(message)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_tail.append(line)
            del self.stderr_tail[:-200]

    def request(self, command: dict[str, Any], timeout: float = WAIT) -> dict[str, Any]:
        """Send one command and wait for its reply; raises AssertionError on timeout."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(command) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise AssertionError(f"child died: {''.join(self.stderr_tail[-20:])}") from None
        try:
            return self.replies.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"child did not answer {command['cmd']!r} within {timeout} s; "
                f"stderr tail: {''.join(self.stderr_tail[-20:])}"
            ) from None

    def ok(self, command: dict[str, Any], timeout: float = WAIT) -> dict[str, Any]:
        reply = self.request(command, timeout)
        assert reply.get("ok"), f"child failed {command}: {reply}"
        return reply

    def notice(self, timeout: float = WAIT) -> dict[str, Any]:
        try:
            return self.notices.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no notice from the child within {timeout} s") from None

    def close(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            try:
                self.request({"cmd": "stop"}, timeout=timeout)
            except AssertionError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5.0)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> ChildProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def all_events(store: EventStore) -> list[RecordedEvent]:
    return list(store.stream_all_forward(0, 1000))


class Delivery:
    """Records what one subscriber receives and acks, and checks the delivery rules.

    Batches are split into runs: a run continues while each batch starts right after the last
    position received; a batch starting at or below it starts a new run (a redelivery, allowed
    only after a restart, resubscribe or subscriber death, and only right after an acked
    position). A batch starting beyond last + 1 is a gap: always an error.
    """

    def __init__(self, position: Callable[[Any], int], start: int = 0) -> None:
        self.position = position
        self.start = start
        self.runs: list[list[int]] = []
        self.acked: list[int] = []
        self.errors: list[str] = []
        self.rewinds = 0  # runs started without new_run: redeliveries after an actor restart
        #: A lower bound of the checkpoint a new subscriber resumes from (set before it
        #: subscribes): a new run must not start before it.
        self.floor = start
        self.lock = threading.Lock()

    def received(self, batch: Sequence[Any], new_run: bool = False) -> None:
        got = [self.position(e) for e in batch]
        with self.lock:
            if got != list(range(got[0], got[0] + len(got))):
                self.errors.append(f"batch not contiguous: {got}")
            last = self.runs[-1][-1] if self.runs and self.runs[-1] else self.start
            if not new_run and self.runs and got[0] == last + 1:
                self.runs[-1].extend(got)
                return
            if got[0] > last + 1 and not (new_run and got[0] - 1 in self.resumable()):
                self.errors.append(f"gap: batch {got[:3]}... after {last}")
            elif new_run and got[0] - 1 < self.floor:
                self.errors.append(f"run starts at {got[0]}, before the checkpoint {self.floor}")
            elif got[0] - 1 not in self.resumable():
                self.errors.append(
                    f"run starts at {got[0]}, not right after an acked position "
                    f"(max acked {max(self.acked, default=self.start)})"
                )
            if self.runs and not new_run:
                self.rewinds += 1
            self.runs.append(got)

    def resumable(self) -> set[int]:
        """Positions a new run may start right after: the start and every acked position, and
        any position below the highest ack (an ack clamped to what a restarted run sent)."""
        top = max(self.acked, default=self.start)
        return set(range(self.start, top + 1))

    def ack(self, position: int) -> None:
        with self.lock:
            self.acked.append(position)

    def covered(self) -> set[int]:
        with self.lock:
            return {p for run in self.runs for p in run}

    def last(self) -> int:
        with self.lock:
            return self.runs[-1][-1] if self.runs else self.start

    def check(self, expected_last: int) -> None:
        assert not self.errors, self.errors[:5]
        missing = set(range(self.start + 1, expected_last + 1)) - self.covered()
        assert not missing, f"never delivered: {sorted(missing)[:10]} ({len(missing)} in all)"


@contextmanager
def fresh_schema(dsn: str) -> Iterator[str]:
    """A new schema initialised with `admin.init` (its name), dropped on exit."""
    from eventstore_actors import admin

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin.init(dsn, name)
    try:
        yield name
    finally:
        admin.drop(dsn, name)


def query(dsn: str, schema: str, text: str, *args: Any) -> list[tuple[Any, ...]]:
    """The rows of `text` (with `args`) run in `schema` on a connection of its own."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        cur = conn.execute(text, args or None)
        return cur.fetchall() if cur.description else []
