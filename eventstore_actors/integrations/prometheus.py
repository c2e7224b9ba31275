"""Export `store.metrics()` to Prometheus (the optional extra `eventstore-actors[metrics]`).

    from eventstore_actors import prometheus
    prometheus.register(store)            # prometheus_client's default registry
    prometheus_client.start_http_server(9100)

A custom collector reads `store.metrics()` at scrape time only, so the export costs nothing
on the append path. Names get the prefix `eventstore_` and every sample the label
`schema`; counters keep `_total`; the latency and batch-size summaries are Prometheus
summaries (`_count`, `_sum` and `quantile` 0.5/0.95/0.99 samples) with a `_max` gauge.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

try:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry
except ImportError as exc:  # pragma: no cover - exercised by the test in a subprocess
    raise ImportError(
        "eventstore_actors.prometheus needs prometheus_client: "
        "pip install prometheus_client (from a checkout: pip install '.[metrics]')"
    ) from exc

from ..metrics import DESCRIPTIONS, SUMMARIES, parse_key

if TYPE_CHECKING:
    from ..aio.store import AsyncEventStore
    from ..store import EventStore

__all__ = ["StoreCollector", "register"]

_QUANTILES = {"p50": "0.5", "p95": "0.95", "p99": "0.99"}


class StoreCollector(Collector):
    """A Prometheus collector reading one store's `metrics()` at each scrape."""

    def __init__(
        self,
        store: EventStore | AsyncEventStore,
        *,
        prefix: str = "eventstore_",
        labels: Mapping[str, str] | None = None,
    ) -> None:
        from ..aio.store import AsyncEventStore

        sync = store.sync if isinstance(store, AsyncEventStore) else store
        self._read = sync.metrics
        self._prefix = prefix
        self._labels = {"schema": sync.settings.schema, **(labels or {})}

    def describe(self) -> list[Metric]:
        """The families, so that a registry refuses a second collector of the same names."""
        return list(self.collect())

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}

        def family(name: str, typ: str, doc: str) -> Metric:
            found = families.get(name)
            if found is None:
                found = families[name] = Metric(name, doc, typ)
            return found

        for key, value in self._read().items():
            name, labels = parse_key(key)
            labels = {**self._labels, **labels}
            summary, _, part = name.rpartition("_")
            if summary in SUMMARIES and part in ("count", "sum", "max", "p50", "p95", "p99"):
                full = self._prefix + summary
                if part == "max":
                    doc = f"largest value in the window: {SUMMARIES[summary]}"
                    family(full + "_max", "gauge", doc).add_sample(full + "_max", labels, value)
                    continue
                target = family(full, "summary", SUMMARIES[summary])
                if part in _QUANTILES:
                    target.add_sample(full, {**labels, "quantile": _QUANTILES[part]}, value)
                else:
                    target.add_sample(f"{full}_{part}", labels, value)
            elif name.endswith("_total"):
                full = self._prefix + name[: -len("_total")]
                doc = DESCRIPTIONS.get(name, name)
                family(full, "counter", doc).add_sample(full + "_total", labels, value)
            else:
                full = self._prefix + name
                family(full, "gauge", DESCRIPTIONS.get(name, name)).add_sample(full, labels, value)
        yield from families.values()


def register(
    store: EventStore | AsyncEventStore,
    registry: CollectorRegistry | None = None,
    *,
    prefix: str = "eventstore_",
    labels: Mapping[str, str] | None = None,
) -> StoreCollector:
    """Register a collector of `store`'s metrics with `registry` (default: prometheus_client's
    global REGISTRY) and return it (`registry.unregister(collector)` removes it). Two stores
    on one registry need different `prefix`es: their names would collide (ValueError)."""
    collector = StoreCollector(store, prefix=prefix, labels=labels)
    (registry if registry is not None else REGISTRY).register(collector)
    return collector
