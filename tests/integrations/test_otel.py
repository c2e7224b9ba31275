"""Trace propagation with OpenTelemetry (API.md part 3), against a real PostgreSQL and the
SDK's in-memory exporter: appends are spans, the W3C trace context rides in each event's
metadata, each delivered batch is a span linked to its producers and ended at ack, and
without a tracer provider (or without OpenTelemetry) nothing happens and nothing is imported.
"""

from __future__ import annotations

import ast
import asyncio
import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState
from opentelemetry.util._once import Once
from support import QueueSubscriber, events, wait_until

from eventstore_actors import (
    DuplicateEventError,
    EventData,
    EventStore,
    RecordedEvent,
    StreamAppend,
    WrongExpectedVersionError,
)
from eventstore_actors import tracing as core_tracing
from eventstore_actors.aio import AsyncEventStore
from eventstore_actors.integrations import otel as integration
from eventstore_actors.otel import extract

ROOT = Path(__file__).resolve().parents[2]
MakeStore = Callable[..., EventStore]


def _set_provider(provider: TracerProvider | None) -> None:
    # The API lets a process set its global provider once; each test sets its own and puts
    # the default (a proxy: "no provider") back, through the API's private names.
    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]
    if provider is not None:
        trace.set_tracer_provider(provider)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _set_provider(provider)
    try:
        yield exporter
    finally:
        _set_provider(None)
        provider.shutdown()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def context_of(span: Any) -> SpanContext:
    found: SpanContext = span.get_span_context()
    return found


def ids(context: SpanContext) -> tuple[int, int]:
    """A span's identity (a SpanContext read from metadata is remote: not ==)."""
    return (context.trace_id, context.span_id)


def tracer() -> trace.Tracer:
    return trace.get_tracer("tests")


# Appends --------------------------------------------------------------------------------------
def test_an_append_is_a_span_with_its_stream_count_and_event_ids(
    store: EventStore, spans: InMemorySpanExporter
) -> None:
    with tracer().start_as_current_span("request") as request:
        result = store.append_to_stream("orders-1", 0, events(3))
    assert result is not None
    [append] = named(spans, "eventstore.append")
    assert append.kind is trace.SpanKind.PRODUCER
    assert append.parent is not None and append.parent.span_id == context_of(request).span_id
    assert append.context.trace_id == context_of(request).trace_id
    assert dict(append.attributes or {}) == {
        "eventstore.stream": "orders-1",
        "eventstore.event_count": 3,
        "eventstore.first_event_id": result.first_event_id,
        "eventstore.last_event_id": result.last_event_id,
    }


def test_each_stored_event_carries_the_append_spans_traceparent(
    store: EventStore, spans: InMemorySpanExporter
) -> None:
    sent = [*events(2), EventData({"n": 3}, event_type="tests.Numbered")]  # metadata None
    store.append_to_stream("s", 0, sent)
    [append] = named(spans, "eventstore.append")
    ctx = append.context
    expected = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"
    stored = store.read_stream_forward("s")
    assert [e.metadata for e in stored] == [
        {"meta": 1, "traceparent": expected},
        {"meta": 2, "traceparent": expected},
        {"traceparent": expected},  # None becomes a mapping holding the context
    ]


def test_tracestate_is_written_too(store: EventStore, spans: InMemorySpanExporter) -> None:
    remote = SpanContext(
        trace_id=0x1234,
        span_id=0x5678,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "v1")]),
    )
    parent = trace.set_span_in_context(NonRecordingSpan(remote), Context())
    with tracer().start_as_current_span("request", context=parent):
        store.append_to_stream("s", 0, events(1))
    [event] = store.read_stream_forward("s")
    assert event.metadata is not None
    assert event.metadata["tracestate"] == "vendor=v1"
    assert event.metadata["traceparent"].startswith(f"00-{0x1234:032x}-")


def test_a_traceparent_already_in_the_metadata_is_kept(
    store: EventStore, spans: InMemorySpanExporter
) -> None:
    own = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    store.append_to_stream(
        "s",
        0,
        [
            EventData({"n": 1}, event_type="t", metadata={"traceparent": own}),
            EventData({"n": 2}, event_type="t", metadata={"tracestate": "a=b"}),
        ],
    )
    first, second = store.read_stream_forward("s")
    assert first.metadata == {"traceparent": own}
    assert second.metadata == {"tracestate": "a=b"}  # a context of its own: left alone
    assert len(named(spans, "eventstore.append")) == 1


def test_append_to_streams_is_one_span_naming_each_stream(
    store: EventStore, spans: InMemorySpanExporter
) -> None:
    results = store.append_to_streams(
        [StreamAppend("a", 0, events(2)), StreamAppend("b", 0, events(1, start=3))]
    )
    [append] = named(spans, "eventstore.append")
    attributes = dict(append.attributes or {})
    assert tuple(attributes["eventstore.stream"]) == ("a", "b")  # type: ignore[arg-type]
    assert attributes["eventstore.event_count"] == 3
    assert attributes["eventstore.first_event_id"] == results[0].first_event_id
    assert attributes["eventstore.last_event_id"] == results[1].last_event_id
    for stream in ("a", "b"):
        for event in store.read_stream_forward(stream):
            assert extract(event) != Context()
            assert ids(_producer(event)) == ids(append.context)


def test_a_failed_append_is_a_span_with_the_error(
    store: EventStore, spans: InMemorySpanExporter
) -> None:
    store.append_to_stream("s", 0, events(1))
    with pytest.raises(WrongExpectedVersionError):
        store.append_to_stream("s", 0, events(1))
    failed = named(spans, "eventstore.append")[-1]
    assert failed.status.status_code is trace.StatusCode.ERROR
    assert dict(failed.attributes or {})["eventstore.stream"] == "s"


def test_an_append_with_conn_is_traced(
    store: EventStore, spans: InMemorySpanExporter, dsn: str
) -> None:
    import psycopg

    with psycopg.connect(dsn) as conn:
        store.append_to_stream("s", 0, events(1), conn=conn)
    [append] = named(spans, "eventstore.append")
    [event] = store.read_stream_forward("s")
    assert ids(_producer(event)) == ids(append.context)


def test_an_async_append_runs_in_the_callers_trace(
    dsn: str, schema: str, spans: InMemorySpanExporter
) -> None:
    async def main() -> None:
        async with await AsyncEventStore.start(dsn, schema=schema) as store:
            with tracer().start_as_current_span("request") as request:
                await store.append_to_stream("s", 0, events(1))
                await store.append_to_streams([StreamAppend("t", 0, events(1))])
            appends = named(spans, "eventstore.append")
            assert len(appends) == 2
            for append in appends:
                assert append.parent is not None
                assert append.parent.span_id == context_of(request).span_id
            [event] = await store.read_stream_forward("s")
            assert ids(_producer(event)) == ids(appends[0].context)

    asyncio.run(main())


def test_a_retry_in_another_span_is_still_the_same_event(
    store: EventStore, spans: InMemorySpanExporter
) -> None:
    """Each attempt has its own span, so its own traceparent: the idempotency check does not
    compare the trace context (a retry would else always be a DuplicateEventError)."""
    given = uuid.uuid4()
    event = EventData({"n": 1}, event_type="t", metadata={"k": 1}, event_uuid=given)
    first = store.append_to_stream("s", 0, [event])
    again = store.append_to_stream("s", 0, [event])  # another span, another traceparent
    assert again == first
    _set_provider(None)  # and untraced (a restart without the provider)
    assert store.append_to_stream("s", 0, [event]) == first
    changed = EventData({"n": 1}, event_type="t", metadata={"k": 2}, event_uuid=given)
    with pytest.raises(DuplicateEventError):
        store.append_to_stream("s", 0, [changed])
    [stored] = store.read_stream_forward("s")
    assert stored.metadata is not None and stored.metadata["k"] == 1


def test_same_metadata_ignores_only_the_trace_keys() -> None:
    from eventstore_actors import JsonSerializer

    same = core_tracing.same_metadata(JsonSerializer())

    def raw(value: Any) -> bytes:
        return json.dumps(value).encode()

    assert same(raw({"a": 1, "traceparent": "x"}), raw({"a": 1, "traceparent": "y"}))
    assert same(None, raw({"traceparent": "y", "tracestate": "z"}))
    assert not same(raw({"a": 1, "traceparent": "x"}), raw({"a": 2, "traceparent": "x"}))
    assert not same(raw({"a": 1}), None)
    assert not same(b"\xff not json", raw({"a": 1}))
    assert core_tracing.TRACE_KEYS == integration.TRACE_KEYS


# extract --------------------------------------------------------------------------------------
def _producer(event: RecordedEvent) -> SpanContext:
    return trace.get_current_span(extract(event)).get_span_context()


def test_extract_gives_the_producers_context(
    store: EventStore, spans: InMemorySpanExporter
) -> None:
    store.append_to_stream("s", 0, events(1))
    [append] = named(spans, "eventstore.append")
    [event] = store.read_stream_forward("s")
    producer = _producer(event)
    assert producer.is_remote
    assert (producer.trace_id, producer.span_id) == (
        append.context.trace_id,
        append.context.span_id,
    )
    # A span started in that context continues the producer's trace.
    with tracer().start_as_current_span("project", context=extract(event)) as project:
        pass
    assert context_of(project).trace_id == append.context.trace_id


def test_extract_of_an_event_without_context_is_empty(store: EventStore) -> None:
    store.append_to_stream("s", 0, events(1))  # no provider: nothing written
    [event] = store.read_stream_forward("s")
    assert event.metadata == {"meta": 1}
    assert extract(event) == Context()
    assert not _producer(event).is_valid
    odd = RecordedEvent(1, "s", 1, "t", {}, {"traceparent": 42}, None, None, event.created_at)
    assert extract(odd) == Context()


# Deliveries -----------------------------------------------------------------------------------
def deliveries(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return named(exporter, "eventstore.deliver")


def test_a_delivered_batch_is_a_span_linked_to_its_producer_ended_at_ack(
    store: EventStore, spans: InMemorySpanExporter
) -> None:
    q = QueueSubscriber()
    sub = store.subscribe_to_all_streams("projection", q)
    q.subscribed()
    with tracer().start_as_current_span("request"):
        store.append_to_stream("s", 0, events(2))
    [append] = named(spans, "eventstore.append")
    batch = q.batch()
    assert len(batch) == 2
    assert deliveries(spans) == []  # open until acked
    sub.ack(batch)
    [deliver] = wait_until(lambda: deliveries(spans), what="the deliver span to end")
    assert deliver.kind is trace.SpanKind.CONSUMER
    assert dict(deliver.attributes or {}) == {
        "eventstore.subscription": "projection",
        "eventstore.event_count": 2,
        "eventstore.acked": True,
    }
    assert [ids(link.context) for link in deliver.links] == [
        ids(append.context)
    ]  # one per producer
    assert deliver.start_time is not None and append.end_time is not None


def test_an_asyncio_subscription_is_traced_the_same(
    dsn: str, schema: str, spans: InMemorySpanExporter
) -> None:
    async def main() -> None:
        async with await AsyncEventStore.start(dsn, schema=schema) as store:
            sub = await store.subscribe_to_all_streams("projection")
            await store.append_to_stream("s", 0, events(2))
            batch = await asyncio.wait_for(anext(sub), 10)
            assert deliveries(spans) == []
            await sub.ack(batch)
            for _ in range(500):  # bounded: the ack reaches the actor on its thread
                if deliveries(spans):
                    break
                await asyncio.sleep(0.02)
            [deliver] = deliveries(spans)
            [append] = named(spans, "eventstore.append")
            assert [ids(link.context) for link in deliver.links] == [ids(append.context)]
            assert dict(deliver.attributes or {})["eventstore.event_count"] == 2

    asyncio.run(main())


def test_each_batch_ends_at_the_ack_that_covers_it(
    store: EventStore, spans: InMemorySpanExporter
) -> None:
    q = QueueSubscriber()
    sub = store.subscribe_to_stream("s", "projection", q, max_size=1)
    q.subscribed()
    store.append_to_stream("s", 0, events(1))
    store.append_to_stream("s", 1, events(1, start=2))
    first = q.batch()
    sub.ack(first)
    [one] = wait_until(lambda: deliveries(spans))
    second = q.batch()
    assert len(deliveries(spans)) == 1
    sub.ack(second)
    wait_until(lambda: len(deliveries(spans)) == 2)
    appends = named(spans, "eventstore.append")
    assert [ids(s.links[0].context) for s in deliveries(spans)] == [ids(a.context) for a in appends]
    assert ids(one.links[0].context) == ids(appends[0].context)


def test_a_projection_in_another_store_continues_the_producers_trace(
    make_store: MakeStore, spans: InMemorySpanExporter
) -> None:
    """request -> append (one store) -> delivery and projection (another store instance on
    the same schema, as another process would be)."""
    producer, consumer = make_store(), make_store()
    q = QueueSubscriber()
    sub = consumer.subscribe_to_all_streams("projection", q)
    q.subscribed()
    with tracer().start_as_current_span("POST /orders") as request:
        producer.append_to_stream("orders-1", 0, events(1))
    [event] = q.batch()
    with tracer().start_as_current_span("project order", context=extract(event)):
        pass
    sub.ack(event)
    [deliver] = wait_until(lambda: deliveries(spans))
    [append] = named(spans, "eventstore.append")
    [project] = named(spans, "project order")
    trace_id = context_of(request).trace_id
    assert append.context.trace_id == trace_id
    assert project.context.trace_id == trace_id
    assert project.parent is not None and project.parent.span_id == append.context.span_id
    assert [ids(link.context) for link in deliver.links] == [ids(append.context)]


def test_spans_of_unacked_batches_end_when_the_subscription_stops(
    store: EventStore, spans: InMemorySpanExporter
) -> None:
    q = QueueSubscriber()
    sub = store.subscribe_to_all_streams("projection", q)
    q.subscribed()
    store.append_to_stream("s", 0, events(2))
    q.batch()
    sub.unsubscribe()
    [deliver] = wait_until(lambda: deliveries(spans), what="the unacked span to end")
    assert dict(deliver.attributes or {})["eventstore.acked"] is False


def test_competing_consumers_end_their_batches_at_the_per_event_acks(
    store: EventStore, spans: InMemorySpanExporter
) -> None:
    q = QueueSubscriber()
    sub = store.subscribe_to_all_streams("group", q, concurrency_limit=2, buffer_size=10)
    q.subscribed()
    with tracer().start_as_current_span("request"):
        store.append_to_stream("s", 0, events(2))
    [append] = named(spans, "eventstore.append")
    received: list[RecordedEvent] = []
    while len(received) < 2:
        received += q.batch()
    sub.ack(received[1])
    sub.ack(received[0])
    ended = ended_for(spans, 2)
    for deliver in ended:
        assert dict(deliver.attributes or {})["eventstore.subscription"] == "group"
        assert dict(deliver.attributes or {})["eventstore.acked"] is True
        assert [ids(link.context) for link in deliver.links] == [ids(append.context)]


def test_a_consumer_groups_batches_are_spans_of_the_group_with_their_partition(
    store: EventStore, spans: InMemorySpanExporter
) -> None:
    """`eventstore.subscription` was the partition's internal row name (the group's name, a
    control character, "partition 1 of 2"): it is the group's, the partition apart."""
    from eventstore_actors.storage.reader import partition_of

    q = QueueSubscriber()
    group = store.subscribe_to_all_streams("group", q, partitions=2)
    q.subscribed()
    names = ["a", "b", "c", "d", "e", "f"]
    assert {partition_of(n, 2) for n in names} == {0, 1}  # both partitions deliver
    for name in names:
        store.append_to_stream(name, 0, events(1))
    received: list[RecordedEvent] = []
    while len(received) < len(names):
        batch = q.batch()
        group.ack(batch)
        received += batch
    per_partition: dict[object, int] = {}
    for deliver in ended_for(spans, len(names)):
        attributes = dict(deliver.attributes or {})
        assert attributes["eventstore.subscription"] == "group"
        assert attributes["eventstore.acked"] is True
        partition = attributes["eventstore.partition"]
        per_partition[partition] = per_partition.get(partition, 0) + _count(deliver)
    # Each partition's events in spans of that partition (numbered as SubscriptionInfo does).
    assert per_partition == {p: sum(partition_of(n, 2) == p for n in names) for p in (0, 1)}
    assert {s.partition for s in store.subscriptions()} == {0, 1}


def test_a_nacked_event_is_settled_for_its_batch(
    store: EventStore, spans: InMemorySpanExporter
) -> None:
    q = QueueSubscriber()
    sub = store.subscribe_to_all_streams("group", q, concurrency_limit=2, buffer_size=10)
    q.subscribed()
    store.append_to_stream("s", 0, events(2))
    received: list[RecordedEvent] = []
    while len(received) < 2:
        received += q.batch()
    sub.ack(received[1])  # per event: the first is still out
    sub.nack(received[0], "park", "bad data")
    ended = ended_for(spans, 2)
    assert all(dict(s.attributes or {})["eventstore.acked"] is True for s in ended)


def ended_for(exporter: InMemorySpanExporter, count: int) -> list[ReadableSpan]:
    """The deliver spans, once they cover `count` events (bounded wait)."""
    wait_until(
        lambda: sum(_count(s) for s in deliveries(exporter)) == count,
        what="the batches' spans to end",
    )
    return deliveries(exporter)


def _count(span: ReadableSpan) -> int:
    return int(dict(span.attributes or {})["eventstore.event_count"])  # type: ignore[arg-type]


def _at(*positions: int) -> list[Any]:
    return [SimpleNamespace(metadata=None, position=p) for p in positions]


def _position(event: Any) -> int:
    return int(event.position)


def test_a_batch_ends_once_each_position_is_acked(spans: InMemorySpanExporter) -> None:
    open_ = integration.Deliveries("x")
    open_.delivered(_at(1, 2, 3), _position)
    open_.acked(3, each=(1, 3))  # per-event acks: 2 is still out
    assert deliveries(spans) == []
    open_.acked(2, each=(2,))
    assert len(deliveries(spans)) == 1
    open_.delivered(_at(4, 5), _position)
    open_.delivered(_at(6), _position)
    open_.acked(5)  # cumulative: the first of the two only
    assert [_count(s) for s in deliveries(spans)] == [3, 2]
    open_.close()
    assert [dict(s.attributes or {})["eventstore.acked"] for s in deliveries(spans)] == [
        True,
        True,
        False,
    ]


def test_open_spans_are_bounded(spans: InMemorySpanExporter) -> None:
    """A subscriber that never acks cannot hold spans without bound."""
    open_ = integration.Deliveries("x")
    for n in range(integration.MAX_OPEN_DELIVERIES + 5):
        open_.delivered(_at(n), _position)
    ended = deliveries(spans)
    assert len(ended) == 5
    assert all(dict(s.attributes or {})["eventstore.acked"] is False for s in ended)
    open_.acked(10)
    assert len(deliveries(spans)) == 5 + 6  # positions 5..10 were still open


# Without a provider, without OpenTelemetry -----------------------------------------------------
def test_without_a_provider_nothing_is_written_or_traced(store: EventStore) -> None:
    assert not integration.configured()
    assert core_tracing.append_span() is None
    store.append_to_stream("s", 0, events(1))
    [event] = store.read_stream_forward("s")
    assert event.metadata == {"meta": 1}


CHILD = """
import sys

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ImportError("blocked: " + name)
        return None

if BLOCK:
    sys.meta_path.insert(0, Blocker())

import queue
from eventstore_actors import EventData, EventStore

store = EventStore.start(DSN, schema=SCHEMA)
try:
    store.append_to_stream("s", 0, [EventData({"n": 1}, event_type="t", metadata={"m": 1})])
    inbox = queue.Queue()
    class Sub:
        def tell(self, message):
            inbox.put(message)
    sub = store.subscribe_to_all_streams("p", Sub())
    inbox.get(timeout=10)  # Subscribed
    batch = inbox.get(timeout=10).events
    sub.ack(batch)
    metadata = store.read_stream_forward("s")[0].metadata
finally:
    store.stop()
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
print(repr((metadata, loaded, "eventstore_actors.integrations.otel" in sys.modules)))
"""


@pytest.mark.parametrize("block", [True, False])
def test_nothing_is_imported_without_opentelemetry(dsn: str, schema: str, block: bool) -> None:
    """Blocked (as without the extra) or merely installed and unused, OpenTelemetry is never
    imported by the store: appends, subscriptions and acks run without it."""
    code = f"DSN = {dsn!r}\nSCHEMA = {schema!r}\nBLOCK = {block!r}\n" + textwrap.dedent(CHILD)
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    metadata, loaded, integration_loaded = ast.literal_eval(last)
    assert metadata == {"m": 1}
    assert loaded == []
    assert integration_loaded is False
