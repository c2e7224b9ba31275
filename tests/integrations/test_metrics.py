"""store.metrics() and the Prometheus export, against real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from eventstore_actors import (
    ConfigError,
    EventData,
    EventStore,
    StreamAppend,
    WrongExpectedVersionError,
)
from eventstore_actors.actors.supervised import Crash
from eventstore_actors.aio import AsyncEventStore
from eventstore_actors.metrics import Metrics, Summary, metric_key, parse_key
from eventstore_actors.subscriptions.messages import Events

MakeStore = Callable[..., EventStore]


def _wait(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _events(n: int) -> list[EventData]:
    return [EventData({"n": i}, "Numbered") for i in range(n)]


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    def tell(self, message: Any) -> None:
        self.messages.append(message)

    def events(self) -> list[Any]:
        return [e for m in self.messages if isinstance(m, Events) for e in m.events]


def test_counts_after_known_appends(store: EventStore) -> None:
    store.append_to_stream("a", 0, _events(1))
    store.append_to_stream("a", 1, _events(1))
    store.append_to_stream("b", 0, _events(5))
    store.append_to_streams([StreamAppend("c", 0, _events(1)), StreamAppend("d", 0, _events(1))])
    with pytest.raises(WrongExpectedVersionError):
        store.append_to_stream("a", 0, _events(1))
    store.read_stream_forward("a")

    m = store.metrics()
    assert m["appends_total"] == 5
    assert m["events_written_total"] == 9
    assert m['append_errors_total{error="WrongExpectedVersionError"}'] == 1
    assert m["commits_total"] == 4  # one at a time; the refused one committed nothing
    assert m["commit_batch_requests_count"] == 4
    assert m["commit_batch_requests_sum"] == 4
    assert m["commit_batch_requests_max"] == 1
    assert m["commit_batch_events_sum"] == 9
    assert m["commit_batch_events_max"] == 5
    assert m["commit_latency_seconds_count"] == 5
    assert 0 < m["commit_latency_seconds_p50"] <= m["commit_latency_seconds_p95"]
    assert m["commit_latency_seconds_p95"] <= m["commit_latency_seconds_p99"]
    assert m["commit_latency_seconds_p99"] <= m["commit_latency_seconds_max"] < 10
    assert m["pool_calls_total"] >= 1
    assert m['restarts_total{child="writer"}'] == 0
    assert m['reconnects_total{connection="writer"}'] == 0
    assert m["subscriptions_running"] == 0
    assert all(isinstance(v, float) for v in m.values())


def _transactions_that_wrote_events(dsn: str, schema: str) -> int:
    """How many transactions wrote the schema's events (each row's xmin names its writer)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(f"SELECT count(DISTINCT xmin::text) FROM {schema}.events").fetchone()
    return int(row[0]) if row else 0


def test_commits_total_counts_only_batches_that_wrote_events(
    store: EventStore, dsn: str, schema: str
) -> None:
    """Issue 17 item 12f: a writer batch that wrote nothing (every append in it refused, or an
    idempotent retry) is not a group commit: commits_total and the batch summaries count the
    transactions that wrote events, while appends_total, the errors and the latencies count
    every append the writer decided."""
    given = [EventData({"n": 1}, "Numbered", event_uuid=uuid.uuid4())]
    store.append_to_stream("a", 0, given)
    store.append_to_stream("a", 0, given)  # an idempotent retry: writes nothing
    with pytest.raises(WrongExpectedVersionError):
        store.append_to_stream("a", 0, _events(1))  # refused, alone in its batch
    store.append_to_stream("b", 0, _events(3))
    errors: list[BaseException] = []

    def append(i: int) -> None:
        version = 0
        for k in range(10):
            try:  # every other one refused: the stream is not new
                store.append_to_stream(f"c{i}", 0 if k % 2 else version, _events(1))
                version += 1
            except WrongExpectedVersionError:
                assert k % 2
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=append, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    m = store.metrics()
    assert m["commits_total"] == _transactions_that_wrote_events(dsn, schema)
    assert m["commit_batch_requests_count"] == m["commits_total"]
    assert m["commit_latency_seconds_count"] == m["appends_total"]
    assert m["events_written_total"] == 1 + 3 + 6 * 5


def test_batch_sizes_under_concurrent_appends(make_store: MakeStore, dsn: str, schema: str) -> None:
    """While another session holds the append lock, one append blocks the writer and the
    others queue up behind it; once the lock is released they commit as one group."""
    app = f"es-met-{uuid.uuid4().hex[:8]}"
    store = make_store(application_name=app)
    store.append_to_stream("warm", 0, _events(1))
    writers = 8
    writer = store._registry.peek("writer")
    assert writer is not None
    errors: list[BaseException] = []

    def append(i: int) -> None:
        try:
            store.append_to_stream(f"s{i}", 0, _events(2))
        except BaseException as exc:
            errors.append(exc)

    def writer_waits_for_the_lock(conn: psycopg.Connection[Any]) -> bool:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = %s AND wait_event_type = 'Lock'",
            (app,),
        ).fetchone()
        return row is not None and row[0] == 1

    threads = [threading.Thread(target=append, args=(i,)) for i in range(writers)]
    with psycopg.connect(dsn, autocommit=True) as blocker, psycopg.connect(dsn) as probe:
        probe.autocommit = True
        blocker.execute(f"SET search_path = {schema}")
        with blocker.transaction():
            blocker.execute("SELECT 1 FROM event_counter WHERE id = 1 FOR UPDATE")
            threads[0].start()
            _wait(lambda: writer_waits_for_the_lock(probe))
            for thread in threads[1:]:
                thread.start()
            # Queued behind it: the first the actor took waits for the leading commit.
            actor = store._runtime.leader.writer
            _wait(lambda: writer.actor_inbox.qsize() + len(actor._pending) == writers - 1)
        for thread in threads:
            thread.join(timeout=30)
    assert not errors

    m = store.metrics()
    assert m["appends_total"] == writers + 1
    assert m["events_written_total"] == 2 * writers + 1
    assert m["commits_total"] == 3  # warm-up, the blocked append, then all the others
    assert m["commit_batch_requests_sum"] == writers + 1
    assert m["commit_batch_requests_max"] == writers - 1
    assert m["commit_batch_events_max"] == 2 * (writers - 1)
    assert m["commit_batch_requests_p50"] == 1  # two of the three commits held one append
    assert m["commit_latency_seconds_count"] == writers + 1
    assert m["commit_latency_seconds_max"] >= m["commit_latency_seconds_p50"] > 0


def test_subscription_lag_goes_to_zero_after_acks(store: EventStore) -> None:
    inbox = Inbox()
    sub = store.subscribe_to_all_streams("lagging", inbox)
    store.append_to_stream("s", 0, _events(4))
    store.append_to_stream("t", 0, _events(1))
    key = 'subscription_lag{stream="$all",name="lagging"}'
    assert store.metrics()[key] == 5  # nothing acked yet
    _wait(lambda: len(inbox.events()) == 4)
    sub.ack(inbox.events()[-1])
    _wait(lambda: len(inbox.events()) == 5)
    sub.ack(inbox.events()[-1])
    _wait(lambda: store.metrics()[key] == 0)

    m = store.metrics()
    assert m["subscription_lag_error"] == 0
    assert m["subscriptions_running"] == 1
    assert m["deliveries_total"] == 2
    assert m["events_delivered_total"] == 5
    # Both batches came from the publisher (live), so each has a delivery latency.
    assert m["delivery_latency_seconds_count"] >= 1
    assert 0 < m["delivery_latency_seconds_p99"] <= m["delivery_latency_seconds_max"] < 10


def test_stream_subscription_lag_uses_stream_positions(store: EventStore) -> None:
    inbox = Inbox()
    store.append_to_stream("other", 0, _events(3))
    sub = store.subscribe_to_stream("mine", "proj", inbox)
    store.append_to_stream("mine", 0, _events(2))
    key = 'subscription_lag{stream="mine",name="proj"}'
    _wait(lambda: len(inbox.events()) == 2)
    assert store.metrics()[key] == 2
    sub.ack(inbox.events()[-1])
    _wait(lambda: store.metrics()[key] == 0)


def test_consumer_group_lag_is_per_partition(store: EventStore) -> None:
    inbox = Inbox()
    sub = store.subscribe_to_all_streams("grp", inbox, partitions=2)
    for i in range(6):
        store.append_to_stream(f"s{i}", 0, _events(1))
    keys = [f'subscription_lag{{stream="$all",name="grp",partition="{p}"}}' for p in (0, 1)]

    def lags() -> list[float]:
        m = store.metrics()
        return [m[k] for k in keys if k in m]

    _wait(lambda: len(lags()) == 2)
    assert sum(lags()) > 0  # nothing acked yet

    def ack_all() -> bool:  # one batch (one stream) in flight per partition
        for event in inbox.events():
            sub.ack(event)
        return len(inbox.events()) == 6

    _wait(ack_all)
    _wait(lambda: lags() == [0.0, 0.0])


def test_restart_counted_after_a_killed_subscription_actor(store: EventStore) -> None:
    inbox = Inbox()
    store.subscribe_to_all_streams("crashy", inbox)
    child_id = "subscription:" + json.dumps(["$all", "crashy"])
    first = store._registry.peek(child_id)
    assert first is not None
    first.tell(Crash(RuntimeError("injected bug")))
    key = 'restarts_total{child="subscription"}'
    _wait(lambda: store.metrics()[key] == 1)
    _wait(lambda: store._registry.peek(child_id) not in (None, first))
    m = store.metrics()
    assert m['restarts_total{child="writer"}'] == 0
    assert m["subscriptions_running"] == 1
    # The restarted subscription still works.
    store.append_to_stream("s", 0, _events(1))
    _wait(lambda: len(inbox.events()) >= 1)


def test_reconnect_counted_after_the_writer_backend_is_terminated(
    make_store: MakeStore, dsn: str
) -> None:
    app = f"es-met-{uuid.uuid4().hex[:8]}"
    store = make_store(application_name=app)
    inbox = Inbox()
    store.subscribe_to_all_streams("watcher", inbox)
    store.append_to_stream("s", 0, _events(1))
    writer = store._registry.peek("writer")
    with psycopg.connect(dsn, autocommit=True) as conn:
        pids = [
            int(r[0])
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app,)
            )
        ]
        assert pids
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        _wait(
            lambda: (
                conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)
                ).fetchone()
                == (0,)
            )
        )
    # Behind PgBouncer the writer's connection is PgBouncer's, which replaced the terminated
    # server backends unseen: its own connection is broken there instead.
    from support.pgbouncer import drop_suite_clients

    drop_suite_clients(str(psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]))
    store.append_to_stream("s", 1, _events(1))  # the dead idle connection is replaced
    m = store.metrics()
    assert m['reconnects_total{connection="writer"}'] == 1
    assert m['restarts_total{child="writer"}'] == 0  # a reconnect, not a restart
    assert store._registry.peek("writer") is writer
    _wait(lambda: store.metrics()['reconnects_total{connection="listener"}'] >= 1)
    _wait(lambda: store.metrics()['reconnects_total{connection="subscription"}'] >= 1)


def test_prometheus_text_output_contains_the_metrics(store: EventStore, schema: str) -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from eventstore_actors import prometheus

    registry = CollectorRegistry()
    collector = prometheus.register(store, registry, labels={"service": "orders"})
    inbox = Inbox()
    store.subscribe_to_all_streams('we"ird\\name', inbox)
    store.append_to_stream("s", 0, _events(3))
    _wait(lambda: len(inbox.events()) == 3)

    text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}  # it parses back
    assert families["eventstore_appends"].type == "counter"
    (sample,) = families["eventstore_appends"].samples
    assert sample.name == "eventstore_appends_total"
    assert sample.labels == {"schema": schema, "service": "orders"}
    assert sample.value == 1
    assert families["eventstore_events_written"].samples[0].value == 3
    latency = families["eventstore_commit_latency_seconds"]
    assert latency.type == "summary"
    quantiles = {s.labels.get("quantile") for s in latency.samples}
    assert {"0.5", "0.95", "0.99"} <= quantiles
    assert "eventstore_commit_latency_seconds_max" in families
    assert "eventstore_delivery_latency_seconds" in families
    assert "eventstore_commit_batch_requests" in families
    lag = families["eventstore_subscription_lag"]
    assert lag.type == "gauge"
    assert [s.labels["name"] for s in lag.samples] == ['we"ird\\name']
    restarts = families["eventstore_restarts"]
    assert {s.labels["child"] for s in restarts.samples} >= {"writer", "subscription"}
    with pytest.raises(ValueError, match="Duplicated"):
        prometheus.register(store, registry)  # same names twice
    prometheus.register(store, registry, prefix="other_")
    registry.unregister(collector)


def test_prometheus_module_without_prometheus_client_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "try:\n"
        "    import eventstore_actors.prometheus\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install prometheus_client" in out.stdout


def test_metrics_off_records_nothing(make_store: MakeStore) -> None:
    store = make_store(metrics=False)
    store.append_to_stream("s", 0, _events(1))
    assert store.metrics() == {}


def test_metrics_option_must_be_a_bool(make_store: MakeStore) -> None:
    with pytest.raises(ConfigError, match="metrics"):
        make_store(metrics="yes")


def test_async_store_metrics(dsn: str, schema: str) -> None:
    async def main() -> dict[str, float]:
        async with await AsyncEventStore.start(dsn, schema=schema) as store:
            await store.append_to_stream("s", 0, _events(2))
            return await store.metrics()

    m = asyncio.run(main())
    assert m["appends_total"] == 1
    assert m["events_written_total"] == 2


# The pieces, without a database -------------------------------------------------------------


def test_summary_percentiles_are_close_and_bounded() -> None:
    summary = Summary(-19, 8, integer=False, window=60.0)
    values = [i / 1000 for i in range(1, 1001)]  # 1 ms .. 1 s, uniform
    for value in values:
        summary.add(value, 0.0)
    out: dict[str, float] = {}
    summary.snapshot("x", 0.0, out)
    assert out["x_count"] == 1000
    assert out["x_sum"] == pytest.approx(sum(values))
    assert out["x_max"] == 1.0
    for key, exact in (("x_p50", 0.5), ("x_p95", 0.95), ("x_p99", 0.99)):
        assert out[key] == pytest.approx(exact, rel=0.07)


def test_summary_of_small_integers_is_exact() -> None:
    summary = Summary(1, 24, integer=True, window=60.0)
    for value in [1] * 50 + [3] * 45 + [7] * 4 + [12]:
        summary.add(value, 0.0)
    out: dict[str, float] = {}
    summary.snapshot("b", 0.0, out)
    assert (out["b_p50"], out["b_p95"], out["b_p99"], out["b_max"]) == (1, 3, 7, 12)


def test_summary_window_forgets_old_values_but_keeps_counts() -> None:
    summary = Summary(-19, 8, integer=False, window=10.0)
    t = time.perf_counter()  # its clock
    summary.add(5.0, t)
    summary.add(0.001, t + 15)  # a new window: 5.0 is still in the previous one
    out: dict[str, float] = {}
    summary.snapshot("w", t + 15, out)
    assert out["w_max"] == 5.0
    summary.snapshot("w", t + 40, out)  # two windows later: nothing recent
    assert out["w_max"] == 0.0 and out["w_p99"] == 0.0
    assert out["w_count"] == 2


def test_keys_round_trip_through_parse_key() -> None:
    key = metric_key("subscription_lag", stream='a"b\\c\nd', name="x,y=z")
    assert parse_key(key) == ("subscription_lag", {"stream": 'a"b\\c\nd', "name": "x,y=z"})
    assert parse_key("appends_total") == ("appends_total", {})


def test_disabled_metrics_record_nothing() -> None:
    metrics = Metrics(enabled=False)
    metrics.committed(3, 3, [0.0, 0.0, 0.0])
    metrics.count("restarts_total", child="writer")
    assert metrics.snapshot() == {}


def test_buffered_commits_are_counted_before_and_after_folding() -> None:
    """Commits are folded into the summaries in batches; a snapshot is exact either way."""
    metrics = Metrics()
    now = time.perf_counter()
    for i in range(150):  # two folds, then 22 commits still buffered
        metrics.committed(2, 3, [now, now], ["WrongExpectedVersionError"] if i % 50 == 0 else None)
        out = metrics.snapshot()
        assert out["commits_total"] == i + 1
        assert out["appends_total"] == 2 * (i + 1)
        assert out["commit_latency_seconds_count"] == 2 * (i + 1)
    assert out["events_written_total"] == 450
    assert out["commit_batch_requests_max"] == 2 and out["commit_batch_events_p99"] == 3
    assert out['append_errors_total{error="WrongExpectedVersionError"}'] == 3
