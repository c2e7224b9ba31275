"""This store's `eventsourcing` module against that library's own PostgreSQL module, side by side.

    python -m eventstore_actors.bench.eventsourcing [--dsn DSN] [--rounds 3]

Runs the library's recorder performance workloads (`test_performance` of the application and
process recorders: one event per new aggregate, inserted one after another; and
`test_concurrent_throughput`: 4 threads each inserting jobs of 50 events of a new aggregate)
plus one with many concurrent single-event writers, on both modules against the same server,
each in a fresh schema dropped afterwards. Rounds alternate the two modules (the machine may
be shared); each figure is the median of the rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql as pgsql

__all__ = ["main"]

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def _env_ours(dsn: str, schema: str) -> dict[str, str]:
    return {
        "PERSISTENCE_MODULE": "eventstore_actors.eventsourcing",
        "EVENTSTORE_DSN": dsn,
        "EVENTSTORE_SCHEMA": schema,
    }


def _env_theirs(dsn: str, schema: str) -> dict[str, str]:
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": str(info.get("dbname", "postgres")),
        "POSTGRES_HOST": str(info.get("host", "127.0.0.1")),
        "POSTGRES_PORT": str(info.get("port", "5432")),
        "POSTGRES_USER": str(info.get("user", "postgres")),
        "POSTGRES_PASSWORD": str(info.get("password", "")),
        "POSTGRES_SCHEMA": schema,
        "POSTGRES_POOL_SIZE": "10",
        "POSTGRES_MAX_OVERFLOW": "10",
    }


@contextmanager
def _factory(kind: str, dsn: str) -> Iterator[Any]:
    """An infrastructure factory of one module, in a fresh schema dropped afterwards."""
    from eventsourcing.persistence import InfrastructureFactory
    from eventsourcing.utils import Environment

    from .. import admin

    schema = f"esbench_{kind}_{uuid.uuid4().hex[:8]}"
    if kind == "theirs":
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(pgsql.SQL("CREATE SCHEMA {}").format(pgsql.Identifier(schema)))
        env = _env_theirs(dsn, schema)
    else:
        env = _env_ours(dsn, schema)
    factory: Any = InfrastructureFactory.construct(Environment(env=env))
    try:
        yield factory
    finally:
        factory.close()
        if kind == "theirs":
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(pgsql.SQL("DROP SCHEMA {} CASCADE").format(pgsql.Identifier(schema)))
        else:
            admin.drop(dsn, schema)


def _one_by_one(recorder: Any, number: int, *, tracking: bool) -> float:
    """Microseconds per insert of one event of a new aggregate (library's test_performance)."""
    from eventsourcing.persistence import StoredEvent, Tracking

    ids = iter(range(1, 10 * number + 100))

    def insert() -> None:
        event = StoredEvent(uuid.uuid4(), 1, "topic1", b"state1")
        if tracking:
            recorder.insert_events([event], tracking=Tracking("upstream_app", next(ids)))
        else:
            recorder.insert_events([event])

    for _ in range(10):  # warm up
        insert()
    started = time.perf_counter()
    for _ in range(number):
        insert()
    return 1e6 * (time.perf_counter() - started) / number


def _concurrent(recorder: Any, workers: int, jobs: int, per_job: int) -> float:
    """Events per second, `workers` threads inserting `jobs` jobs of `per_job` events of a
    new aggregate each (the library's test_concurrent_throughput with workers=4, per_job=50)."""
    from eventsourcing.persistence import StoredEvent

    def job() -> None:
        originator_id = uuid.uuid4()
        recorder.insert_events(
            [StoredEvent(originator_id, i, "topic", b"state") for i in range(per_job)]
        )

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda _: job(), range(workers)))  # warm up
        started = time.perf_counter()
        list(pool.map(lambda _: job(), range(jobs)))
        return jobs * per_job / (time.perf_counter() - started)


Workload = tuple[str, str, Callable[[Any], float]]


def _workloads(args: argparse.Namespace) -> list[Workload]:
    return [
        (
            "application recorder, one insert at a time",
            "us/insert",
            lambda f: _one_by_one(f.application_recorder(), args.number, tracking=False),
        ),
        (
            "process recorder (with tracking), one insert at a time",
            "us/insert",
            lambda f: _one_by_one(f.process_recorder(), args.number, tracking=True),
        ),
        (
            "concurrent throughput: 4 threads, jobs of 50 events",
            "events/s",
            lambda f: _concurrent(f.application_recorder(), 4, args.jobs, 50),
        ),
        (
            f"concurrent throughput: {args.writers} threads, jobs of 1 event",
            "events/s",
            lambda f: _concurrent(f.application_recorder(), args.writers, args.jobs * 5, 1),
        ),
    ]


def run(args: argparse.Namespace) -> list[tuple[str, str, float, float]]:
    """(workload, unit, ours, theirs): medians over the alternating rounds."""
    figures: dict[tuple[str, str], list[float]] = {}
    workloads = _workloads(args)
    for round_no in range(args.rounds):
        order = ("ours", "theirs") if round_no % 2 == 0 else ("theirs", "ours")
        for kind in order:
            for name, _unit, workload in workloads:
                with _factory(kind, args.dsn) as factory:
                    figures.setdefault((name, kind), []).append(workload(factory))
            print(f"round {round_no + 1}/{args.rounds}: {kind} done", file=sys.stderr)
    return [
        (
            name,
            unit,
            statistics.median(figures[name, "ours"]),
            statistics.median(figures[name, "theirs"]),
        )
        for name, unit, _ in workloads
    ]


def _table(rows: Sequence[tuple[str, str, float, float]]) -> str:
    lines = [
        "| workload | eventstore_actors.eventsourcing | eventsourcing.postgres | ratio |",
        "|---|---|---|---|",
    ]
    for name, unit, ours, theirs in rows:
        ratio = ours / theirs
        lines.append(f"| {name} | {ours:,.0f} {unit} | {theirs:,.0f} {unit} | {ratio:.2f}x |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m eventstore_actors.bench.eventsourcing",
        description="The eventsourcing library's recorder performance workloads on this "
        "store's module and on the library's own PostgreSQL module, same server, one run.",
    )
    parser.add_argument("--dsn", default=os.environ.get("EVENTSTORE_DSN") or DEFAULT_DSN)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median)")
    parser.add_argument("--number", type=int, default=300, help="one-by-one inserts per round")
    parser.add_argument("--jobs", type=int, default=100, help="concurrent jobs per round")
    parser.add_argument("--writers", type=int, default=16, help="threads of single inserts")
    args = parser.parse_args(argv)
    try:
        import eventsourcing  # noqa: F401
    except ImportError:
        parser.error("needs the extra: pip install 'eventstore-actors[eventsourcing]'")
    rows = run(args)
    print(_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
