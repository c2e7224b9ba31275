"""How much work each workload does: the full suite, a quick run, and a smoke run for tests."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

__all__ = ["PRESETS", "Sizes"]


@dataclass(frozen=True)
class Sizes:
    #: writers -> rounds; each round, every writer appends 100 events to a new stream.
    append_rounds: dict[int, int]
    #: readers -> rounds; each round, every reader reads a whole 100-event stream.
    read_rounds: dict[int, int]
    #: writers -> single-event appends per writer.
    single_appends: dict[int, int]
    #: events stored for "read all" (100,000 in the issue).
    read_all_events: int
    #: delivery latency samples per side and per setting.
    latency_samples: int
    #: events replayed by the catch-up subscription (100,000 in the issue).
    catchup_events: int
    #: events stored for the growth comparison: small vs large (10k vs 1M in the issue).
    growth_small: int
    growth_large: int
    #: timed operations per side at each growth size (100-event appends, 100-event reads).
    growth_ops: int
    #: writers -> single-event ANY_VERSION appends per writer, all to one stream.
    any_appends: dict[int, int] = field(default_factory=lambda: {10: 20})
    #: writers -> append_to_streams calls per writer (one event to each of two streams).
    multi_appends: dict[int, int] = field(default_factory=lambda: {1: 20, 10: 4})
    #: Throughput workloads run this many times per side, alternating; the best time counts.
    repeats: int = 1
    #: writers -> single-event appends per writer and round, for metrics on vs off.
    metrics_appends: dict[int, int] = field(default_factory=lambda: {1: 10, 50: 2})
    #: Rounds of raw / metrics off / metrics on (a 2 % difference needs many).
    metrics_repeats: int = 1
    #: Live subscriptions on one store for the connection budget (200 in the issue).
    budget_subscriptions: int = 200
    #: Events of the stream the scavenger workload hides slice by slice (all rounds share it).
    scavenger_hidden: int = 10_000
    #: writers -> single-event appends per writer and side, alone and while scavenging.
    scavenger_appends: dict[int, int] = field(default_factory=lambda: {10: 3})
    #: Pairs of windows (alone, while scavenging), per writer count.
    scavenger_repeats: int = 1

    def with_repeats(self, repeats: int) -> Sizes:
        return replace(self, repeats=repeats, metrics_repeats=max(repeats, self.metrics_repeats))

    def with_growth_large(self, events: int) -> Sizes:
        return replace(self, growth_large=max(events, self.growth_small + 1))

    def to_json(self) -> dict[str, Any]:
        return {
            k: ({str(n): v for n, v in x.items()} if isinstance(x, dict) else x)
            for k, x in asdict(self).items()
        }


PRESETS: dict[str, Sizes] = {
    "full": Sizes(
        append_rounds={1: 150, 10: 25, 100: 3},
        read_rounds={1: 500, 10: 100, 100: 10},
        single_appends={1: 1500, 50: 60},
        read_all_events=100_000,
        latency_samples=1000,
        catchup_events=100_000,
        growth_small=10_000,
        growth_large=1_000_000,
        growth_ops=50,
        any_appends={10: 150},
        multi_appends={1: 1000, 10: 100},
        repeats=3,
        metrics_appends={1: 100, 50: 20},
        metrics_repeats=20,
        scavenger_hidden=900_000,
        scavenger_appends={1: 1000, 10: 300},
        scavenger_repeats=25,
    ),
    "quick": Sizes(
        append_rounds={1: 40, 10: 8, 100: 1},
        read_rounds={1: 300, 10: 40, 100: 4},
        single_appends={1: 400, 50: 20},
        read_all_events=20_000,
        latency_samples=150,
        catchup_events=20_000,
        growth_small=5_000,
        growth_large=100_000,
        growth_ops=30,
        any_appends={10: 40},
        multi_appends={1: 300, 10: 30},
        metrics_appends={1: 50, 50: 10},
        metrics_repeats=10,
        scavenger_hidden=300_000,
        scavenger_appends={1: 200, 10: 80},
        scavenger_repeats=10,
    ),
    "smoke": Sizes(
        append_rounds={1: 3, 10: 1, 100: 1},
        read_rounds={1: 5, 10: 1, 100: 1},
        single_appends={1: 10, 50: 2},
        read_all_events=1_500,
        latency_samples=5,
        catchup_events=1_500,
        growth_small=500,
        growth_large=2_000,
        growth_ops=3,
        any_appends={10: 2},
        multi_appends={1: 5, 10: 1},
        budget_subscriptions=10,
    ),
}
