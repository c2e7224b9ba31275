"""OpenTelemetry trace propagation: each append a span, the W3C trace context in each event's
metadata, each delivered batch a span linked to the contexts of the events' producers.

This module imports `opentelemetry` and is loaded only by `eventstore_actors.tracing`, once the
application has imported `opentelemetry.trace` itself, and used only while a tracer provider
is configured (anything but the API's proxy or no-op provider); `eventstore_actors.otel` is its
public name (`extract`). Nothing here touches the store: it gets events and results.

Attributes (all prefixed `eventstore.`): on `eventstore.append` (kind PRODUCER) `stream` (the
name; a list of names for an `append_to_streams` of several streams), `event_count`,
`first_event_id` and `last_event_id`; on `eventstore.deliver` (kind CONSUMER) `subscription`
(a consumer group's name for each of its partitions), `partition` (a consumer group's only:
the partition's number, from 0, as `SubscriptionInfo.partition`), `event_count` and, when it
ends, `acked` (False: the subscription stopped first).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ..events import AppendResult, RecordedEvent

__all__ = ["TRACE_KEYS", "AppendSpan", "Deliveries", "configured", "extract"]

#: The metadata keys that carry the W3C trace context (as `tracing.TRACE_KEYS`, which the
#: store's core reads without importing this module).
TRACE_KEYS = ("traceparent", "tracestate")

#: Delivered batches whose span is still open, per subscription actor: beyond this, the
#: oldest is ended unacked (a subscriber that never acks must not hold spans for ever).
MAX_OPEN_DELIVERIES = 1000

_PROPAGATOR = TraceContextTextMapPropagator()
_SCOPE = "eventstore_actors"
_cached: tuple[Any, trace.Tracer] | None = None


def configured() -> bool:
    """Whether the application set a tracer provider (the API's default is a proxy)."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def _tracer() -> trace.Tracer:
    global _cached
    provider = trace.get_tracer_provider()
    cached = _cached
    if cached is None or cached[0] is not provider:
        cached = _cached = (provider, provider.get_tracer(_SCOPE))
    return cached[1]


def extract(event: RecordedEvent) -> Context:
    """The context of the span that appended `event` (its producer), read from the
    `traceparent`/`tracestate` in its metadata; an empty Context when it has none."""
    metadata = getattr(event, "metadata", None)
    if not isinstance(metadata, Mapping):
        return Context()
    carrier = {k: v for k in TRACE_KEYS if isinstance(v := metadata.get(k), str)}
    if not carrier:
        return Context()
    return _PROPAGATOR.extract(carrier, context=Context())


def _producer(event: Any) -> trace.SpanContext | None:
    context = extract(event)
    span_context = trace.get_current_span(context).get_span_context()
    return span_context if span_context.is_valid else None


class AppendSpan:
    """The span `eventstore.append` of one append call, current while it runs, and the
    trace context it writes into the events' metadata."""

    def __init__(self) -> None:
        self._manager = _tracer().start_as_current_span(
            "eventstore.append", kind=trace.SpanKind.PRODUCER
        )
        self._span: trace.Span = trace.INVALID_SPAN
        self._carrier: dict[str, str] = {}
        self._streams: list[str] = []

    def __enter__(self) -> AppendSpan:
        self._span = self._manager.__enter__()
        _PROPAGATOR.inject(self._carrier)  # the context now current: this span's
        return self

    def __exit__(self, *exc_info: Any) -> bool | None:
        return self._manager.__exit__(*exc_info)

    def stream(self, stream_uuid: str) -> None:
        """`stream_uuid` is appended to (checked): noted on the span."""
        self._streams.append(stream_uuid)
        names = self._streams
        self._span.set_attribute("eventstore.stream", names[0] if len(names) == 1 else names)

    def metadata(self, given: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
        """The metadata to store for an event given `given`: with this span's trace context
        added, unless it already has `traceparent` or `tracestate` (kept as is)."""
        carrier = self._carrier
        if not carrier:
            return given
        if given is None:
            return dict(carrier)
        if any(k in given for k in TRACE_KEYS):
            return given
        return {**given, **carrier}

    def appended(self, results: Sequence[AppendResult]) -> None:
        """The append wrote `results`: its event count and event_ids noted on the span."""
        self._span.set_attribute("eventstore.event_count", sum(_count(r) for r in results))
        if results:
            first = min(r.first_event_id for r in results)
            last = max(r.last_event_id for r in results)
            self._span.set_attribute("eventstore.first_event_id", first)
            self._span.set_attribute("eventstore.last_event_id", last)


def _count(result: AppendResult) -> int:
    return result.last_version - result.first_version + 1


class _Open:
    __slots__ = ("pending", "span")

    def __init__(self, span: trace.Span, pending: set[int]) -> None:
        self.span = span
        self.pending = pending


class Deliveries:
    """The open `eventstore.deliver` spans of one subscription actor (used by its thread
    only): a span per batch told to a subscriber, ended once each of its positions is acked
    (or nacked: settled for this delivery), or unacked when the subscription stops
    (`close`)."""

    def __init__(self, name: str, partition: int | None = None) -> None:
        self._attributes: dict[str, str | int] = {"eventstore.subscription": name}
        if partition is not None:
            self._attributes["eventstore.partition"] = partition
        self._open: list[_Open] = []

    def delivered(self, events: Sequence[Any], position: Callable[[Any], int]) -> None:
        """`events` were told to a subscriber; `position(event)`: what an ack of it says."""
        links: dict[tuple[int, int], trace.Link] = {}
        for event in events:
            producer = _producer(event)
            if producer is not None:
                links.setdefault((producer.trace_id, producer.span_id), trace.Link(producer))
        span = _tracer().start_span(
            "eventstore.deliver",
            context=Context(),  # a root: its producers are links, as a batch has several
            kind=trace.SpanKind.CONSUMER,
            links=list(links.values()),
            attributes={**self._attributes, "eventstore.event_count": len(events)},
        )
        self._open.append(_Open(span, {position(e) for e in events}))
        while len(self._open) > MAX_OPEN_DELIVERIES:
            _end(self._open.pop(0).span, acked=False)

    def acked(self, position: int, each: Sequence[int] = ()) -> None:
        """An ack: cumulative up to `position`, or of the positions `each` (per-event acks)."""
        still: list[_Open] = []
        for item in self._open:
            if each:
                item.pending.difference_update(each)
            else:
                item.pending = {p for p in item.pending if p > position}
            if item.pending:
                still.append(item)
            else:
                _end(item.span, acked=True)
        self._open = still

    def close(self) -> None:
        """The subscription stopped: the spans still open end, unacked."""
        items, self._open = self._open, []
        for item in items:
            _end(item.span, acked=False)


def _end(span: trace.Span, *, acked: bool) -> None:
    span.set_attribute("eventstore.acked", acked)
    span.end()
