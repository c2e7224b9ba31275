"""delete_stream, soft and hard (ported from commanded/eventstore
test/streams/soft_delete_stream_test.exs and test/streams/hard_delete_stream_test.exs, where
our contract differs, the test says so), plus what only a running store can show: running
subscriptions end, checkpoints go, the stream can be created again, bad input writes nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from support import QueueSubscriber, checkpoints, wait_until
from support.factory import event_ids, make_events, new_stream, versions
from support.storage_sql import sql

from eventstore_actors import (
    ANY_VERSION,
    NO_STREAM,
    STREAM_EXISTS,
    CannotDeleteAllStreamError,
    ConfigError,
    EventNotFoundError,
    EventStore,
    HardDeletesDisabledError,
    RecordedEvent,
    StreamDeletedError,
    StreamNotFoundError,
    SubscriptionStopped,
    WrongExpectedVersionError,
)

MakeStore = Callable[..., EventStore]


@pytest.fixture
def hard_store(make_store: MakeStore) -> EventStore:
    return make_store(enable_hard_deletes=True)


def three(store: EventStore) -> str:
    """Elixir's setup: a stream of three events."""
    stream = new_stream()
    store.append_to_stream(stream, 0, make_events(3))
    return stream


def numbers(events: list[RecordedEvent]) -> list[int]:
    return [e.event_number for e in events]


def table_counts(dsn: str, schema: str) -> tuple[int, ...]:
    with sql(dsn, schema) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM streams),"
            " (SELECT count(*) FROM streams WHERE deleted_at IS NOT NULL),"
            " (SELECT count(*) FROM links), (SELECT count(*) FROM subscriptions)"
        ).fetchone()
    assert row is not None
    return tuple(int(v) for v in row)


# Soft deletes (soft_delete_stream_test.exs) -----------------------------------------------------
@pytest.mark.parametrize("expected", [STREAM_EXISTS, ANY_VERSION, 3])
def test_soft_delete_succeeds_when_the_stream_matches(store: EventStore, expected: Any) -> None:
    stream = three(store)
    assert store.delete_stream(stream, expected) is None
    info = store.stream_info(stream)
    assert (info.status, info.stream_version) == ("deleted", 3)
    assert info.deleted_at is not None


def test_soft_delete_fails_when_the_expected_version_does_not_match(store: EventStore) -> None:
    stream = three(store)
    for expected in (1, 0, 4):
        with pytest.raises(WrongExpectedVersionError) as err:
            store.delete_stream(stream, expected)
        assert (err.value.stream_uuid, err.value.actual_version) == (stream, 3)
        assert err.value.expected_version == expected
    assert store.stream_info(stream).status == "created"


@pytest.mark.parametrize("expected", [ANY_VERSION, STREAM_EXISTS, 0, 1])
def test_delete_of_a_missing_stream_is_not_found_whatever_the_expected_version(
    store: EventStore, expected: Any
) -> None:
    with pytest.raises(StreamNotFoundError):
        store.delete_stream("unknown", expected)


def test_soft_delete_twice_raises_stream_deleted(store: EventStore) -> None:
    stream = three(store)
    store.delete_stream(stream, ANY_VERSION)
    for expected in (ANY_VERSION, STREAM_EXISTS, 3, 1):
        with pytest.raises(StreamDeletedError):
            store.delete_stream(stream, expected)


def test_a_soft_deleted_stream_refuses_reads_appends_links_and_subscriptions(
    store: EventStore,
) -> None:
    stream = three(store)
    other = three(store)
    store.delete_stream(stream, ANY_VERSION)
    with pytest.raises(StreamDeletedError):
        store.read_stream_forward(stream)
    with pytest.raises(StreamDeletedError):
        store.stream_forward(stream)
    for expected in (3, 0, ANY_VERSION, NO_STREAM, STREAM_EXISTS):
        with pytest.raises(StreamDeletedError):
            store.append_to_stream(stream, expected, make_events(1))
    with pytest.raises(StreamDeletedError):
        store.link_to_stream(stream, ANY_VERSION, [4])
    subscriber = QueueSubscriber()
    # The contract differs from Elixir here: subscribing raises instead of delivering nothing.
    with pytest.raises(StreamDeletedError):
        store.subscribe_to_stream(stream, "test", subscriber)
    subscriber.nothing()
    assert store.stream_info(stream).stream_version == 3
    assert event_ids(store.read_stream_forward(other)) == [4, 5, 6]


def test_all_streams_reads_and_subscriptions_keep_soft_deleted_events(store: EventStore) -> None:
    stream = three(store)
    store.delete_stream(stream, ANY_VERSION)
    events = store.read_all_streams_forward()
    assert [e.stream_uuid for e in events] == [stream] * 3
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_all_streams("test", subscriber)
    subscriber.subscribed()
    got = subscriber.collect(sub, 3)
    assert numbers(got) == [1, 2, 3]
    assert {e.stream_uuid for e in got} == {stream}
    subscriber.nothing()


def test_a_linking_stream_still_reads_events_of_a_soft_deleted_stream(store: EventStore) -> None:
    source = three(store)
    target = new_stream()
    store.link_to_stream(target, 0, store.read_stream_forward(source))
    store.delete_stream(source, ANY_VERSION)
    assert event_ids(store.read_stream_forward(target)) == [1, 2, 3]


def test_pages_list_soft_deleted_streams(store: EventStore) -> None:
    stream = three(store)
    store.delete_stream(stream, 3)
    page = store.paginate_streams()
    assert [(i.stream_uuid, i.status) for i in page.entries] == [(stream, "deleted")]


def test_cannot_delete_all_stream(hard_store: EventStore) -> None:
    for hard in (False, True):
        with pytest.raises(CannotDeleteAllStreamError):
            hard_store.delete_stream("$all", ANY_VERSION, hard=hard)


# Hard deletes (hard_delete_stream_test.exs) -----------------------------------------------------
def test_hard_delete_is_refused_unless_enabled(store: EventStore, dsn: str, schema: str) -> None:
    stream = three(store)
    before = table_counts(dsn, schema)
    with pytest.raises(HardDeletesDisabledError, match="enable_hard_deletes=True"):
        store.delete_stream(stream, STREAM_EXISTS, hard=True)
    assert table_counts(dsn, schema) == before
    assert versions(store.read_stream_forward(stream)) == [1, 2, 3]


def test_enable_hard_deletes_must_be_a_bool(make_store: MakeStore) -> None:
    for bad in ("yes", 1, None):
        with pytest.raises(ConfigError, match="enable_hard_deletes"):
            make_store(enable_hard_deletes=bad)


@pytest.mark.parametrize("expected", [STREAM_EXISTS, ANY_VERSION, 3])
def test_hard_delete_succeeds_when_the_stream_matches(
    hard_store: EventStore, dsn: str, schema: str, expected: Any
) -> None:
    stream = three(hard_store)
    assert hard_store.delete_stream(stream, expected, hard=True) is None
    assert table_counts(dsn, schema) == (0, 0, 0, 0, 0)
    with pytest.raises(StreamNotFoundError):
        hard_store.read_stream_forward(stream)
    with pytest.raises(StreamNotFoundError):
        hard_store.stream_forward(stream)
    with pytest.raises(StreamNotFoundError):
        hard_store.stream_info(stream)
    assert hard_store.read_all_streams_forward() == []
    assert hard_store.stream_info("$all").stream_version == 3, "ids are never reused"


def test_hard_delete_fails_on_a_wrong_expected_version(
    hard_store: EventStore, dsn: str, schema: str
) -> None:
    stream = three(hard_store)
    before = table_counts(dsn, schema)
    with pytest.raises(WrongExpectedVersionError):
        hard_store.delete_stream(stream, 1, hard=True)
    with pytest.raises(StreamNotFoundError):
        hard_store.delete_stream("unknown", ANY_VERSION, hard=True)
    assert table_counts(dsn, schema) == before


def test_hard_delete_of_a_soft_deleted_stream_is_allowed(
    hard_store: EventStore, dsn: str, schema: str
) -> None:
    """The contract differs from Elixir here: erasing a soft-deleted stream (GDPR) works."""
    stream = three(hard_store)
    hard_store.delete_stream(stream, ANY_VERSION)
    with pytest.raises(WrongExpectedVersionError):
        hard_store.delete_stream(stream, 2, hard=True)
    hard_store.delete_stream(stream, 3, hard=True)
    assert table_counts(dsn, schema) == (0, 0, 0, 0, 0)
    with pytest.raises(StreamNotFoundError):
        hard_store.delete_stream(stream, ANY_VERSION, hard=True)


def test_a_hard_deleted_stream_can_be_created_again_from_version_one(
    hard_store: EventStore,
) -> None:
    stream = three(hard_store)
    hard_store.delete_stream(stream, ANY_VERSION, hard=True)
    result = hard_store.append_to_stream(stream, 0, make_events(1))
    assert result is not None
    assert (result.first_version, result.first_event_id) == (1, 4)
    assert versions(hard_store.read_stream_forward(stream)) == [1]
    info = hard_store.stream_info(stream)
    assert (info.stream_version, info.status) == (1, "created")


def test_hard_delete_leaves_other_streams_alone(hard_store: EventStore) -> None:
    stream1, stream2, stream3 = three(hard_store), new_stream(), new_stream()
    hard_store.append_to_stream(stream2, 0, make_events(2))
    hard_store.append_to_stream(stream3, 0, make_events(1))
    hard_store.delete_stream(stream2, ANY_VERSION, hard=True)
    with pytest.raises(StreamNotFoundError):
        hard_store.read_stream_forward(stream2)
    assert len(hard_store.read_stream_forward(stream1)) == 3
    assert len(hard_store.read_stream_forward(stream3)) == 1
    assert event_ids(hard_store.read_all_streams_forward()) == [1, 2, 3, 6]


def test_hard_delete_removes_links_to_and_from_the_stream(
    hard_store: EventStore, dsn: str, schema: str
) -> None:
    source, target = three(hard_store), new_stream()
    hard_store.link_to_stream(target, 0, hard_store.read_stream_forward(source))
    linking = new_stream()
    hard_store.append_to_stream(linking, 0, make_events(1))  # id 4
    hard_store.link_to_stream(linking, 1, [2, 3])
    # Links from the source's events into `target` go with the source ...
    hard_store.delete_stream(source, ANY_VERSION, hard=True)
    assert hard_store.read_stream_forward(target) == []
    assert event_ids(hard_store.read_stream_forward(linking)) == [4]
    assert hard_store.stream_info(target).stream_version == 3, "positions are never reused"
    # ... and a linking stream's own links go with it.
    hard_store.link_to_stream(target, 3, [4])
    hard_store.delete_stream(target, ANY_VERSION, hard=True)
    with sql(dsn, schema) as conn:
        assert conn.execute("SELECT count(*) FROM links").fetchone() == (0,)
    assert event_ids(hard_store.read_stream_forward(linking)) == [4]


def test_hard_delete_removes_the_streams_subscriptions_only(
    hard_store: EventStore, dsn: str, schema: str
) -> None:
    stream, other = three(hard_store), three(hard_store)
    for name, target in (("s1", stream), ("s2", stream), ("o", other), ("all", "$all")):
        subscriber = QueueSubscriber()
        if target == "$all":
            hard_store.subscribe_to_all_streams(name, subscriber)
        else:
            hard_store.subscribe_to_stream(target, name, subscriber)
        subscriber.subscribed()
        if target == "$all":
            hard_store.unsubscribe_from_all_streams(name)
        else:
            hard_store.unsubscribe_from_stream(target, name)
    hard_store.delete_stream(stream, ANY_VERSION, hard=True)
    assert set(checkpoints(dsn, schema)) == {(other, "o"), ("$all", "all")}


def test_subscribing_to_a_hard_deleted_stream_receives_nothing(hard_store: EventStore) -> None:
    stream = three(hard_store)
    hard_store.delete_stream(stream, ANY_VERSION, hard=True)
    subscriber = QueueSubscriber()
    hard_store.subscribe_to_stream(stream, "test", subscriber)
    subscriber.subscribed()
    subscriber.nothing()
    # A stream created again under that name is a new stream: delivered from version 1.
    hard_store.append_to_stream(stream, 0, make_events(2))
    sub_events = subscriber.batch()
    assert versions(sub_events) == [1, 2] and event_ids(sub_events) == [4, 5]


def test_all_streams_subscription_skips_hard_deleted_events(hard_store: EventStore) -> None:
    stream1 = three(hard_store)
    hard_store.delete_stream(stream1, ANY_VERSION, hard=True)
    subscriber = QueueSubscriber()
    sub = hard_store.subscribe_to_all_streams("test", subscriber)
    subscriber.subscribed()
    subscriber.nothing()
    stream2 = new_stream()
    hard_store.append_to_stream(stream2, 0, make_events(1))
    (event,) = subscriber.batch()
    assert (event.stream_uuid, event.event_number, event.event_id) == (stream2, 4, 4)
    sub.ack(event)
    subscriber.nothing()


def test_resumed_all_streams_subscription_does_not_receive_deleted_events(
    hard_store: EventStore, dsn: str, schema: str
) -> None:
    """Restart across a hard-deleted range: the checkpoint was at 1, events 2 and 3 go."""
    stream1 = three(hard_store)
    subscriber = QueueSubscriber()
    sub = hard_store.subscribe_to_all_streams("test", subscriber, max_size=1)
    subscriber.subscribed()
    (first,) = subscriber.batch()
    assert first.event_number == 1
    sub.ack(first)
    (second,) = subscriber.batch()
    assert second.event_number == 2
    wait_until(lambda: checkpoints(dsn, schema)[("$all", "test")] == 1)  # acks are told
    hard_store.delete_stream(stream1, ANY_VERSION, hard=True)
    hard_store.unsubscribe_from_all_streams("test")

    subscriber = QueueSubscriber()
    hard_store.subscribe_to_all_streams("test", subscriber)
    subscriber.subscribed()
    subscriber.nothing()
    wait_until(lambda: checkpoints(dsn, schema)[("$all", "test")] == 3, what="checkpoint at 3")
    stream2 = new_stream()
    hard_store.append_to_stream(stream2, 0, make_events(1))
    (event,) = subscriber.batch()
    assert (event.stream_uuid, event.event_number) == (stream2, 4)


# Running subscriptions end when their stream is deleted ---------------------------------------
@pytest.mark.parametrize("hard", [False, True])
def test_a_running_stream_subscription_ends_when_its_stream_is_deleted(
    hard_store: EventStore, hard: bool
) -> None:
    stream, other = three(hard_store), three(hard_store)
    subscriber, bystander, everything = QueueSubscriber(), QueueSubscriber(), QueueSubscriber()
    sub = hard_store.subscribe_to_stream(stream, "test", subscriber)
    other_sub = hard_store.subscribe_to_stream(other, "test", bystander)
    all_sub = hard_store.subscribe_to_all_streams("test", everything)
    subscriber.subscribed()
    bystander.subscribed()
    everything.subscribed()
    subscriber.collect(sub, 3)
    bystander.collect(other_sub, 3)
    everything.collect(all_sub, 6)
    hard_store.delete_stream(stream, ANY_VERSION, hard=hard)
    stopped = subscriber.next()
    assert isinstance(stopped, SubscriptionStopped)
    assert stopped.subscription is sub
    assert "deleted" in stopped.reason and stream in stopped.reason
    subscriber.nothing()
    bystander.nothing()
    everything.nothing()
    # The name is free again, and the others still deliver.
    if hard:
        hard_store.append_to_stream(stream, 0, make_events(1))
        again = QueueSubscriber()
        hard_store.subscribe_to_stream(stream, "test", again)
        again.subscribed()
        assert versions(again.batch()) == [1]
    hard_store.append_to_stream(other, 3, make_events(1))
    assert versions(bystander.batch()) == [4]


@pytest.mark.parametrize("hard", [False, True])
def test_a_stream_subscription_in_another_store_ends_when_its_stream_is_deleted(
    make_store: MakeStore, hard: bool
) -> None:
    """Two store instances behave towards each other as two processes (the NOTIFY path)."""
    deleter = make_store(enable_hard_deletes=True)
    holder = make_store()
    stream = three(deleter)
    subscriber = QueueSubscriber()
    sub = holder.subscribe_to_stream(stream, "test", subscriber)
    subscriber.subscribed()
    subscriber.collect(sub, 3)
    deleter.delete_stream(stream, 3, hard=hard)
    stopped = subscriber.next(timeout=5.0)
    assert isinstance(stopped, SubscriptionStopped) and "deleted" in stopped.reason
    subscriber.nothing()


def test_a_missed_delete_notification_is_found_on_the_health_check(
    store: EventStore, dsn: str, schema: str
) -> None:
    """A delete whose NOTIFY never reached this store (written here straight in SQL, without
    one): the subscription notices on its next health check, within a few seconds."""
    stream = three(store)
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_stream(stream, "test", subscriber)
    subscriber.subscribed()
    subscriber.collect(sub, 3)
    with sql(dsn, schema) as conn:
        conn.execute("UPDATE streams SET deleted_at = now() WHERE stream_uuid = %s", (stream,))
    stopped = subscriber.next(timeout=5.0)
    assert isinstance(stopped, SubscriptionStopped) and "deleted" in stopped.reason


def test_a_soft_delete_during_catch_up_ends_the_subscription(store: EventStore) -> None:
    """A subscription that starts reading a stream deleted after the subscribe call checked
    it delivers nothing of it: the read sees the deletion and ends the subscription."""
    stream = three(store)
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_stream(stream, "test", subscriber, max_size=1)
    subscriber.subscribed()
    (first,) = subscriber.batch()
    store.delete_stream(stream, ANY_VERSION)
    sub.ack(first)
    while True:
        message = subscriber.next()
        if isinstance(message, SubscriptionStopped):
            break
    subscriber.nothing()


# Deletes racing appends ------------------------------------------------------------------------
def stream_invariants(dsn: str, schema: str, linking: str = "") -> None:
    """No event without its stream, no link to a missing event, and every stream's own
    events numbered 1..n without gaps (but the `linking` stream's, which holds links)."""
    with sql(dsn, schema) as conn:
        orphans = conn.execute(
            "SELECT count(*) FROM events AS e"
            " WHERE NOT EXISTS (SELECT 1 FROM streams AS s WHERE s.stream_id = e.stream_id)"
        ).fetchone()
        dangling = conn.execute(
            "SELECT count(*) FROM links AS k"
            " WHERE NOT EXISTS (SELECT 1 FROM events AS e WHERE e.event_id = k.event_id)"
        ).fetchone()
        broken = conn.execute(
            "SELECT s.stream_uuid FROM streams AS s"
            " LEFT JOIN events AS e ON e.stream_id = s.stream_id"
            " WHERE s.stream_uuid <> %s"
            " GROUP BY s.stream_id"
            " HAVING count(e.*) <> s.stream_version"
            " OR coalesce(max(e.stream_version), 0) <> s.stream_version",
            (linking,),
        ).fetchall()
    assert orphans == (0,) and dangling == (0,) and broken == []


def test_hard_deletes_racing_appends(make_store: MakeStore, dsn: str, schema: str) -> None:
    """Appenders (ANY_VERSION, two store instances) and a deleter on one stream: each
    append lands wholly in one incarnation of the stream, numbered from where it stood."""
    stores = [make_store(enable_hard_deletes=True), make_store()]
    stream = new_stream()
    stop = threading.Event()
    errors: list[BaseException] = []
    deleted = 0

    def append(i: int) -> None:
        try:
            while not stop.is_set():
                result = stores[i % 2].append_to_stream(stream, ANY_VERSION, make_events(2))
                assert result is not None and result.last_version == result.first_version + 1
        except BaseException as exc:
            errors.append(exc)

    def delete() -> None:
        nonlocal deleted
        try:
            for _ in range(20):
                try:
                    stores[0].delete_stream(stream, ANY_VERSION, hard=True)
                    deleted += 1
                except StreamNotFoundError:
                    pass
                stream_invariants(dsn, schema)
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()

    threads = [threading.Thread(target=append, args=(i,)) for i in range(4)]
    threads.append(threading.Thread(target=delete))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert deleted > 0
    stream_invariants(dsn, schema)


def test_soft_delete_racing_appends(make_store: MakeStore, dsn: str, schema: str) -> None:
    """Once delete_stream returned, no append to the stream succeeds; every append that did
    succeed lies within the stream's final version."""
    stores = [make_store(), make_store()]
    stream = new_stream()
    stores[0].append_to_stream(stream, 0, make_events(1))
    done = threading.Event()
    results: list[Any] = []
    late: list[Any] = []

    def append(i: int) -> None:
        while True:
            after_delete = done.is_set()
            try:
                result = stores[i % 2].append_to_stream(stream, ANY_VERSION, make_events(1))
            except StreamDeletedError:
                return
            (late if after_delete else results).append(result)

    threads = [threading.Thread(target=append, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(results) >= 10)
    stores[1].delete_stream(stream, STREAM_EXISTS)
    done.set()
    for thread in threads:
        thread.join(timeout=30)
    assert late == [], "an append started after the delete returned succeeded"
    info = stores[0].stream_info(stream)
    assert info.status == "deleted"
    assert max(r.last_version for r in results) == info.stream_version
    stream_invariants(dsn, schema)


def test_links_racing_hard_deletes_of_their_events(
    make_store: MakeStore, dsn: str, schema: str
) -> None:
    """A link either sees the events (and the delete then removes the link) or does not
    (EventNotFoundError): never a link to an event that is gone."""
    stores = [make_store(enable_hard_deletes=True), make_store()]
    target = new_stream()
    outcomes: list[str] = []
    for _ in range(15):
        doomed = three(stores[0])
        ids = [e.event_id for e in stores[0].read_stream_forward(doomed)]
        barrier = threading.Barrier(2)

        def link(ids: list[int] = ids, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                stores[1].link_to_stream(target, ANY_VERSION, ids)
                outcomes.append("linked")
            except EventNotFoundError:
                outcomes.append("gone")

        thread = threading.Thread(target=link)
        thread.start()
        barrier.wait()
        stores[0].delete_stream(doomed, ANY_VERSION, hard=True)
        thread.join(timeout=30)
        stream_invariants(dsn, schema, linking=target)
    assert len(outcomes) == 15
    if "linked" in outcomes:
        assert stores[0].read_stream_forward(target) == []


# Bad input: nothing deleted --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        ((None, ANY_VERSION), {}, TypeError),
        (("", ANY_VERSION), {}, ValueError),
        ((b"s", ANY_VERSION), {}, TypeError),
        (("s\x00", ANY_VERSION), {}, ValueError),
        (("x" * 2000, ANY_VERSION), {}, ValueError),
        (("{s}", None), {}, TypeError),
        (("{s}", -1), {}, ValueError),
        (("{s}", True), {}, TypeError),
        (("{s}", "3"), {}, TypeError),
        (("{s}", 3.0), {}, TypeError),
        (("{s}", NO_STREAM), {}, ValueError),
        (("{s}", 3), {"hard": "yes"}, TypeError),
        (("{s}", 3), {"hard": 1}, TypeError),
        (("{s}", 3), {"hard": None}, TypeError),
    ],
)
def test_bad_arguments_delete_nothing(
    hard_store: EventStore,
    dsn: str,
    schema: str,
    args: tuple[Any, Any],
    kwargs: dict[str, Any],
    error: type[Exception],
) -> None:
    stream = three(hard_store)
    before = table_counts(dsn, schema)
    name, expected = args
    name = stream if name == "{s}" else name
    with pytest.raises(error):
        hard_store.delete_stream(name, expected, **kwargs)
    assert table_counts(dsn, schema) == before
    assert hard_store.stream_info(stream).status == "created"
