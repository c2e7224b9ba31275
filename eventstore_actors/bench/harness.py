"""Timing helpers: concurrent workers in lockstep or free-running, clocks, percentiles."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg_pool

from .schema import BenchSchema

__all__ = ["RawConnections", "alternate", "now", "percentile", "run_workers"]


def now() -> float:
    """Seconds on CLOCK_MONOTONIC: comparable between processes on one Linux machine."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0-100), nearest rank."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def run_workers(
    workers: int,
    iterations: int,
    op: Callable[[int, int], Any],
    *,
    lockstep: bool,
) -> float:
    """Run op(worker, i) for i < iterations in `workers` threads; wall seconds for all of it.

    lockstep: every worker finishes iteration i before any starts i + 1 (the seed's "op" is
    one such round); otherwise every worker runs free.
    """
    start = threading.Barrier(workers + 1)
    step = threading.Barrier(workers) if lockstep else None
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            start.wait()
            for i in range(iterations):
                op(worker, i)
                if step is not None:
                    step.wait()
        except threading.BrokenBarrierError:
            pass
        except BaseException as exc:
            errors.append(exc)
            if step is not None:
                step.abort()

    threads = [
        threading.Thread(target=work, args=(w,), name=f"bench-worker-{w}", daemon=True)
        for w in range(workers)
    ]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise errors[0]
    return elapsed


def alternate(
    repeats: int, raw: Callable[[], float], api: Callable[[], float]
) -> tuple[list[float], list[float]]:
    """Run raw, api, raw, api... `repeats` times each; the seconds of every run of each side."""
    raw_runs, api_runs = [], []
    for _ in range(repeats):
        raw_runs.append(raw())
        api_runs.append(api())
    return raw_runs, api_runs


class RawConnections:
    """Connections for raw workers: one each up to `limit`, else a shared pool of `limit`.

    `limit` matches the store's default pool size, so neither side gets more sessions.
    """

    def __init__(self, schema: BenchSchema, workers: int, limit: int = 10) -> None:
        self._own: list[psycopg.Connection[Any]] = []
        self._pool: psycopg_pool.ConnectionPool[Any] | None = None
        if workers <= limit:
            self._own = [schema.connect() for _ in range(workers)]
        else:
            self._pool = psycopg_pool.ConnectionPool(
                schema.dsn,
                min_size=limit,
                max_size=limit,
                kwargs={"autocommit": True, "options": f"-c search_path={schema.name}"},
                open=False,
            )
            self._pool.open(wait=True, timeout=30)

    @contextmanager
    def get(self, worker: int) -> Iterator[psycopg.Connection[Any]]:
        if self._pool is None:
            yield self._own[worker]
        else:
            with self._pool.connection() as conn:
                yield conn

    def close(self) -> None:
        for conn in self._own:
            conn.close()
        if self._pool is not None:
            self._pool.close()

    def __enter__(self) -> RawConnections:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
