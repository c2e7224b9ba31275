"""Names: length limits on stream, subscription, snapshot and event names (refused up front,
before anything is written), and channel names that fit PostgreSQL's 63-byte identifiers
for every valid schema name, so a store in a long-named schema appends and delivers.
"""

from __future__ import annotations

import random
import string
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import psycopg
import pytest
from psycopg import sql
from support import QueueSubscriber, lock_backends, subscription_lock_key, wait_until

from eventstore_actors import (
    EventData,
    EventStore,
    SnapshotData,
    SnapshotNotFoundError,
    SubscriptionAlreadyExistsError,
    admin,
)
from eventstore_actors.config import MAX_IDENTIFIER_BYTES, Settings
from eventstore_actors.notifications.listener import Listener
from eventstore_actors.validation import MAX_NAME_BYTES

# --- name length limits ---------------------------------------------------------------------------


def name_of(size: int, seed: int = 0) -> str:
    """`size` bytes of random letters and digits: incompressible enough to fill an index row
    as an application's real name would."""
    rng = random.Random(seed)
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(size))


#: Too long: the issue's 6,000 characters, and one byte over the limit in characters of two
#: bytes each (fewer characters than the limit: the rule counts UTF-8 bytes).
TOO_LONG = {
    "6000 chars": name_of(6000),
    "limit+1 bytes": name_of(MAX_NAME_BYTES - 1) + "é",
    "2-byte chars": "é" * (MAX_NAME_BYTES // 2 + 1),
}


def ev(**fields: Any) -> EventData:
    return EventData(**{"data": {"x": 1}, "event_type": "tests.Name", **fields})


def table_counts(dsn: str, schema: str) -> dict[str, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {
            table: int(
                conn.execute(  # type: ignore[index]
                    sql.SQL("SELECT count(*) FROM {}.{}").format(
                        sql.Identifier(schema), sql.Identifier(table)
                    )
                ).fetchone()[0]
            )
            for table in ("events", "streams", "subscriptions", "snapshots")
        }


def calls_with(store: EventStore, long: str) -> dict[str, Callable[[], object]]:
    """Every public call given `long` in one of its name arguments."""
    sub = QueueSubscriber()
    s = store
    return {
        "append stream_uuid": partial(s.append_to_stream, long, 0, [ev()]),
        "append event_type": partial(s.append_to_stream, "ok", 0, [ev(), ev(event_type=long)]),
        "append correlation_id": partial(
            s.append_to_stream, "ok", 0, [ev(), ev(correlation_id=long)]
        ),
        "append causation_id": partial(s.append_to_stream, "ok", 0, [ev(), ev(causation_id=long)]),
        "read_stream_forward": partial(s.read_stream_forward, long),
        "stream_forward": partial(s.stream_forward, long),
        "subscribe_to_stream stream_uuid": partial(s.subscribe_to_stream, long, "sub", sub),
        "subscribe_to_stream subscription_name": partial(s.subscribe_to_stream, "ok", long, sub),
        "subscribe_to_all_streams": partial(s.subscribe_to_all_streams, long, sub),
        "unsubscribe_from_stream stream_uuid": partial(s.unsubscribe_from_stream, long, "sub"),
        "unsubscribe_from_stream subscription_name": partial(s.unsubscribe_from_stream, "ok", long),
        "unsubscribe_from_all_streams": partial(s.unsubscribe_from_all_streams, long),
        "delete_subscription stream_uuid": partial(s.delete_subscription, long, "sub"),
        "delete_subscription subscription_name": partial(s.delete_subscription, "ok", long),
        "delete_all_streams_subscription": partial(s.delete_all_streams_subscription, long),
        "record_snapshot source_uuid": partial(s.record_snapshot, SnapshotData(long, 1, "T", {})),
        "record_snapshot source_type": partial(s.record_snapshot, SnapshotData("ok", 1, long, {})),
        "read_snapshot": partial(s.read_snapshot, long),
        "delete_snapshot": partial(s.delete_snapshot, long),
    }


ARGUMENTS = {
    "stream_uuid",
    "event_type",
    "correlation_id",
    "causation_id",
    "subscription_name",
    "source_uuid",
    "source_type",
}


@pytest.mark.parametrize("kind", list(TOO_LONG))
def test_too_long_names_are_refused_before_anything_is_written(
    dsn: str, schema: str, store: EventStore, kind: str
) -> None:
    store.append_to_stream("existing", 0, [ev()])
    before = table_counts(dsn, schema)
    failures: list[str] = []
    for case, call in calls_with(store, TOO_LONG[kind]).items():
        began = time.monotonic()
        try:
            call()
        except ValueError as exc:
            message = str(exc)
            argument = case.split()[-1] if case.split()[-1] in ARGUMENTS else None
            named = argument in message if argument else any(a in message for a in ARGUMENTS)
            if not named or str(MAX_NAME_BYTES) not in message:
                failures.append(f"{case}: message names no argument or limit: {message}")
            if time.monotonic() - began > 2.0:
                failures.append(f"{case}: took {time.monotonic() - began:.1f}s")
        except BaseException as exc:
            failures.append(f"{case}: raised {type(exc).__module__}.{type(exc).__name__}: {exc}")
        else:
            failures.append(f"{case}: did not raise")
    assert not failures, "\n".join(failures)
    assert table_counts(dsn, schema) == before
    store.append_to_stream("existing", 1, [ev()])  # the store still works, ids continue
    assert [e.event_id for e in store.read_all_streams_forward()] == [1, 2]


def test_names_at_the_limit_work(dsn: str, schema: str, store: EventStore) -> None:
    stream = name_of(MAX_NAME_BYTES, seed=1)
    name = name_of(MAX_NAME_BYTES, seed=2)
    two_byte = "é" * (MAX_NAME_BYTES // 2)
    event = ev(
        event_type=name_of(MAX_NAME_BYTES, 3), correlation_id=two_byte, causation_id=two_byte
    )

    store.append_to_stream(stream, 0, [event])
    store.append_to_stream(stream, 1, [event] * 100)  # the COPY path too
    [first, *_] = store.read_stream_forward(stream)
    assert (first.stream_uuid, first.event_type) == (stream, event.event_type)
    assert (first.correlation_id, first.causation_id) == (two_byte, two_byte)
    assert len(list(store.stream_forward(stream))) == 101

    # Subscriptions: both names at the limit share one unique index row.
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_stream(stream, name, subscriber)
    subscriber.subscribed()
    assert len(subscriber.collect(sub, 101)) == 101
    all_subscriber = QueueSubscriber()
    all_sub = store.subscribe_to_all_streams(name, all_subscriber)
    all_subscriber.subscribed()
    assert len(all_subscriber.collect(all_sub, 101)) == 101
    wait_until(lambda: table_counts(dsn, schema)["subscriptions"] == 2)
    store.unsubscribe_from_stream(stream, name)
    store.unsubscribe_from_all_streams(name)
    store.delete_subscription(stream, name)
    store.delete_all_streams_subscription(name)
    assert table_counts(dsn, schema)["subscriptions"] == 0

    store.record_snapshot(SnapshotData(stream, 7, name, {"s": 1}))
    snapshot = store.read_snapshot(stream)
    assert (snapshot.source_uuid, snapshot.source_type, snapshot.source_version) == (
        stream,
        name,
        7,
    )
    store.delete_snapshot(stream)
    with pytest.raises(SnapshotNotFoundError):
        store.read_snapshot(stream)


# --- channel names --------------------------------------------------------------------------------


def schema_of(length: int, last: str = "x") -> str:
    return ("s" * (length - 1) + last)[:length]


def test_channel_names_fit_for_every_schema_length() -> None:
    for length in range(1, 64):
        settings = Settings(dsn="", schema=schema_of(length))
        channel, control = settings.channel, settings.control_channel
        assert len(channel.encode()) <= MAX_IDENTIFIER_BYTES, (length, channel)
        assert len(control.encode()) <= MAX_IDENTIFIER_BYTES, (length, control)
        assert channel != control
        # Today's names are kept wherever they fit (earlier releases share the channel).
        plain = f"eventstore_actors.{settings.schema}.events"
        if len(plain) <= MAX_IDENTIFIER_BYTES:
            assert channel == plain
        if len(plain + ".control") <= MAX_IDENTIFIER_BYTES:
            assert control == plain + ".control"
    assert Settings(dsn="", schema="public").channel == "eventstore_actors.public.events"


def test_long_schema_channels_are_stable_and_distinct() -> None:
    names = [schema_of(63, last) for last in "abcdefghij"] + [schema_of(39), schema_of(40)]
    channels = {Settings(dsn="", schema=n).channel for n in names}
    controls = {Settings(dsn="", schema=n).control_channel for n in names}
    assert len(channels) == len(names) and len(controls) == len(names)
    # Stable: the same schema always gets the same channel (other processes must agree).
    assert Settings(dsn="", schema=names[0]).channel == Settings(dsn="", schema=names[0]).channel
    # A hashed name never equals the plain name of some other schema.
    plain = {f"eventstore_actors.{s}.events" for s in [schema_of(n) for n in range(1, 39)]}
    assert not channels & plain


@pytest.fixture
def long_schema(dsn: str) -> Iterator[str]:
    """An initialised schema with a 63-character name (the most PostgreSQL allows)."""
    name = f"t_{uuid.uuid4().hex}"
    name = (name + "_" * 63)[:63]
    admin.init(dsn, name)
    try:
        yield name
    finally:
        admin.drop(dsn, name)


def test_store_in_a_63_character_schema_appends_and_delivers_between_stores(
    dsn: str, long_schema: str
) -> None:
    assert len(long_schema) == 63
    with (
        EventStore.start(dsn, schema=long_schema) as first,
        EventStore.start(dsn, schema=long_schema) as second,
    ):
        # A subscription in `first`, fed by appends of `second`: only LISTEN/NOTIFY links them.
        on_first = QueueSubscriber()
        sub = first.subscribe_to_all_streams("projection", on_first)
        on_first.subscribed()
        on_second = QueueSubscriber()
        stream_sub = second.subscribe_to_stream("from-first", "reader", on_second)
        on_second.subscribed()

        second.append_to_stream("from-second", 0, [ev()])  # one event: the function path
        second.append_to_stream("from-second", 1, [ev()] * 100)  # COPY path, its own NOTIFY
        got = on_first.collect(sub, 101)
        assert [e.event_id for e in got] == list(range(1, 102))

        first.append_to_stream("from-first", 0, [ev()] * 3)
        assert [e.stream_version for e in on_second.collect(stream_sub, 3)] == [1, 2, 3]

        # The advisory lock of a subscription still excludes the other store.
        with pytest.raises(SubscriptionAlreadyExistsError):
            second.subscribe_to_all_streams("projection", QueueSubscriber())
        key = subscription_lock_key(long_schema, "$all", "projection")
        assert len(lock_backends(dsn, key)) == 1
        first.unsubscribe_from_all_streams("projection")
        wait_until(lambda: not lock_backends(dsn, key), what="lock released")
        taken = QueueSubscriber()
        deadline = time.monotonic() + 5
        while True:  # the backend may release the lock a moment after the close returns
            try:
                second.subscribe_to_all_streams("projection", taken)
                break
            except SubscriptionAlreadyExistsError:
                assert time.monotonic() < deadline, "the lock was never free again"
                time.sleep(0.05)
        taken.subscribed()


@pytest.mark.parametrize("length", [31, 38, 63])
def test_listener_stop_wakes_through_the_control_channel(dsn: str, length: int) -> None:
    # The control channel broke from 31 characters: stop() then waited for the 1 s timeout
    # of notifies() instead of being woken at once.
    settings = Settings(dsn=dsn, schema=schema_of(length))
    connected = threading.Event()
    listener = Listener(settings, "origin", lambda _: None, connected.set)
    listener.start()
    try:
        assert connected.wait(10), "the listener never connected"
    finally:
        began = time.monotonic()
        listener.stop()
        elapsed = time.monotonic() - began
    assert elapsed < 0.6, f"stop() took {elapsed:.2f}s: the control channel did not wake it"
