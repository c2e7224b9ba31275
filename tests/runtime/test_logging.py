"""Logging follows the application (part 3, "Rules tightened"): standard `logging` records
under `eventstore_actors.*`, nothing on stdout, WARNING and above unless the application asks,
one whole printable line per record. And it stays bounded through a database outage: the
package's repeated warnings are rate-limited, and psycopg's pool logger is quiet unless the
application turns it up."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import events, kill_backends, process_backends

from eventstore_actors import EventStore, StoreUnavailableError, logs

#: Seconds of simulated outage: every backend of this process killed again and again.
OUTAGE = 3.0


@pytest.fixture
def pool_logger() -> Iterator[logging.Logger]:
    """psycopg.pool's logger as an application that configured nothing leaves it; restored."""
    logger = logging.getLogger("psycopg.pool")
    saved_level, saved_filters = logger.level, list(logger.filters)
    logger.setLevel(logging.NOTSET)
    for f in list(logger.filters):
        logger.removeFilter(f)
    yield logger
    logger.setLevel(saved_level)
    logger.filters[:] = saved_filters


@pytest.fixture
def short_interval(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(logs, "INTERVAL", 1.0)
    return 1.0


def package_records(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    """The package's records as their context dicts, with "log_level" added."""
    return [
        {**r.eventstore, "log_level": r.levelname.lower()}  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name.startswith("eventstore_actors") and hasattr(r, "eventstore")
    ]


def test_repeated_warnings_pass_once_per_interval_with_a_count(
    short_interval: float, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    log = logs.get_logger(f"eventstore_actors.tests.{uuid.uuid4().hex}").bind(actor="writer")
    other = log.bind(subscription="b")
    for _ in range(50):
        log.warning("connection lost; reconnecting", error="gone")
        other.warning("connection lost; reconnecting", error="gone")
        log.info("not limited")
    time.sleep(short_interval + 0.1)  # the interval itself is what is under test
    log.warning("connection lost; reconnecting", error="gone")
    captured = package_records(caplog)
    warnings = [e for e in captured if e["log_level"] == "warning"]
    assert len(warnings) == 3  # one per context, then one after the interval
    assert warnings[-1]["suppressed"] == 49
    assert "suppressed" not in warnings[0]
    assert sum(e["event"] == "not limited" for e in captured) == 50


def outage(dsn: str, store: EventStore, seconds: float) -> None:
    """Kill every backend of this process again and again while using the store."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        kill_backends(dsn, process_backends(dsn))
        for call in (
            lambda: store.read_all_streams_forward(count=1),
            lambda: store.append_to_stream(f"s-{uuid.uuid4().hex}", 0, events(1)),
        ):
            try:
                call()
            except StoreUnavailableError:
                pass
        time.sleep(0.05)  # load shaping between kills, not synchronisation


def run_outage(
    dsn: str, make_store: Callable[..., EventStore], caplog: pytest.LogCaptureFixture
) -> tuple[list[dict[str, object]], list[logging.LogRecord]]:
    caplog.set_level(logging.DEBUG)  # root captures whatever psycopg.pool lets through
    store = make_store(pool_size=4)
    from support import QueueSubscriber

    subscriber = QueueSubscriber()
    sub = store.subscribe_to_all_streams("watch", subscriber)
    subscriber.subscribed()
    outage(dsn, store, OUTAGE)
    # After the outage the store works again.
    store.append_to_stream("after", 0, events(1))
    assert subscriber.collect(sub, 1, timeout=30, ack=True)
    captured = package_records(caplog)
    pool_records = [r for r in caplog.records if r.name.startswith("psycopg.pool")]
    return captured, pool_records


def test_an_outage_logs_a_bounded_number_of_lines(
    dsn: str,
    make_store: Callable[..., EventStore],
    caplog: pytest.LogCaptureFixture,
    pool_logger: logging.Logger,
    short_interval: float,
) -> None:
    captured, pool_records = run_outage(dsn, make_store, caplog)
    # The pool's own warnings ("discarding broken connection"...) are quiet by default.
    assert [r for r in pool_records if r.levelno < logging.ERROR] == []
    assert pool_logger.level == logging.ERROR
    # Each of the package's warnings at most once per interval per context (plus one).
    bound = int(OUTAGE / short_interval) + 2
    keys = Counter(
        (e["event"], e.get("actor"), e.get("subscription"))
        for e in captured
        if e["log_level"] in ("warning", "error")
    )
    assert keys, "the outage should have been reported"
    assert max(keys.values()) <= bound, keys


def test_an_application_that_turns_the_pool_up_gets_bounded_warnings(
    dsn: str,
    make_store: Callable[..., EventStore],
    caplog: pytest.LogCaptureFixture,
    pool_logger: logging.Logger,
    short_interval: float,
) -> None:
    pool_logger.setLevel(logging.WARNING)  # the application's choice: kept
    _, pool_records = run_outage(dsn, make_store, caplog)
    assert pool_logger.level == logging.WARNING
    per_message = Counter((r.levelno, str(r.msg).split(" (")[0]) for r in pool_records)
    bound = int(OUTAGE / short_interval) + 2
    assert not per_message or max(per_message.values()) <= bound, per_message


# --- logging follows the application ------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]

#: A program using the store as a new user would; `sys.argv[3]` is "none" (no logging
#: configuration at all) or "info" (logging.basicConfig(level=INFO) on stderr). Its consumer
#: group's mapper fails: every partition given an event then stops and warns, with the
#: partition's name in the line.
PROGRAM = """
    import logging, sys, threading
    from eventstore_actors import EventData, EventStore, SubscriptionStopped

    if sys.argv[3] == "info":
        logging.basicConfig(
            level=logging.INFO, stream=sys.stderr, format="%(name)s|%(levelname)s|%(message)s"
        )

    class Subscriber:
        def __init__(self) -> None:
            self.stopped = threading.Event()
        def tell(self, message) -> None:
            if isinstance(message, SubscriptionStopped):
                self.stopped.set()

    def failing(event):
        raise RuntimeError("this mapper fails")

    def main(dsn: str, schema: str) -> None:
        with EventStore.start(dsn, schema=schema) as store:
            subscriber = Subscriber()
            store.subscribe_to_all_streams("group", subscriber, mapper=failing, partitions=2)
            for n in range(4):
                store.append_to_stream(f"s-{n}", 0, [EventData(data={"n": n})])
            assert subscriber.stopped.wait(30)
            store.read_all_streams_forward()

    main(sys.argv[1], sys.argv[2])
"""


def run_program(code: str, tmp_path: Path, *args: str) -> tuple[str, str]:
    """(stdout, stderr) of `code` run as a script; it must exit 0 within 60 s."""
    script = tmp_path / "program.py"
    script.write_text(textwrap.dedent(code))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


def assert_printable_lines(text: str) -> None:
    for line in text.splitlines():
        assert line.isprintable(), repr(line)


def test_without_configuration_only_warnings_reach_stderr_and_nothing_stdout(
    dsn: str, schema: str, tmp_path: Path
) -> None:
    out, err = run_program(PROGRAM, tmp_path, dsn, schema, "none")
    assert out == ""
    assert "event store started" not in err  # INFO: not without the application asking
    assert "subscription stopped" in err, err  # the warnings do show, on stderr
    assert "group / partition" in err, err  # the partition's name, printable
    assert_printable_lines(err)


def test_an_application_at_info_gets_the_records_through_its_handlers(
    dsn: str, schema: str, tmp_path: Path
) -> None:
    out, err = run_program(PROGRAM, tmp_path, dsn, schema, "info")
    assert out == ""
    records = [line.split("|", 2) for line in err.splitlines()]
    assert all(len(r) == 3 for r in records), err  # every line from the handler, whole
    names = {name for name, _, _ in records}
    assert all(name.startswith(("eventstore_actors", "psycopg")) for name in names), names
    assert ("eventstore_actors.store", "INFO") in {(n, level) for n, level, _ in records}
    assert any(level == "WARNING" and "group / partition" in m for _, level, m in records)
    assert_printable_lines(err)


def test_caplog_sees_the_store_records(
    make_store: Callable[..., EventStore], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="eventstore_actors")
    store = make_store()
    store.stop()
    started = next(r for r in caplog.records if r.getMessage().startswith("event store started"))
    assert started.name == "eventstore_actors.store"
    assert started.levelno == logging.INFO
    # Where it logged: the package's own line (runtime.py starts the store), not structlog's
    # nor logs.py's.
    assert (started.filename, started.funcName) == ("runtime.py", "start")
    assert started.eventstore["schema"] == store.settings.schema  # type: ignore[attr-defined]


THREADS = """
    import logging, sys, threading
    from eventstore_actors import logs

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="<%(message)s>")

    def talk(n: int) -> None:
        log = logs.get_logger("eventstore_actors.tests").bind(actor=f"thread-{n}")
        for i in range(200):
            log.info("line", i=i, filler="x" * 2000, name="odd\\x1fname\\nwith breaks")

    threads = [threading.Thread(target=talk, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
"""


def test_lines_from_many_threads_stay_whole(tmp_path: Path) -> None:
    out, err = run_program(THREADS, tmp_path)
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 8 * 200
    pattern = re.compile(
        r"<line actor='thread-\d' i=\d+ filler='x{2000}' name='odd / name\\nwith breaks'>"
    )
    torn = [line[:80] for line in lines if not pattern.fullmatch(line)]
    assert torn == []
