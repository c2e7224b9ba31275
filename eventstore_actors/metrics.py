"""Per-store counters and latency summaries, cheap enough for the append path.

One `Metrics` per store, shared by its actors through the store's `Registry`. Nothing grows
with traffic: counters are ints, and each summary is a fixed array of log-spaced buckets (8
per power of two, so a percentile is within about 6 % of the true value; small integer sizes
up to 16 are exact).

The writer's group commits are the hot path: right after a database round trip the CPU's
caches are cold, and summing into three summaries there cost about 13 µs per commit
(measured), 2 % of an uncontended single-event append. So a commit only appends one tuple to
a list owned by the writer thread, which folds the list into the summaries every
`_FOLD_EVERY` commits, in a warm loop. `snapshot()` merges what is not folded yet into copies,
so `metrics()` is exact at any moment. Deliveries (many subscription threads) and rare events
(restarts, reconnects) take the lock directly.

Percentiles and maxima cover a sliding window (the last one to two `window` periods, 60 s by
default), so they show the present rather than the whole life of the process; counts and
sums are cumulative, as Prometheus expects.

`snapshot()` flattens everything into the dict `store.metrics()` returns. Keys follow the
Prometheus text format: `name` or `name{label="value",...}` (values escaped as Prometheus
does); `parse_key` reverses it. Summaries appear as `<name>_count`, `_sum`, `_max`, `_p50`,
`_p95` and `_p99`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping

__all__ = ["DESCRIPTIONS", "SUMMARIES", "Metrics", "Summary", "metric_key", "parse_key"]

#: Buckets per power of two.
_SUB = 8
#: Commits the writer buffers before folding them into the summaries.
_FOLD_EVERY = 64
#: Percentiles reported for each summary, as key suffixes.
_QUANTILES = ((50, "p50"), (95, "p95"), (99, "p99"))

#: Every counter and gauge by name, and what it counts (the Prometheus help text).
DESCRIPTIONS: dict[str, str] = {
    "uptime_seconds": "seconds since the store started",
    "appends_total": "append calls decided by the writer (committed or refused)",
    "append_errors_total": "append calls refused or failed, by error class",
    "events_written_total": "events committed by this store instance",
    "commits_total": "group commits: writer transactions that wrote events, each for one or "
    "more append calls",
    "deliveries_total": "batches told to durable subscribers",
    "events_delivered_total": "events told to durable subscribers",
    "pool_calls_total": "calls run on the read pool (reads, subscription info, snapshots...)",
    "restarts_total": "actors restarted by the supervisor after a failure, by child kind",
    "gave_up_total": "children the supervisor gave up on (restart intensity exceeded)",
    "reconnects_total": "connections re-established after a loss, by connection",
    "subscriptions_running": "subscription actors running in this store instance",
    "subscription_lag": "head position minus stored checkpoint, per durable subscription",
    "subscription_lag_seconds": "age in seconds of the oldest event not yet acked (0: none), "
    "per durable subscription",
    "subscription_stalled": "1 while the durable subscription is stalled (events delivered and "
    "not acked for stall_after seconds), else 0",
    "subscription_stalls_total": "stalls found by this store instance (each also logged once "
    "as a WARNING)",
    "subscriptions_stalled": "durable subscriptions stalled now (any process)",
    "subscriptions_stopped": "durable subscriptions stopped on an error and not held (any process)",
    "subscription_lag_error": "1 when the last metrics() could not read the subscription lags",
    "replica_reads_total": "reads served by the standby (replica_dsn)",
    "replica_primary_reads_total": "reads with replica_dsn served by the primary instead "
    "(the standby lagged or was down)",
}

#: Each summary's name and what it measures (docs/scale-out.md and the Prometheus help text).
SUMMARIES: dict[str, str] = {
    "commit_batch_requests": "append calls committed together in one group commit",
    "commit_batch_events": "events written by one group commit",
    "commit_latency_seconds": "seconds from an append call reaching the writer's queue "
    "to its transaction being decided",
    "delivery_latency_seconds": "seconds from commit (or, for another process's commit, "
    "from its publication here) to the subscriber's tell()",
}


class Summary:
    """Count, sum, and log-bucketed percentiles and maximum over a sliding window.

    Not thread-safe by itself: `Metrics` holds its lock around every call.
    """

    __slots__ = (
        "_cur",
        "_integer",
        "_max_cur",
        "_max_prev",
        "_min_exp",
        "_n",
        "_prev",
        "_started",
        "_window",
        "count",
        "total",
    )

    def __init__(self, min_exp: int, max_exp: int, *, integer: bool, window: float) -> None:
        # Bucket i holds values in [lower(i), lower(i + 1)); values below 2**(min_exp - 1)
        # land in bucket 0 and those above 2**max_exp in the last one.
        self._min_exp = min_exp
        self._n = (max_exp - min_exp + 1) * _SUB
        self._integer = integer
        self._window = window
        self._cur = [0] * self._n
        self._prev = [0] * self._n
        self._max_cur = 0.0
        self._max_prev = 0.0
        self._started = time.perf_counter()
        self.count = 0
        self.total = 0.0

    def add(self, value: float, now: float) -> None:
        if now - self._started >= self._window:
            self._rotate(now)
        self.count += 1
        self.total += value
        if value > self._max_cur:
            self._max_cur = value
        if value > 0:
            mantissa, exp = math.frexp(value)  # value = mantissa * 2**exp, 0.5 <= mantissa < 1
            i = (exp - self._min_exp) * _SUB + int((mantissa - 0.5) * (2 * _SUB))
            self._cur[0 if i < 0 else (i if i < self._n else self._n - 1)] += 1
        else:
            self._cur[0] += 1

    def copy(self) -> Summary:
        twin = Summary.__new__(Summary)
        for name in Summary.__slots__:
            setattr(twin, name, getattr(self, name))
        twin._cur, twin._prev = list(self._cur), list(self._prev)
        return twin

    def _rotate(self, now: float) -> None:
        if now - self._started >= 2 * self._window:  # idle for a whole window: all stale
            self._prev = [0] * self._n
            self._max_prev = 0.0
        else:
            self._prev = self._cur
            self._max_prev = self._max_cur
        self._cur = [0] * self._n
        self._max_cur = 0.0
        self._started = now

    def _lower(self, i: int) -> float:
        exp, sub = divmod(i, _SUB)
        return math.ldexp(0.5 + sub / (2 * _SUB), exp + self._min_exp)

    def snapshot(self, name: str, now: float, out: dict[str, float]) -> None:
        if now - self._started >= self._window:
            self._rotate(now)
        out[f"{name}_count"] = float(self.count)
        out[f"{name}_sum"] = self.total
        top = max(self._max_cur, self._max_prev)
        out[f"{name}_max"] = float(top)
        buckets = [a + b for a, b in zip(self._cur, self._prev, strict=True)]
        seen = sum(buckets)
        for q, suffix in _QUANTILES:
            out[f"{name}_{suffix}"] = self._percentile(buckets, seen, q, top)

    def _percentile(self, buckets: list[int], seen: int, q: int, top: float) -> float:
        if seen == 0:
            return 0.0
        rank = max(1, math.ceil(seen * q / 100))
        running = 0
        for i, n in enumerate(buckets):
            running += n
            if running >= rank:
                value: float
                if self._integer:
                    value = math.ceil(self._lower(i))
                else:  # the middle of the bucket
                    value = self._lower(i) * (1 + 1 / (4 * _SUB * (0.5 + (i % _SUB) / (2 * _SUB))))
                return float(min(value, top))
        return top


class Metrics:
    """A store's metrics; `enabled=False` records nothing and `snapshot()` is empty.

    Clocks are `time.perf_counter()` seconds throughout.
    """

    def __init__(self, enabled: bool = True, *, window: float = 60.0) -> None:
        self.enabled = enabled
        self._lock = threading.Lock()
        self._born = time.perf_counter()
        self.appends = 0
        self.events = 0
        self.commits = 0
        self.deliveries = 0
        self.delivered_events = 0
        self.pool_calls = 0
        #: Labelled counters: metric_key(...) -> count.
        self._counters: dict[str, int] = {}
        #: Group commits not folded yet (appended under the writer's leader lock only).
        self._commits: list[_Commit] = []
        self.batch_requests = Summary(1, 24, integer=True, window=window)
        self.batch_events = Summary(1, 24, integer=True, window=window)
        # 2**-20 s (about 1 µs) to 2**8 s.
        self.commit_latency = Summary(-19, 8, integer=False, window=window)
        self.delivery_latency = Summary(-19, 8, integer=False, window=window)

    # Recording (each a no-op when disabled) ---------------------------------------------------
    def committed(
        self,
        requests: int,
        events: int,
        started: list[float],
        errors: list[str] | None = None,
    ) -> None:
        """One group commit decided `requests` appends (asked at the perf_counter times
        `started`), writing `events` events; `errors`: the class names of refused ones.
        Called by one thread at a time: whoever holds the writer's leader lock."""
        if self.enabled:
            pending = self._commits
            pending.append((requests, events, time.perf_counter(), started, errors))
            if len(pending) >= _FOLD_EVERY:
                with self._lock:
                    self._fold(pending, self)
                    self._commits = []

    def _fold(self, pending: list[_Commit], into: Metrics | _Totals) -> None:
        """Add buffered commits to `into` (this object, or a snapshot's copies)."""
        batch_requests, batch_events = into.batch_requests, into.batch_events
        latency = into.commit_latency
        for requests, events, now, started, errors in pending:
            into.appends += requests
            into.events += events
            if events:  # a batch that wrote nothing (all refused, or retries) committed nothing
                into.commits += 1
                batch_requests.add(requests, now)
                batch_events.add(events, now)
            for at in started:
                latency.add(now - at, now)
            if errors:
                for error in errors:
                    key = metric_key("append_errors_total", error=error)
                    into.counters[key] = into.counters.get(key, 0) + 1

    @property
    def counters(self) -> dict[str, int]:
        return self._counters

    def failed(self, requests: int, error: str) -> None:
        """`requests` appends failed before reaching the database (no connection)."""
        if not self.enabled:
            return
        with self._lock:
            self.appends += requests
            self._bump(metric_key("append_errors_total", error=error), requests)

    def delivered(self, events: int, since: float | None) -> None:
        """A batch of `events` is told to a subscriber; `since`: perf_counter time at which
        the oldest event it was waiting to deliver was committed or published (None: none
        was, it came from a catch-up read)."""
        if not self.enabled:
            return
        now = time.perf_counter()
        with self._lock:
            self.deliveries += 1
            self.delivered_events += events
            if since is not None:
                self.delivery_latency.add(now - since, now)

    def pool_call(self) -> None:
        if self.enabled:
            with self._lock:
                self.pool_calls += 1

    def count(self, name: str, amount: int = 1, /, **labels: str) -> None:
        """Add to a labelled counter (restarts, reconnects, ...): for rare events."""
        if self.enabled:
            key = metric_key(name, **labels)
            with self._lock:
                self._bump(key, amount)

    def _bump(self, key: str, amount: int = 1) -> None:
        self._counters[key] = self._counters.get(key, 0) + amount

    # Reading ----------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, float]:
        """Every metric recorded so far, as flat keys (see the module docstring)."""
        if not self.enabled:
            return {}
        now = time.perf_counter()
        with self._lock:
            # The writer folds and resets its list under this lock and only appends outside
            # it (one thread at a time): a copy of the list now holds the commits not folded.
            totals = _Totals(self)
            pending = list(self._commits)
            delivery = self.delivery_latency.copy()
        self._fold(pending, totals)
        out: dict[str, float] = {
            "uptime_seconds": now - self._born,
            "appends_total": float(totals.appends),
            "events_written_total": float(totals.events),
            "commits_total": float(totals.commits),
            "deliveries_total": float(totals.deliveries),
            "events_delivered_total": float(totals.delivered_events),
            "pool_calls_total": float(totals.pool_calls),
        }
        for key, value in totals.counters.items():
            out[key] = float(value)
        totals.batch_requests.snapshot("commit_batch_requests", now, out)
        totals.batch_events.snapshot("commit_batch_events", now, out)
        totals.commit_latency.snapshot("commit_latency_seconds", now, out)
        delivery.snapshot("delivery_latency_seconds", now, out)
        # Counters that did not happen yet are still shown, so dashboards find them.
        for name, labels in _ALWAYS:
            out.setdefault(metric_key(name, **labels), 0.0)
        return out


#: A buffered group commit: (requests, events, perf_counter time, started times, errors).
_Commit = tuple[int, int, float, list[float], "list[str] | None"]


class _Totals:
    """Copies of a Metrics' figures (taken under its lock), to fold pending commits into."""

    def __init__(self, metrics: Metrics) -> None:
        self.appends = metrics.appends
        self.events = metrics.events
        self.commits = metrics.commits
        self.deliveries = metrics.deliveries
        self.delivered_events = metrics.delivered_events
        self.pool_calls = metrics.pool_calls
        self.counters = dict(metrics.counters)
        self.batch_requests = metrics.batch_requests.copy()
        self.batch_events = metrics.batch_events.copy()
        self.commit_latency = metrics.commit_latency.copy()


#: Labelled counters listed at 0 before they first happen.
_ALWAYS: tuple[tuple[str, Mapping[str, str]], ...] = (
    ("restarts_total", {"child": "writer"}),
    ("restarts_total", {"child": "publisher"}),
    ("restarts_total", {"child": "subscription"}),
    ("reconnects_total", {"connection": "writer"}),
    ("reconnects_total", {"connection": "listener"}),
    ("reconnects_total", {"connection": "publisher"}),
    ("reconnects_total", {"connection": "subscription"}),
    ("reconnects_total", {"connection": "pool"}),
    ("subscription_stalls_total", {}),
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metric_key(name: str, /, **labels: str) -> str:
    """`name{a="x",b="y"}` (labels in the given order), or `name` without labels."""
    if not labels:
        return name
    inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
    return f"{name}{{{inner}}}"


def parse_key(key: str) -> tuple[str, dict[str, str]]:
    """The name and labels of a key made by `metric_key`."""
    brace = key.find("{")
    if brace < 0:
        return key, {}
    if not key.endswith("}"):
        raise ValueError(f"not a metric key: {key!r}")
    name, body, labels = key[:brace], key[brace + 1 : -1], {}
    i = 0
    while i < len(body):
        eq = body.index("=", i)
        label = body[i:eq]
        if body[eq + 1] != '"':
            raise ValueError(f"not a metric key: {key!r}")
        j, chars = eq + 2, []
        while body[j] != '"':
            if body[j] == "\\":
                j += 1
                chars.append("\n" if body[j] == "n" else body[j])
            else:
                chars.append(body[j])
            j += 1
        labels[label] = "".join(chars)
        i = j + 1
        if i < len(body):
            if body[i] != ",":
                raise ValueError(f"not a metric key: {key!r}")
            i += 1
    return name, labels
