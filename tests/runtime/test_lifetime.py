"""Process lifetime (part 3, "Rules tightened"): the store's threads never keep the interpreter
alive. A program that returns from main without `store.stop()` exits, after the store stopped
itself (appends that returned are committed, acked checkpoints stored); the same at the end of
`asyncio.run`; Ctrl-C ends a README-style service without a traceback from the store's threads.

Each program runs in a child process (the interpreter's exit is what is under test)."""

from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pykka
import pytest
from support import QueueSubscriber, events, wait_until

from eventstore_actors import Events, EventStore, SubscriptionAlreadyExistsError, lifetime

ROOT = Path(__file__).resolve().parents[2]
#: Seconds a child may take to exit once its main returned (or it was interrupted).
EXIT_WITHIN = 20.0


def child_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    env.pop("EVENTSTORE_DSN", None)
    return env


def run_program(code: str, tmp_path: Path, *args: str) -> tuple[int, str, str, float]:
    """Run `code` as a script; (exit status, stdout, stderr, seconds). Killed and failed if it
    has not exited within 60 s (starting the store takes part of that)."""
    script = tmp_path / "program.py"
    script.write_text(textwrap.dedent(code))
    began = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, str(script), *args],
            cwd=tmp_path,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(
            f"the program did not exit (stdout {exc.stdout!r}, stderr {exc.stderr!r})"
        ) from None
    return done.returncode, done.stdout, done.stderr, time.monotonic() - began


def returned_at(stdout: str) -> float:
    """The monotonic time the program printed as its last act ("returning <t>")."""
    for line in stdout.splitlines():
        if line.startswith("returning "):
            return float(line.split()[1])
    raise AssertionError(f"the program did not get to its end: {stdout!r}")


def count_events(dsn: str, schema: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(f'SELECT count(*) FROM "{schema}".events').fetchone()
    assert row is not None
    return int(row[0])


FORGETFUL = """
    import queue, sys, time
    from eventstore_actors import EventData, Events, EventStore

    class Subscriber:
        def __init__(self) -> None:
            self.batches: queue.Queue = queue.Queue()
        def tell(self, message) -> None:
            if isinstance(message, Events):
                self.batches.put(message)

    def main(dsn: str, schema: str) -> None:
        store = EventStore.start(dsn, schema=schema)
        subscriber = Subscriber()
        store.subscribe_to_all_streams("forgetful", subscriber, max_batch=5, mixed_batches=True)
        for n in range(10):
            store.append_to_stream(f"s-{n}", 0, [EventData(data={"n": n})])
        first = subscriber.batches.get(timeout=30)
        first.subscription.ack(first.events)   # the others are never acked
        print("acked", first.events[-1].event_id, flush=True)
        print("returning", time.monotonic(), flush=True)   # no store.stop()

    main(sys.argv[1], sys.argv[2])
"""


def test_a_program_that_forgets_stop_exits(dsn: str, schema: str, tmp_path: Path) -> None:
    status, out, err, _ = run_program(FORGETFUL, tmp_path, dsn, schema)
    assert status == 0, err
    assert "Traceback" not in err, err
    assert time.monotonic() - returned_at(out) < EXIT_WITHIN
    assert count_events(dsn, schema) == 10  # every append that returned is committed
    acked = int(out.split("acked ")[1].split()[0])
    with EventStore.start(dsn, schema=schema) as store:
        info = store.subscription_info("forgetful")
        # The ack was stored when the store stopped itself; the rest comes again later.
        assert info.checkpoint == acked


ASYNC_FORGETFUL = """
    import asyncio, sys, time
    from eventstore_actors import EventData
    from eventstore_actors.aio import AsyncEventStore

    async def main(dsn: str, schema: str) -> None:
        store = await AsyncEventStore.start(dsn, schema=schema)
        subscription = await store.subscribe_to_all_streams("forgetful")
        for n in range(5):
            await store.append_to_stream(f"s-{n}", 0, [EventData(data={"n": n})])
        async for batch in subscription:
            await subscription.ack(batch)
            break
        print("returning", time.monotonic(), flush=True)   # no await store.stop()

    asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_an_asyncio_program_that_forgets_stop_exits(dsn: str, schema: str, tmp_path: Path) -> None:
    status, out, err, _ = run_program(ASYNC_FORGETFUL, tmp_path, dsn, schema)
    assert status == 0, err
    assert "Traceback" not in err, err
    assert time.monotonic() - returned_at(out) < EXIT_WITHIN
    assert count_events(dsn, schema) == 5


#: A README-style service that forgets to stop the store: a subscription and a loop waiting
#: for the next event, until Ctrl-C. `catch` decides whether main catches KeyboardInterrupt.
SERVICE = """
    import queue, sys, time
    from eventstore_actors import Events, EventStore

    class Subscriber:
        def __init__(self, received: queue.Queue) -> None:
            self.received = received
        def tell(self, message) -> None:
            if isinstance(message, Events):
                for event in message.events:
                    self.received.put(event)
                message.subscription.ack(message.events)

    def main(dsn: str, schema: str) -> None:
        store = EventStore.start(dsn, schema=schema)
        received: queue.Queue = queue.Queue()
        store.subscribe_to_all_streams("service", Subscriber(received))
        while True:
            event = received.get()
            print(event.event_id, event.stream_uuid, flush=True)

    if sys.argv[3] == "catch":
        try:
            main(sys.argv[1], sys.argv[2])
        except KeyboardInterrupt:
            print("stopped", flush=True)
    else:
        main(sys.argv[1], sys.argv[2])
"""


def interrupt_service(
    dsn: str, schema: str, tmp_path: Path, mode: str
) -> tuple[int, str, str, float]:
    script = tmp_path / "service.py"
    script.write_text(textwrap.dedent(SERVICE))
    with EventStore.start(dsn, schema=schema) as store:
        store.append_to_stream("before", 0, events(1))
    proc = subprocess.Popen(
        [sys.executable, str(script), dsn, schema, mode],
        cwd=tmp_path,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        seen = []
        while not (seen and seen[-1].startswith("1 before")):
            line = proc.stdout.readline()  # the next line printed (or "" once it ended)
            assert line, (seen, proc.poll())
            seen.append(line)
        began = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=EXIT_WITHIN)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {EXIT_WITHIN} s after Ctrl-C") from None
        return proc.returncode, out, err, time.monotonic() - began
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_ctrl_c_ends_a_service_that_forgets_stop(dsn: str, schema: str, tmp_path: Path) -> None:
    status, out, err, took = interrupt_service(dsn, schema, tmp_path, "catch")
    assert status == 0, err
    assert "stopped" in out.splitlines()
    assert "Traceback" not in err, err
    assert took < EXIT_WITHIN


def test_an_uncaught_ctrl_c_shows_the_main_thread_only(
    dsn: str, schema: str, tmp_path: Path
) -> None:
    status, _out, err, took = interrupt_service(dsn, schema, tmp_path, "raise")
    # Python re-raises SIGINT on an uncaught KeyboardInterrupt: the usual status.
    assert status in (-signal.SIGINT, 128 + signal.SIGINT, 1), err
    assert err.count("Traceback") == 1, err  # the application's own, from its main thread
    assert err.rstrip().endswith("KeyboardInterrupt"), err
    assert "Exception in thread" not in err and "Exception ignored" not in err, err
    assert "eventstore_actors" not in err, err
    assert took < EXIT_WITHIN


# --- unsubscribing from the subscriber itself -----------------------------------------------


def unsubscribe(message: Events[Any], store: EventStore | None) -> None:
    """Through the batch's handle, or (with `store`) through the store by name."""
    if store is None:
        message.subscription.unsubscribe()
    else:
        store.unsubscribe_from_all_streams("self-stop")


class Unsubscriber(pykka.ThreadingActor):
    """Unsubscribes when the first batch comes, from its own on_receive."""

    def __init__(self, done: queue.Queue[str], store: EventStore | None) -> None:
        super().__init__()
        self.done = done
        self.store = store

    def on_receive(self, message: Any) -> None:
        if isinstance(message, Events):
            unsubscribe(message, self.store)
            self.done.put("unsubscribed")


class PlainUnsubscriber:
    """The same, as a plain object: its tell() runs on the subscription's own thread."""

    def __init__(self, done: queue.Queue[str], store: EventStore | None) -> None:
        self.done = done
        self.store = store

    def tell(self, message: Any) -> None:
        if isinstance(message, Events):
            unsubscribe(message, self.store)
            self.done.put("unsubscribed")


@pytest.mark.parametrize("kind", ["actor", "plain"])
@pytest.mark.parametrize(
    "shape", ["single", "competing", "group", "transient", "single-by-name", "group-by-name"]
)
def test_unsubscribing_from_the_subscriber_does_not_warn(
    make_store: Callable[..., EventStore],
    caplog: pytest.LogCaptureFixture,
    kind: str,
    shape: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="eventstore_actors")
    store = make_store()
    done: queue.Queue[str] = queue.Queue()
    by_name = store if shape.endswith("-by-name") else None
    actor = Unsubscriber.start(done, by_name) if kind == "actor" else None
    subscriber: Any = actor if actor is not None else PlainUnsubscriber(done, by_name)
    try:
        options: dict[str, Any] = {
            "competing": {"concurrency_limit": 2},
            "group": {"partitions": 2},
        }.get(shape.removesuffix("-by-name"), {})
        if shape == "transient":
            store.subscribe("$all", subscriber)
        else:
            store.subscribe_to_all_streams("self-stop", subscriber, **options)
        for n in range(4):
            store.append_to_stream(f"s-{n}", 0, events(1))
        assert done.get(timeout=30) == "unsubscribed"
        if shape != "transient":
            # It is gone: the name can be taken again at once (after a group's partitions
            # have let go, within a bounded wait).
            deadline = time.monotonic() + 15
            while True:
                try:
                    store.subscribe_to_all_streams("self-stop", QueueSubscriber(), **options)
                    break
                except SubscriptionAlreadyExistsError:
                    assert time.monotonic() < deadline, "the name was never freed"
                    time.sleep(0.1)  # bounded poll
        time.sleep(1.0)  # a tick or two: what would warn has had its chance
    finally:
        if actor is not None:
            actor.stop()
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("eventstore_actors")]
    assert warnings == []


# --- exiting while the database path is frozen ----------------------------------------------

#: Starts a store through `sys.argv[1]` (the test's proxy), subscribes, appends, says "ready",
#: then returns without stop() once told "go" on stdin.
FROZEN = """
    import logging, sys, time
    from eventstore_actors import EventData, EventStore

    exiting = logging.getLogger("eventstore_actors.lifetime")  # says when the exit hook begins
    exiting.setLevel(logging.DEBUG)
    exiting.addHandler(logging.StreamHandler(sys.stdout))

    class Subscriber:
        def tell(self, message) -> None:
            pass

    def main(dsn: str, schema: str) -> None:
        store = EventStore.start(dsn, schema=schema)
        store.subscribe_to_all_streams("frozen", Subscriber())
        store.append_to_stream("s", 0, [EventData(data={"n": 1})])
        print("ready", flush=True)
        sys.stdin.readline()
        print("returning", time.monotonic(), flush=True)   # no store.stop()

    main(sys.argv[1], sys.argv[2])
"""


@pytest.mark.parametrize("interrupt", [False, True])
def test_exit_is_bounded_when_the_database_path_is_frozen(
    dsn: str, schema: str, tmp_path: Path, interrupt: bool
) -> None:
    from support.proxy import Proxy

    script = tmp_path / "frozen.py"
    script.write_text(textwrap.dedent(FROZEN))
    with Proxy.for_dsn(dsn) as proxy:
        proc = subprocess.Popen(
            [sys.executable, str(script), proxy.dsn(dsn), schema],
            cwd=tmp_path,
            env=child_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None and proc.stdin is not None
            assert proc.stdout.readline() == "ready\n", proc.poll()
            assert proxy.freeze() > 0  # every connection of the store: silent from now on
            proc.stdin.write("go\n")
            proc.stdin.flush()
            assert proc.stdout.readline().startswith("returning")
            began = time.monotonic()
            if interrupt:  # Ctrl-C while the store stops itself: out at once
                # once the exit hook has begun (its wait is what is interrupted)
                assert "stopping the running stores at exit" in proc.stdout.readline()
                proc.send_signal(signal.SIGINT)
            try:
                _out, err = proc.communicate(timeout=lifetime.EXIT_BUDGET + 5)
            except subprocess.TimeoutExpired:
                raise AssertionError("the program did not exit") from None
            took = time.monotonic() - began
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    assert took < (3.0 if interrupt else lifetime.EXIT_BUDGET + 5), took


def test_a_ctrl_c_that_lands_just_before_the_exit_hook_waits_is_seen_at_once() -> None:
    # `interrupt_main` trips the SIGINT handler without waking a blocked wait, as a real
    # signal does when it lands between the hook's last check and its join (the race behind a
    # 15 s exit in CI): the hook waits in short slices, so it sees the interrupt within one.
    import _thread
    import threading

    release = threading.Event()
    main = threading.main_thread().ident

    def joining() -> bool:
        """Whether the main thread is blocked in the hook's join of the stopping thread."""
        frame = sys._current_frames().get(main)  # type: ignore[arg-type]
        while frame is not None:
            if frame.f_code.co_name == "_wait_for_tstate_lock":
                return True
            frame = frame.f_back
        return False

    class Stuck:
        def stop(self) -> None:
            wait_until(joining, what="the exit hook to wait")
            _thread.interrupt_main()
            release.wait(30)

    store = Stuck()
    lifetime.track(store)
    began = time.monotonic()
    try:
        lifetime.stop_all(budget=10.0)
        took = time.monotonic() - began
    finally:
        release.set()
    assert took < 2.0, took
