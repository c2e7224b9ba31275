"""Logging stays bounded through a database outage: the package's repeated warnings are
rate-limited, and psycopg's pool logger is quiet unless the application turns it up."""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
import structlog
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


def test_repeated_warnings_pass_once_per_interval_with_a_count(short_interval: float) -> None:
    log = logs.get_logger(f"tests.{uuid.uuid4().hex}").bind(actor="writer")
    other = log.bind(subscription="b")
    with structlog.testing.capture_logs() as captured:
        for _ in range(50):
            log.warning("connection lost; reconnecting", error="gone")
            other.warning("connection lost; reconnecting", error="gone")
            log.info("not limited")
        time.sleep(short_interval + 0.1)  # the interval itself is what is under test
        log.warning("connection lost; reconnecting", error="gone")
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
    with structlog.testing.capture_logs() as captured:
        store = make_store(pool_size=4)
        from support import QueueSubscriber

        subscriber = QueueSubscriber()
        sub = store.subscribe_to_all_streams("watch", subscriber)
        subscriber.subscribed()
        outage(dsn, store, OUTAGE)
        # After the outage the store works again.
        store.append_to_stream("after", 0, events(1))
        assert subscriber.collect(sub, 1, timeout=30, ack=True)
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
