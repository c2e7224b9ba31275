"""The store's hooks for trace propagation, free when tracing is not in use.

OpenTelemetry is never imported here: only once the application has imported
`opentelemetry.trace` itself (it must, to configure a tracer provider) is the integration
(`integrations.otel`) loaded, and it acts only while a provider is configured. Without that,
each hook costs a dictionary look-up.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .subscriptions.naming import parse_row_name

if TYPE_CHECKING:
    from .integrations.otel import AppendSpan
    from .integrations.otel import Deliveries as _OpenDeliveries
    from .serialization import Serializer

__all__ = ["TRACE_KEYS", "Deliveries", "append_span", "same_metadata"]

#: The metadata keys that carry the W3C trace context (`integrations.otel` writes them).
TRACE_KEYS = ("traceparent", "tracestate")


_loaded: ModuleType | None = None  # integrations.otel, once imported


def _otel() -> ModuleType | None:
    """The OpenTelemetry integration when a tracer provider is configured, else None."""
    global _loaded
    if "opentelemetry.trace" not in sys.modules:
        return None
    otel = _loaded
    if otel is None:
        from .integrations import otel as module

        otel = _loaded = module
    return otel if otel.configured() else None


def append_span() -> AppendSpan | None:
    """The span for one append call (to enter around it), None when not tracing."""
    otel = _otel()
    return None if otel is None else otel.AppendSpan()  # type: ignore[no-any-return]


def same_metadata(serializer: Serializer) -> Callable[[bytes | None, bytes | None], bool]:
    """For idempotent retries: whether stored metadata is the metadata sent in all but the
    trace context. Each attempt of an append runs in a span of its own, so a retry carries
    another `traceparent` than the copy stored by the first attempt: the trace keys are the
    attempt's, not the event's, and are not compared (a mapping left empty without them is
    the same as no metadata). Only asked when the bytes differ."""

    def untraced(raw: bytes | None) -> Any:
        if raw is None:
            return None
        value = serializer.deserialize(raw)
        if not isinstance(value, Mapping):
            return value
        rest = {k: v for k, v in value.items() if k not in TRACE_KEYS}
        return rest or None

    def same(stored: bytes | None, sent: bytes | None) -> bool:
        try:
            return bool(untraced(stored) == untraced(sent))
        except Exception:  # not what this serializer reads: the bytes decide (they differ)
            return False

    return same


class Deliveries:
    """A subscription actor's delivered batches, as spans when tracing (see
    `integrations.otel.Deliveries`); the actor calls `delivered` before telling a batch,
    `acked` and `nacked` on each ack and nack from its subscribers and `close` when it
    stops."""

    __slots__ = ("_name", "_open", "_partition", "_position")

    def __init__(self, name: str, all_streams: bool) -> None:
        # `name` is the subscription's row name: a consumer group's partition (its row named
        # after the group with a suffix, see subscriptions/naming.py) is traced under the
        # group's name, its partition number apart.
        group = parse_row_name(name)
        self._name = name if group is None else group[0]
        self._partition = None if group is None else group[1]
        self._open: _OpenDeliveries | None = None
        # What an ack of an event says: its event_id in $all, else its event_number.
        self._position: Callable[[Any], int] = _event_id if all_streams else _event_number

    def delivered(self, events: Sequence[Any]) -> None:
        """`events` are about to be told to a subscriber (one batch)."""
        otel = _otel()
        if otel is None:
            return
        if self._open is None:
            self._open = otel.Deliveries(self._name, self._partition)
        self._open.delivered(events, self._position)

    def acked(self, position: int, each: Sequence[int] = ()) -> None:
        """An ack told: cumulative up to `position`, or per event (`each`)."""
        if self._open is not None:
            self._open.acked(position, each)

    def nacked(self, position: int) -> None:
        """A nack told: that event is settled for the batch that held it (a retry is a
        delivery of its own)."""
        if self._open is not None:
            self._open.acked(position, (position,))

    def close(self) -> None:
        """The actor stops: the open spans end (unacked)."""
        if self._open is not None:
            self._open.close()


def _event_id(event: Any) -> int:
    return int(event.event_id)


def _event_number(event: Any) -> int:
    return int(event.event_number)
