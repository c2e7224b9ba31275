"""eventstore_actors.aio: the asyncio API on the same supervised actors.

Each test drives its own event loop with `asyncio.run` (no pytest plugin needed) and bounds
every wait with `asyncio.wait_for`. The loop-lag probe measures how long the loop is held:
a task that sleeps 1 ms in a loop and records its worst overshoot.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import threading
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from support import QUIET, WAIT, checkpoint, events

from eventstore_actors import (
    ANY_VERSION,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    CannotAppendToAllStreamError,
    ConfigError,
    EventData,
    EventStore,
    InvalidStartFromError,
    Page,
    RecordedEvent,
    SnapshotData,
    SnapshotNotFoundError,
    StoreUnavailableError,
    StreamAppend,
    StreamExistsError,
    StreamInfo,
    StreamNotFoundError,
    Subscription,
    SubscriptionAlreadyExistsError,
    WrongExpectedVersionError,
)
from eventstore_actors.aio import (
    AsyncEventStore,
    AsyncSubscription,
    AsyncTransientSubscription,
    SubscriptionStoppedError,
)

Body = Callable[[AsyncEventStore], Awaitable[None]]

#: Loop lag allowed by the probe test at the 99th percentile (generous: a loaded 2-core
#: machine), and for the single worst sample.
MAX_LAG = 0.050
MAX_SPIKE = 0.250


def new_stream() -> str:
    return f"aio-{uuid.uuid4().hex[:12]}"


def run(dsn: str, schema: str, body: Body, timeout: float = 60.0, **options: Any) -> None:
    """Start an AsyncEventStore in a fresh loop, run `body` with it (bounded), stop it."""

    async def main() -> None:
        async with await AsyncEventStore.start(dsn, schema=schema, **options) as store:
            await asyncio.wait_for(body(store), timeout)

    asyncio.run(main())


async def next_batch(sub: AsyncIterator[Any], timeout: float = WAIT) -> Any:
    return await asyncio.wait_for(anext(sub), timeout)


async def collect(sub: AsyncSubscription[Any], count: int, ack: bool = True) -> list[Any]:
    """Batches until `count` events arrived, acking each; the events."""
    got: list[Any] = []
    while len(got) < count:
        batch = await next_batch(sub)
        assert batch, "an empty batch"
        got.extend(batch)
        if ack:
            await sub.ack(batch)
    return got


async def until(predicate: Callable[[], Any], timeout: float = WAIT) -> None:
    """Poll `predicate` on the loop until true, failing after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {predicate}"
        await asyncio.sleep(0.01)


async def stored_checkpoint(dsn: str, schema: str, stream: str, name: str, position: int) -> None:
    """Until the stored checkpoint is `position` (it follows acks within a second). Waited for
    before an unsubscribe: the sync actor drops an ack still in its inbox when one comes."""
    deadline = time.monotonic() + WAIT
    while await asyncio.to_thread(checkpoint, dsn, schema, stream, name) != position:
        assert time.monotonic() < deadline, "the checkpoint did not follow the acks"
        await asyncio.sleep(0.02)


async def gather_all(iterator: AsyncIterator[RecordedEvent]) -> list[RecordedEvent]:
    return [event async for event in iterator]


# The API's shape ------------------------------------------------------------------------------
def _public_methods() -> list[str]:
    return [
        name
        for name, value in vars(EventStore).items()
        if not name.startswith("_") and inspect.isfunction(value) and name != "start"
    ]


def test_every_eventstore_method_has_an_awaitable_twin_with_its_signature() -> None:
    """Typed twins (checkers see them) have the sync signature, minus the subscriber; a
    method added to EventStore without a twin yet is awaitable through the fallback."""
    streaming = {"stream_forward", "stream_backward", "stream_all_forward", "stream_all_backward"}
    untyped = []
    for name in _public_methods():
        twin = vars(AsyncEventStore).get(name)
        if twin is None:
            untyped.append(name)
            bare = AsyncEventStore.__new__(AsyncEventStore)
            assert inspect.iscoroutinefunction(getattr(bare, name)), name
            continue
        if name in streaming:
            assert not inspect.iscoroutinefunction(twin), name  # an async iterator, at once
        else:
            assert inspect.iscoroutinefunction(twin), name
        if name in ("ack", "stop"):
            continue
        sync = inspect.signature(getattr(EventStore, name))
        mine = inspect.signature(twin)
        expected = [
            p
            for p in sync.parameters.values()
            if p.name != "subscriber" and p.kind is not p.VAR_KEYWORD
        ]
        got = [p for p in mine.parameters.values() if p.kind is not p.VAR_KEYWORD]
        assert [(p.name, p.default, p.kind) for p in got] == [
            (p.name, p.default, p.kind) for p in expected
        ], name
    if untyped:
        warnings.warn(
            f"AsyncEventStore has no typed twin of {', '.join(untyped)}: add one line each "
            "(`name = _awaitable(EventStore.name)`) in eventstore_actors/aio/store.py",
            stacklevel=1,
        )
    start = inspect.signature(AsyncEventStore.start).parameters
    for param in inspect.signature(EventStore.start).parameters.values():
        assert param.name in start and start[param.name].default == param.default


def test_async_store_has_every_public_method_name_of_eventstore() -> None:
    """Every public name of EventStore is a real member of AsyncEventStore (not the fallback
    of `__getattr__`, which cannot drop a subscriber argument): transient subscriptions too."""

    def public(cls: type) -> set[str]:
        return {name for name in dir(cls) if not name.startswith("_")}

    assert public(EventStore) - public(AsyncEventStore) == set()
    assert inspect.iscoroutinefunction(AsyncEventStore.subscribe)
    assert inspect.iscoroutinefunction(AsyncEventStore.unsubscribe)


def test_a_method_added_to_eventstore_later_is_awaitable_at_once(
    dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def head_version(self: EventStore, stream_uuid: str) -> int:
        return self.stream_info(stream_uuid).stream_version

    monkeypatch.setattr(EventStore, "head_version", head_version, raising=False)

    async def body(store: AsyncEventStore) -> None:
        stream = new_stream()
        await store.append_to_stream(stream, 0, events(3))
        assert await store.head_version(stream) == 3  # type: ignore[attr-defined]
        with pytest.raises(AttributeError):
            store.no_such_method  # type: ignore[attr-defined]  # noqa: B018
        with pytest.raises(AttributeError):
            store._registry  # type: ignore[attr-defined]  # noqa: B018

    run(dsn, schema, body)


# Starting and stopping ------------------------------------------------------------------------
def test_start_stop_idempotent_and_calls_after_stop(dsn: str, schema: str) -> None:
    async def main() -> None:
        store = await AsyncEventStore.start(dsn, schema=schema, pool_size=3)
        assert store.settings.pool_size == 3
        assert store.threads == 3 + 64
        assert isinstance(store.sync, EventStore)
        await store.append_to_stream(new_stream(), 0, events(1))
        await asyncio.gather(store.stop(), store.stop())
        await store.stop()
        with pytest.raises(StoreUnavailableError):
            await store.append_to_stream(new_stream(), 0, events(1))
        with pytest.raises(StoreUnavailableError):
            await store.read_all_streams_forward()

        async with await AsyncEventStore.start(dsn, schema=schema, threads=5) as again:
            assert again.threads == 5
            assert len(await again.read_all_streams_forward()) == 1

    asyncio.run(main())


def test_start_errors_are_the_sync_ones(dsn: str) -> None:
    async def main() -> None:
        with pytest.raises(ConfigError, match="unknown option"):
            await AsyncEventStore.start(dsn, bogus=1)
        with pytest.raises(ConfigError, match="init"):
            await AsyncEventStore.start(dsn, schema=f"missing_{uuid.uuid4().hex[:8]}")
        with pytest.raises(ConfigError):
            await AsyncEventStore.start("postgresql://postgres@127.0.0.1:1/test")
        with pytest.raises(ValueError):
            await AsyncEventStore.start(dsn, threads=0)

    asyncio.run(main())


def test_wrapping_a_running_store_shares_its_runtime(make_store: Callable[..., Any]) -> None:
    sync = make_store()

    async def main() -> None:
        store = AsyncEventStore(sync, threads=4)
        stream = new_stream()
        await store.append_to_stream(stream, 0, events(2))
        assert [e.data["n"] for e in sync.read_stream_forward(stream)] == [1, 2]
        await store.stop()

    asyncio.run(main())
    with pytest.raises(TypeError):
        AsyncEventStore(object())  # type: ignore[arg-type]


# Writing --------------------------------------------------------------------------------------
def test_appends_results_and_errors(dsn: str, schema: str) -> None:
    async def body(store: AsyncEventStore) -> None:
        stream = new_stream()
        result = await store.append_to_stream(stream, NO_STREAM, events(2))
        assert isinstance(result, AppendResult)
        assert (result.first_version, result.last_version) == (1, 2)
        assert await store.append_to_stream(stream, 2, []) is None
        assert (await store.append_to_stream(stream, ANY_VERSION, events(1, 3))) is not None
        with pytest.raises(WrongExpectedVersionError) as wrong:
            await store.append_to_stream(stream, 1, events(1))
        assert wrong.value.actual_version == 3
        with pytest.raises(StreamExistsError):
            await store.append_to_stream(stream, NO_STREAM, events(1))
        with pytest.raises(StreamNotFoundError):
            await store.append_to_stream(new_stream(), STREAM_EXISTS, events(1))
        with pytest.raises(CannotAppendToAllStreamError):
            await store.append_to_stream("$all", 0, events(1))
        with pytest.raises(ValueError):
            await store.append_to_stream("", 0, events(1))
        with pytest.raises(TypeError):
            await store.append_to_stream(stream, 3, ["not an event"])  # type: ignore[list-item]

        # Idempotent retry with the same event UUIDs.
        given = [EventData({"n": 1}, "tests.Numbered", event_uuid=uuid.uuid4())]
        other = new_stream()
        first = await store.append_to_stream(other, 0, given)
        assert await store.append_to_stream(other, 0, given) == first

        a, b = new_stream(), new_stream()
        results = await store.append_to_streams(
            [StreamAppend(a, NO_STREAM, events(2)), StreamAppend(b, NO_STREAM, events(1))]
        )
        assert [r.stream_uuid for r in results] == [a, b]
        assert results[1].first_event_id == results[0].last_event_id + 1
        with pytest.raises(WrongExpectedVersionError):
            await store.append_to_streams(
                [StreamAppend(new_stream(), 0, events(1)), StreamAppend(a, 0, events(1))]
            )
        with pytest.raises(ValueError):
            await store.append_to_streams(
                [StreamAppend(a, 2, events(1)), StreamAppend(a, 3, events(1))]
            )

    run(dsn, schema, body)


def test_append_in_the_callers_transaction(dsn: str, schema: str) -> None:
    async def body(store: AsyncEventStore) -> None:
        stream = new_stream()
        with psycopg.connect(dsn) as conn:
            await store.append_to_stream(stream, 0, events(2), conn=conn)
            with pytest.raises(StreamNotFoundError):
                await store.read_stream_forward(stream)
            conn.commit()
        assert len(await store.read_stream_forward(stream)) == 2

    run(dsn, schema, body)


async def _projected(conn: psycopg.AsyncConnection[Any], table: sql.Identifier) -> list[int]:
    cur = await conn.execute(sql.SQL("SELECT n FROM {} ORDER BY n").format(table))
    return [row[0] for row in await cur.fetchall()]


def test_outbox_appends_in_an_async_connections_transaction(dsn: str, schema: str) -> None:
    """conn= takes a psycopg AsyncConnection: the append is part of its transaction, with the
    caller's own writes, committed or rolled back together; a refused append leaves it usable."""
    table = sql.Identifier(schema, "outbox_rows")

    async def body(store: AsyncEventStore) -> None:
        stream, other = new_stream(), new_stream()
        live = await store.subscribe("$all")
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            await conn.execute(sql.SQL("CREATE TABLE {} (n int)").format(table))
            await conn.commit()
            # Rolled back: neither the row nor the events.
            await conn.execute(sql.SQL("INSERT INTO {} VALUES (1)").format(table))
            result = await store.append_to_stream(stream, NO_STREAM, events(2), conn=conn)
            assert result is not None and result.last_version == 2
            with pytest.raises(StreamNotFoundError):
                await store.read_stream_forward(stream)
            await conn.rollback()
            with pytest.raises(StreamNotFoundError):
                await store.read_stream_forward(stream)
            assert await _projected(conn, table) == []
            await conn.rollback()

            # Committed: both, and subscribers get the events after the commit.
            await conn.execute(sql.SQL("INSERT INTO {} VALUES (2)").format(table))
            await store.append_to_stream(stream, NO_STREAM, events(2), conn=conn)
            with pytest.raises(WrongExpectedVersionError):  # under a savepoint: conn usable
                await store.append_to_stream(stream, 0, events(1), conn=conn)
            results = await store.append_to_streams(
                [StreamAppend(other, NO_STREAM, events(1)), StreamAppend(stream, 2, events(1))],
                conn=conn,
            )
            assert [r.last_version for r in results] == [1, 3]
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(anext(live), QUIET)  # nothing before the commit
            await conn.commit()
            assert await _projected(conn, table) == [2]
            assert [e.stream_version for e in await store.read_stream_forward(stream)] == [1, 2, 3]
            got: list[RecordedEvent] = []
            while len(got) < 4:
                got += await next_batch(live)
            assert sorted(e.stream_uuid for e in got) == sorted([other, stream, stream, stream])

            # An autocommit AsyncConnection outside a transaction block commits at once.
            await conn.rollback()  # (the read above began one)
            await conn.set_autocommit(True)
            await store.append_to_stream(stream, 3, events(1), conn=conn)
            assert len(await store.read_stream_forward(stream)) == 4
        await live.unsubscribe()

        # The sync API says where an AsyncConnection goes.
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            with pytest.raises(TypeError, match="asyncio"):
                store.sync.append_to_stream(stream, 4, events(1), conn=conn)  # type: ignore[arg-type]

    run(dsn, schema, body)


def test_exactly_once_acks_in_an_async_connections_transaction(dsn: str, schema: str) -> None:
    """ack(..., conn=AsyncConnection): the checkpoint moves iff the caller commits, in one
    transaction with the projection's own rows; the store never writes it on its own."""
    table = sql.Identifier(schema, "projection_rows")

    async def body(store: AsyncEventStore) -> None:
        await store.append_to_stream(new_stream(), 0, events(3))
        await store.append_to_stream(new_stream(), 0, events(2))
        sub = await store.subscribe_to_all_streams("proj")
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            await conn.execute(sql.SQL("CREATE TABLE {} (n int)").format(table))
            await conn.commit()
            first = await next_batch(sub)
            assert [e.event_id for e in first] == [1, 2, 3]
            for event in first:
                await conn.execute(
                    sql.SQL("INSERT INTO {} VALUES (%s)").format(table), [event.event_id]
                )
            await sub.ack(first, conn=conn)
            second = await next_batch(sub)  # acked: the next batch comes before the commit
            await asyncio.sleep(QUIET)  # the flush interval passes: the store writes nothing
            assert checkpoint(dsn, schema, "$all", "proj") == 0, "visible before the commit"
            await conn.rollback()
            assert checkpoint(dsn, schema, "$all", "proj") == 0
            assert await _projected(conn, table) == []
            await conn.rollback()

            for event in first + second:
                await conn.execute(
                    sql.SQL("INSERT INTO {} VALUES (%s)").format(table), [event.event_id]
                )
            await store.ack(sub, second, conn=conn)  # the store's ack, same rule
            await asyncio.sleep(QUIET)
            assert checkpoint(dsn, schema, "$all", "proj") == 0
            await conn.commit()
            assert checkpoint(dsn, schema, "$all", "proj") == 5
            assert await _projected(conn, table) == [1, 2, 3, 4, 5]
        await sub.unsubscribe()

    run(dsn, schema, body)


# Reading --------------------------------------------------------------------------------------
def test_reads_stream_info_and_pages(dsn: str, schema: str) -> None:
    async def body(store: AsyncEventStore) -> None:
        a, b = new_stream(), new_stream()
        await store.append_to_stream(a, 0, events(5))
        await store.append_to_stream(
            b, 0, [EventData({"n": 1}, "tests.Other"), EventData({"n": 2}, "tests.Other")]
        )
        forward = await store.read_stream_forward(a, 2, 2)
        assert [e.stream_version for e in forward] == [2, 3]
        backward = await store.read_stream_backward(a, -1, 2)
        assert [e.stream_version for e in backward] == [5, 4]
        everything = await store.read_all_streams_forward()
        assert [e.event_id for e in everything] == list(range(1, 8))
        assert [e.event_id for e in await store.read_all_streams_backward(count=3)] == [7, 6, 5]
        others = await store.read_all_streams_forward(event_types=["tests.Other"])
        assert {e.stream_uuid for e in others} == {b}
        assert len(await store.read_all_streams_forward(stream_prefix=a)) == 5
        assert len(await store.read_all_streams_forward(stop=3)) == 3
        with pytest.raises(StreamNotFoundError):
            await store.read_stream_forward(new_stream())
        with pytest.raises(ValueError):
            await store.read_stream_forward(a, -3)

        info = await store.stream_info(a)
        assert isinstance(info, StreamInfo) and info.stream_version == 5
        assert (await store.stream_info("$all")).stream_version == 7
        with pytest.raises(StreamNotFoundError):
            await store.stream_info(new_stream())
        page = await store.paginate_streams(page_size=1, sort_by="stream_id", sort_dir="desc")
        assert isinstance(page, Page)
        assert (page.total_entries, page.total_pages, page.entries[0].stream_uuid) == (2, 2, b)
        with pytest.raises(ValueError):
            await store.paginate_streams(sort_by="nonsense")

    run(dsn, schema, body)


def test_streaming_reads_are_async_iterators_returned_at_once(dsn: str, schema: str) -> None:
    async def body(store: AsyncEventStore) -> None:
        stream = new_stream()
        await store.append_to_stream(stream, 0, events(23))
        await store.append_to_stream(new_stream(), 0, events(4))

        versions = [e.stream_version async for e in store.stream_forward(stream, 0, 5)]
        assert versions == list(range(1, 24))
        versions = [e.stream_version async for e in store.stream_backward(stream, -1, 5)]
        assert versions == list(range(23, 0, -1))
        ids = [e.event_id async for e in store.stream_all_forward(read_batch_size=4)]
        assert ids == list(range(1, 28))
        ids = [e.event_id async for e in store.stream_all_backward(read_batch_size=10)]
        assert ids == list(range(27, 0, -1))
        ids = [e.event_id async for e in store.stream_all_forward(3, 2, stop=6)]
        assert ids == [3, 4, 5, 6]
        prefixed = store.stream_all_forward(stream_prefix=stream, read_batch_size=7)
        assert len(await gather_all(prefixed)) == 23
        exact = [e.event_id async for e in store.stream_forward(stream, 0, 23)]
        assert len(exact) == 23

        # A missing stream and bad values: the iterator comes back, the first step raises.
        missing = store.stream_forward(new_stream())
        assert hasattr(missing, "__anext__")
        with pytest.raises(StreamNotFoundError):
            await anext(missing)
        with pytest.raises(StreamNotFoundError):
            await anext(store.stream_backward(new_stream()))
        bad = store.stream_all_forward(read_batch_size=0)
        with pytest.raises(ValueError):
            await anext(bad)
        with pytest.raises(TypeError):  # a parameter that does not exist: at the call
            store.stream_all_forward(batch=3)  # type: ignore[call-arg]

    run(dsn, schema, body)


def test_streaming_reads_page_lazily(dsn: str, schema: str) -> None:
    """Pages are read as the iteration reaches them: events appended after the first page was
    read still show up, and one page is held at a time."""

    async def body(store: AsyncEventStore) -> None:
        await store.append_to_stream(new_stream(), 0, events(10))
        iterator = store.stream_all_forward(read_batch_size=10)
        first = await anext(iterator)
        assert first.event_id == 1
        frame = iterator.ag_frame  # type: ignore[attr-defined]
        assert len(frame.f_locals["page"]) == 10  # the page in hand, nothing more
        await store.append_to_stream(new_stream(), 0, events(5))
        rest = await gather_all(iterator)
        assert [e.event_id for e in rest] == list(range(2, 16))

    run(dsn, schema, body)


# Snapshots ------------------------------------------------------------------------------------
def test_snapshots(dsn: str, schema: str) -> None:
    async def body(store: AsyncEventStore) -> None:
        source = new_stream()
        await store.record_snapshot(SnapshotData(source, 3, "tests.Snap", {"total": 7}))
        snapshot = await store.read_snapshot(source)
        assert (snapshot.source_version, snapshot.data) == (3, {"total": 7})
        assert snapshot.created_at is not None
        await store.delete_snapshot(source)
        await store.delete_snapshot(source)
        with pytest.raises(SnapshotNotFoundError):
            await store.read_snapshot(source)
        with pytest.raises(TypeError):
            await store.record_snapshot({"not": "a snapshot"})  # type: ignore[arg-type]

    run(dsn, schema, body)


# Subscriptions --------------------------------------------------------------------------------
def test_all_streams_subscription_iterates_batches_in_order(dsn: str, schema: str) -> None:
    async def body(store: AsyncEventStore) -> None:
        streams = [new_stream() for _ in range(3)]
        for stream in streams:
            await store.append_to_stream(stream, 0, events(4))
        sub = await store.subscribe_to_all_streams("projection", start_from="origin")
        assert (sub.stream_uuid, sub.subscription_name) == ("$all", "projection")
        assert isinstance(sub.subscription, Subscription)
        got = await collect(sub, 12)
        for stream in streams:  # live events too
            await store.append_to_stream(stream, 4, events(2, 5))
        got += await collect(sub, 6)
        assert [e.event_id for e in got] == list(range(1, 19))
        assert all(isinstance(e, RecordedEvent) for e in got)

        with pytest.raises(SubscriptionAlreadyExistsError):
            await store.subscribe_to_all_streams("projection")
        with pytest.raises(InvalidStartFromError):
            await store.subscribe_to_all_streams("other", start_from="yesterday")
        with pytest.raises(TypeError):
            await sub.ack("nonsense")  # type: ignore[arg-type]
        await stored_checkpoint(dsn, schema, "$all", "projection", 18)
        await sub.unsubscribe()
        assert checkpoint(dsn, schema, "$all", "projection") == 18

    run(dsn, schema, body)


def test_stream_subscription_mapper_and_store_ack(dsn: str, schema: str) -> None:
    async def body(store: AsyncEventStore) -> None:
        stream = new_stream()
        await store.append_to_stream(stream, 0, events(3))
        await store.append_to_stream(new_stream(), 0, events(2))
        sub = await store.subscribe_to_stream(stream, "versions", mapper=lambda e: e.stream_version)
        batch = await next_batch(sub)
        assert batch == [1, 2, 3]
        await store.ack(sub, batch[-1])
        await store.append_to_stream(stream, 3, events(1))
        assert await next_batch(sub) == [4]
        await store.ack(sub.subscription, 4)  # the sync handle works too

        current = await store.subscribe_to_stream(stream, "from-now", start_from="current")
        await store.append_to_stream(stream, 4, events(1))
        assert [e.stream_version for e in await next_batch(current)] == [5]
        await current.ack(5)
        await store.unsubscribe_from_stream(stream, "from-now")

    run(dsn, schema, body)


def test_transient_subscriptions_iterate_live_events_without_acks(dsn: str, schema: str) -> None:
    async def body(store: AsyncEventStore) -> None:
        stream, other = new_stream(), new_stream()
        await store.append_to_stream(stream, 0, events(2))  # before: never delivered
        everything = await store.subscribe("$all")
        mine = await store.subscribe(stream, mapper=lambda e: e.stream_version)
        odd = await store.subscribe("$all", selector=lambda e: e.event_id % 2 == 1)
        assert isinstance(everything, AsyncTransientSubscription)
        assert mine.stream_uuid == stream
        await store.append_to_stream(stream, 2, events(2, 3))
        await store.append_to_stream(other, 0, events(1))
        got: list[RecordedEvent] = []
        while len(got) < 3:
            got += await next_batch(everything)
        assert [e.event_id for e in got] == [3, 4, 5]
        assert await next_batch(mine) == [3, 4]  # no ack needed for the next batch
        seen: list[int] = []
        while len(seen) < 2:
            seen += [e.event_id for e in await next_batch(odd)]
        assert seen == [3, 5]
        with pytest.raises(TypeError):
            await everything.ack(got)
        assert await store.subscriptions() == []  # transient ones are not listed

        # Both ways of ending one; a running iteration ends, nothing comes after.
        async def drain(sub: AsyncTransientSubscription[int]) -> int:
            return len([batch async for batch in sub])

        waiting = asyncio.ensure_future(drain(mine))
        await asyncio.sleep(0)  # the task runs until it waits for a batch
        assert not waiting.done()
        await store.unsubscribe(mine)
        assert await asyncio.wait_for(waiting, WAIT) == 0
        await everything.unsubscribe()
        await store.append_to_stream(stream, 4, events(1))
        with pytest.raises(StopAsyncIteration):
            await next_batch(everything)
        async with odd:
            pass
        assert odd.closed

    run(dsn, schema, body)


def test_a_transient_subscription_whose_mapper_fails_raises(dsn: str, schema: str) -> None:
    def mapper(event: RecordedEvent) -> int:
        if event.stream_version == 2:
            raise RuntimeError("cannot map")
        return event.stream_version

    async def body(store: AsyncEventStore) -> None:
        stream = new_stream()
        sub = await store.subscribe(stream, mapper=mapper)
        await store.append_to_stream(stream, 0, events(3))
        assert await next_batch(sub) == [1]
        with pytest.raises(SubscriptionStoppedError, match="transient subscription") as stopped:
            await next_batch(sub)
        assert stopped.value.subscription is sub
        await sub.unsubscribe()  # nothing left to stop: no error

    run(dsn, schema, body)


def test_a_transient_subscription_that_falls_behind_ends_with_an_error(
    dsn: str, schema: str
) -> None:
    """Nothing waits for acks, so batches queue for the iteration: beyond
    subscription_max_size of them, the subscription ends (memory stays bounded)."""

    async def body(store: AsyncEventStore) -> None:
        sub = await store.subscribe("$all")
        for _ in range(6):  # six appends, six batches, none taken
            await store.append_to_stream(new_stream(), 0, events(1))
        with pytest.raises(SubscriptionStoppedError, match="fell behind"):
            for _ in range(7):
                await next_batch(sub)

    run(dsn, schema, body, subscription_max_size=2)


def test_next_batch_waits_for_the_ack(dsn: str, schema: str) -> None:
    async def body(store: AsyncEventStore) -> None:
        for _ in range(3):  # three streams: three batches
            await store.append_to_stream(new_stream(), 0, events(2))
        sub = await store.subscribe_to_all_streams("slow")
        first = await next_batch(sub)
        waiting = asyncio.ensure_future(anext(sub))
        await asyncio.sleep(QUIET)  # watching for something that must not happen
        assert not waiting.done(), "a batch was yielded before the previous one was acked"
        await sub.ack(first)
        second = await asyncio.wait_for(waiting, WAIT)
        assert second[0].event_id == first[-1].event_id + 1
        # A cancelled wait loses nothing: the batch comes to the next iteration.
        await sub.ack(second)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(sub), 0.0)
        third = await next_batch(sub)
        assert third[0].event_id == second[-1].event_id + 1

    run(dsn, schema, body)


def test_unsubscribe_ends_a_running_iteration_and_keeps_the_checkpoint(
    dsn: str, schema: str
) -> None:
    async def body(store: AsyncEventStore) -> None:
        stream = new_stream()
        await store.append_to_stream(stream, 0, events(2))
        sub = await store.subscribe_to_all_streams("ending")
        seen: list[int] = []

        async def consume() -> None:
            async for batch in sub:
                seen.extend(e.event_id for e in batch)
                await sub.ack(batch)

        task = asyncio.ensure_future(consume())
        await until(lambda: len(seen) >= 2)
        await stored_checkpoint(dsn, schema, "$all", "ending", 2)
        await sub.unsubscribe()
        await asyncio.wait_for(task, WAIT)  # the `async for` ended without an error
        assert sub.closed
        await sub.unsubscribe()  # idempotent
        await store.append_to_stream(stream, 2, events(1))

        again = await store.subscribe_to_all_streams("ending")
        assert [e.event_id for e in await next_batch(again)] == [3]

        # The store's own unsubscribe and delete end iterations too.
        task = asyncio.ensure_future(gather_batches(again))
        await store.unsubscribe_from_all_streams("ending")
        assert await asyncio.wait_for(task, WAIT) == 0
        third = await store.subscribe_to_stream(stream, "per-stream")
        task = asyncio.ensure_future(gather_batches(third))
        await store.delete_subscription(stream, "per-stream")
        await asyncio.wait_for(task, WAIT)
        assert checkpoint(dsn, schema, stream, "per-stream") is None
        fourth = await store.subscribe_to_all_streams("deleted")
        task = asyncio.ensure_future(gather_batches(fourth))
        await store.delete_all_streams_subscription("deleted")
        await asyncio.wait_for(task, WAIT)
        assert checkpoint(dsn, schema, "$all", "deleted") is None

    run(dsn, schema, body)


async def gather_batches(sub: AsyncSubscription[Any]) -> int:
    """Iterate to the end, acking; how many batches came."""
    count = 0
    async for batch in sub:
        count += 1
        await sub.ack(batch)
    return count


def test_async_with_subscription_and_store_stop_end_iterations_quietly(
    dsn: str, schema: str
) -> None:
    async def main() -> None:
        store = await AsyncEventStore.start(dsn, schema=schema)
        await store.append_to_stream(new_stream(), 0, events(1))
        async with await store.subscribe_to_all_streams("scoped") as sub:
            batch = await next_batch(sub)
            await sub.ack(batch)
        assert sub.closed
        running = await store.subscribe_to_all_streams("running")
        task = asyncio.ensure_future(gather_batches(running))
        await store.stop()
        await asyncio.wait_for(task, WAIT)
        with pytest.raises(StoreUnavailableError):
            await store.subscribe_to_all_streams("late")

    asyncio.run(main())


def test_a_subscription_that_stops_raises_in_the_iteration(dsn: str, schema: str) -> None:
    def mapper(event: RecordedEvent) -> int:
        if event.event_id == 3:
            raise RuntimeError("cannot map")
        return event.event_id

    async def body(store: AsyncEventStore) -> None:
        await store.append_to_stream(new_stream(), 0, events(4))
        sub = await store.subscribe_to_all_streams("failing", mapper=mapper)
        assert await next_batch(sub) == [1, 2]  # the events before the failing one
        await sub.ack(2)
        with pytest.raises(SubscriptionStoppedError, match="mapper") as stopped:
            await next_batch(sub)
        assert stopped.value.subscription is sub
        assert "mapper" in (sub.stopped_reason or "")
        with pytest.raises(StopAsyncIteration):
            await anext(sub)
        await sub.unsubscribe()  # nothing left to stop: no error
        again = await store.subscribe_to_all_streams("failing")  # the name is free again
        # The ack of 2 may have come after the subscription ended: then 1 and 2 come again.
        replayed = [e.event_id for e in await next_batch(again)]
        assert replayed in ([3, 4], [1, 2, 3, 4])

    run(dsn, schema, body)


def test_a_dropped_subscription_frees_its_name(dsn: str, schema: str) -> None:
    async def body(store: AsyncEventStore) -> None:
        await store.append_to_stream(new_stream(), 0, events(2))
        sub = await store.subscribe_to_all_streams("dropped")
        await next_batch(sub)
        del sub
        gc.collect()
        deadline = time.monotonic() + WAIT
        while True:  # the ticker notices the dead subscriber within a second
            try:
                again = await store.subscribe_to_all_streams("dropped")
                break
            except SubscriptionAlreadyExistsError:
                assert time.monotonic() < deadline, "the dropped subscription kept its name"
                await asyncio.sleep(0.05)
        assert [e.event_id for e in await next_batch(again)] == [1, 2]  # nothing was acked

    run(dsn, schema, body)


# Cancellation ---------------------------------------------------------------------------------
def _waiting_on_events(dsn: str, schema: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            sql.SQL(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = {}::regclass"
            ).format(sql.Literal(f"{schema}.events"))
        ).fetchone()
    return int(row[0]) if row else 0


class _LockedEvents:
    """Holds ACCESS EXCLUSIVE on the events table, so that an append in progress waits."""

    def __init__(self, dsn: str, schema: str) -> None:
        self.conn = psycopg.connect(dsn)
        self.conn.execute(
            sql.SQL("LOCK TABLE {}.events IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(schema))
        )

    def release(self) -> None:
        if not self.conn.closed:
            self.conn.rollback()
            self.conn.close()


@pytest.fixture
def locked_events(dsn: str, schema: str) -> Iterator[Callable[[], _LockedEvents]]:
    held: list[_LockedEvents] = []

    def lock() -> _LockedEvents:
        held.append(_LockedEvents(dsn, schema))
        return held[-1]

    yield lock
    for lock_ in held:
        lock_.release()


async def _until_an_append_waits(dsn: str, schema: str, task: asyncio.Future[Any]) -> None:
    deadline = time.monotonic() + WAIT
    while not await asyncio.to_thread(_waiting_on_events, dsn, schema):
        assert not task.done(), task
        assert time.monotonic() < deadline, "the append never reached the locked table"


def test_cancelling_a_running_append_cancels_the_wait_only(
    dsn: str, schema: str, locked_events: Callable[[], _LockedEvents]
) -> None:
    async def body(store: AsyncEventStore) -> None:
        await store.append_to_stream(new_stream(), 0, events(1))  # the writer is connected
        stream = new_stream()
        lock = locked_events()
        task = asyncio.ensure_future(store.append_to_stream(stream, 0, events(500)))
        await _until_an_append_waits(dsn, schema, task)
        task.cancel()
        began = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - began < 1.0  # while the append is still blocked
        lock.release()
        # The append was under way: it commits entirely. Never a part of it. (A read racing
        # with the commit may find the stream but not yet its events: [], as in the sync API.)
        deadline = time.monotonic() + WAIT
        while True:
            try:
                stored = len(await store.read_stream_forward(stream))
            except StreamNotFoundError:
                stored = 0
            assert stored in (0, 500), f"a part of the append is visible: {stored} events"
            if stored == 500:
                break
            assert time.monotonic() < deadline, "the running append never committed"
            await asyncio.sleep(0.02)

    run(dsn, schema, body)


def test_cancelling_a_conn_append_waits_for_it_to_leave_the_connection(
    dsn: str, schema: str, locked_events: Callable[[], _LockedEvents]
) -> None:
    """A conn= append runs statements on the caller's AsyncConnection: a cancelled caller gets
    its CancelledError only once the append is done with that connection, which is then the
    caller's again, in a usable transaction (here: rolled back, nothing stored)."""

    async def body(store: AsyncEventStore) -> None:
        stream = new_stream()
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            lock = locked_events()
            task = asyncio.ensure_future(store.append_to_stream(stream, 0, events(3), conn=conn))
            await _until_an_append_waits(dsn, schema, task)
            task.cancel()
            await asyncio.sleep(QUIET)
            assert not task.done(), "the caller went on while the append used its connection"
            lock.release()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), WAIT)
            await conn.rollback()  # the caller's transaction, usable: theirs to end
            with pytest.raises(StreamNotFoundError):
                await store.read_stream_forward(stream)

    run(dsn, schema, body)


def test_cancelling_a_queued_call_means_it_never_runs(
    dsn: str, schema: str, locked_events: Callable[[], _LockedEvents]
) -> None:
    async def body(store: AsyncEventStore) -> None:
        await store.append_to_stream(new_stream(), 0, events(1))
        lock = locked_events()
        first, second = new_stream(), new_stream()
        running = asyncio.ensure_future(store.append_to_stream(first, 0, events(3)))
        await _until_an_append_waits(dsn, schema, running)
        queued = asyncio.ensure_future(store.append_to_stream(second, 0, events(3)))
        await asyncio.sleep(0)  # let it queue for the (only, busy) thread
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        lock.release()
        assert (await asyncio.wait_for(running, WAIT)) is not None
        # Calls run in order on the one thread: had the cancelled one run, it would be done.
        assert len(await store.read_stream_forward(first)) == 3
        with pytest.raises(StreamNotFoundError):
            await store.read_stream_forward(second)

    run(dsn, schema, body, threads=1)


def test_cancelling_a_subscribe_leaves_the_name_free(dsn: str, schema: str) -> None:
    async def body(store: AsyncEventStore) -> None:
        task = asyncio.ensure_future(store.subscribe_to_all_streams("cancelled"))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        deadline = time.monotonic() + WAIT
        while True:
            try:
                sub = await store.subscribe_to_all_streams("cancelled")
                break
            except SubscriptionAlreadyExistsError:
                assert time.monotonic() < deadline, "the cancelled subscribe kept the name"
                await asyncio.sleep(0.05)
        await store.append_to_stream(new_stream(), 0, events(1))
        assert [e.event_id for e in await next_batch(sub)] == [1]

    run(dsn, schema, body)


def test_cancelling_start_stops_what_it_started(dsn: str, schema: str) -> None:
    async def main() -> None:
        task = asyncio.ensure_future(AsyncEventStore.start(dsn, schema=schema))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    before = {t.ident for t in threading.enumerate()}
    asyncio.run(main())

    def leftover() -> list[str]:
        return [
            t.name
            for t in threading.enumerate()
            if t.ident not in before and not t.daemon and not t.name.startswith("eventstore-aio")
        ]

    deadline = time.monotonic() + WAIT
    while leftover():
        assert time.monotonic() < deadline, f"threads left running: {leftover()}"
        time.sleep(0.05)


# The loop is never held -----------------------------------------------------------------------
class LagProbe:
    """Sleeps 1 ms in a loop. `worst`: its worst overshoot, how long the loop was held (by
    our code, or waiting for the GIL or a CPU on a busy machine); `worst_cpu`: the most CPU
    the loop's thread used between two wake-ups (our code on the loop, without the waits)."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.worst_cpu = 0.0
        self.samples = 0
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            began, cpu = time.perf_counter(), time.thread_time()
            await asyncio.sleep(0.001)
            lag = time.perf_counter() - began - 0.001
            self.worst = max(self.worst, lag)
            self.lags.append(lag)
            self.worst_cpu = max(self.worst_cpu, time.thread_time() - cpu)
            self.samples += 1

    @property
    def p99(self) -> float:
        ordered = sorted(self.lags)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]

    def __enter__(self) -> LagProbe:
        self._task = asyncio.ensure_future(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


TASKS, PER_TASK, BATCHES, BATCH_SIZE = 50, 100, 20, 100
TOTAL = TASKS * PER_TASK + BATCHES * BATCH_SIZE


async def _heavy_appends(store: AsyncEventStore) -> LagProbe:
    """50 tasks x 100 single-event appends and 20 tasks appending 100 events, all at once."""

    async def single(worker: int) -> None:
        stream = new_stream()
        for i in range(PER_TASK):
            await store.append_to_stream(stream, i, events(1, i + 1))

    async def batch() -> None:
        await store.append_to_stream(new_stream(), 0, events(BATCH_SIZE))

    with LagProbe() as probe:
        await asyncio.gather(*(single(w) for w in range(TASKS)), *(batch() for _ in range(BATCHES)))
    assert probe.samples > 10
    return probe


async def _catch_up(store: AsyncEventStore, after: int, name: str) -> LagProbe:
    """A subscription's catch-up through `async for`, then a stream of the same events."""
    with LagProbe() as probe:
        sub = await store.subscribe_to_all_streams(name, start_from=after)
        seen = 0
        async for batch in sub:
            seen += len(batch)
            await sub.ack(batch)
            if seen >= TOTAL:
                break
        await sub.unsubscribe()
        streamed = 0
        async for _ in store.stream_all_forward(after + 1):
            streamed += 1
    assert (seen, streamed) == (TOTAL, TOTAL)
    return probe


def test_no_call_blocks_the_loop_during_heavy_appends_and_catch_up(
    dsn: str, schema: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The wall-clock lag also counts waiting for the GIL (the store's threads share it), for a
    CPU (the machine is shared) and garbage collections: single spikes past 50 ms were seen
    under a full parallel test load while the loop's own work between two probes stayed under
    9 ms. So the bound is on the 99th percentile (a call that blocked the loop, such as an
    append or a page read made on it, lengthens nearly every probe: 70 tasks' calls in one
    loop pass), with a ceiling on the worst; a run over them is measured again, up to 3 times."""
    attempts: list[tuple[LagProbe, LagProbe]] = []

    def passed(appends: LagProbe, catch_up: LagProbe) -> bool:
        return all(p.p99 < MAX_LAG and p.worst < MAX_SPIKE for p in (appends, catch_up))

    async def body(store: AsyncEventStore) -> None:
        await store.append_to_stream(new_stream(), 0, events(1))  # the writer is connected
        while len(attempts) < 3:
            head = (await store.stream_info("$all")).stream_version
            appends = await _heavy_appends(store)
            catch_up = await _catch_up(store, head, f"lag-{len(attempts)}")
            attempts.append((appends, catch_up))
            if passed(appends, catch_up):
                break

    run(dsn, schema, body, timeout=180.0)
    with capsys.disabled():
        for appends, catch_up in attempts:
            print(
                f"\nloop lag, worst (p99): {appends.worst * 1000:.1f} ms "
                f"({appends.p99 * 1000:.1f} ms) during {TOTAL:,} events appended by "
                f"{TASKS + BATCHES} tasks, {catch_up.worst * 1000:.1f} ms "
                f"({catch_up.p99 * 1000:.1f} ms) during a catch-up and a stream of {TOTAL:,} "
                f"events; most loop CPU between two probes "
                f"{max(appends.worst_cpu, catch_up.worst_cpu) * 1000:.1f} ms"
            )
    assert passed(*attempts[-1]), [(a.worst, a.p99, c.worst, c.p99) for a, c in attempts]
