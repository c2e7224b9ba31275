"""Trace propagation with OpenTelemetry (the `otel` extra): `extract(event)` gives the context
of the span that appended an event. Appends and deliveries are traced by the store itself
whenever a tracer provider is configured; see `integrations.otel` and docs/tracing.md."""

from __future__ import annotations

from .integrations.otel import TRACE_KEYS, extract

__all__ = ["TRACE_KEYS", "extract"]
