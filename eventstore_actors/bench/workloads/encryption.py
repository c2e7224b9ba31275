"""Personal data: encrypted appends and reads next to their plain twins, in the same run.

Two stores run side by side on the bench schema: one plain, one with `encryption` (a random
master key). The same 100-event appends (one writer, a new stream each, the events of one
data subject out of 50, whose keys were created and cached before the clock starts) go
through each; then each store reads its own streams back whole. Each in 6 short rounds per
side, alternating plain and encrypted so that drift in the machine's load hits both (the
best round of each side counts; the client's CPU time per event is reported too). The "raw"
column is the plain twin; the target (docs/personal-data.md): encrypted costs at most 15 %
more, i.e. >= 0.87x plain throughput.
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ...events import EventData
from ...lifecycle.encryption import Encryption
from ..context import Context
from ..harness import run_workers
from ..payload import api_events
from ..results import Result, Target

__all__ = ["encryption_steps", "run_encryption"]

BATCH = 100
SUBJECTS = 50
#: Short rounds per side, alternating plain and encrypted (the best of each side counts):
#: on a shared machine the load drifts between two long runs.
ROUNDS = 6
TARGET = Target("ratio>=", 0.87, ">= 0.87x plain (<= 15 % more)")


def encryption_steps(ctx: Context) -> int:
    return 4 * ROUNDS


def run_encryption(ctx: Context) -> list[Result]:
    per_round = max(1, ctx.sizes.append_rounds.get(1, 10) * ctx.sizes.repeats // ROUNDS)
    plain_events = api_events(BATCH)
    ctx.schema.reset()
    key = os.urandom(32)
    plain_streams: list[str] = []
    sealed_streams: list[str] = []
    with ctx.store() as plain, ctx.store(encryption=Encryption(master_key=key)) as sealed:
        sealed_batches = [
            [replace(e, subject=f"subject-{n}") for e in plain_events] for n in range(SUBJECTS)
        ]
        # Steady state: the subjects' keys exist and are cached (a subject's first event
        # costs one more transaction, once per store instance).
        for batch in sealed_batches:
            sealed.append_to_stream(f"warm-{uuid.uuid4().hex}", 0, batch[:1])

        def appends(encrypted: bool) -> tuple[float, float]:
            store = sealed if encrypted else plain
            names = sealed_streams if encrypted else plain_streams

            def op(worker: int, i: int) -> None:
                stream = f"{'sealed' if encrypted else 'plain'}-{uuid.uuid4().hex}"
                events: list[EventData] = (
                    sealed_batches[len(names) % SUBJECTS] if encrypted else plain_events
                )
                store.append_to_stream(stream, 0, events)
                names.append(stream)

            label = "encrypted" if encrypted else "plain"
            with ctx.step(f"personal data: 100-event appends, {label}"):
                return _timed(lambda: run_workers(1, per_round, op, lockstep=False))

        plain_runs, sealed_runs = _alternate(appends)

        def reads(encrypted: bool) -> tuple[float, float]:
            store = sealed if encrypted else plain
            names = sealed_streams if encrypted else plain_streams

            def op(worker: int, i: int) -> None:
                events = store.read_stream_forward(names[i], 1, BATCH)
                assert len(events) == BATCH

            label = "encrypted" if encrypted else "plain"
            with ctx.step(f"personal data: 100-event reads, {label}"):
                return _timed(lambda: run_workers(1, len(names), op, lockstep=False))

        plain_reads, sealed_reads = _alternate(reads)
    appended = per_round * BATCH
    read_events = len(plain_streams) * BATCH
    return [
        Result(
            workload="personal-data",
            name="100-event appends, encrypted (raw = plain twin)",
            unit="events/s",
            api=appended / min(w for w, _ in sealed_runs),
            raw=appended / min(w for w, _ in plain_runs),
            target=TARGET,
            extra=_extra(plain_runs, sealed_runs, appended),
        ),
        Result(
            workload="personal-data",
            name="100-event stream reads, encrypted (raw = plain twin)",
            unit="events/s",
            api=len(sealed_streams) * BATCH / min(w for w, _ in sealed_reads),
            raw=read_events / min(w for w, _ in plain_reads),
            target=TARGET,
            extra=_extra(plain_reads, sealed_reads, read_events),
        ),
    ]


def _timed(run: Callable[[], float]) -> tuple[float, float]:
    """Wall seconds, and this process's CPU seconds (all its threads)."""
    cpu = time.process_time()
    wall = run()
    return wall, time.process_time() - cpu


def _alternate(
    side: Callable[[bool], tuple[float, float]],
) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """ROUNDS rounds of each side, alternating which goes first: (plain runs, encrypted runs)."""
    plain: list[tuple[float, float]] = []
    sealed: list[tuple[float, float]] = []
    for r in range(ROUNDS):
        for encrypted in (r % 2 == 1, r % 2 == 0):
            (sealed if encrypted else plain).append(side(encrypted))
    return plain, sealed


def _extra(
    plain: list[tuple[float, float]], sealed: list[tuple[float, float]], events: int
) -> dict[str, Any]:
    """Every run's wall seconds, and the median client CPU µs per event of each side."""
    return {
        "plain_runs_s": [w for w, _ in plain],
        "encrypted_runs_s": [w for w, _ in sealed],
        "plain_cpu_us_per_event": statistics.median(c for _, c in plain) / events * 1e6,
        "encrypted_cpu_us_per_event": statistics.median(c for _, c in sealed) / events * 1e6,
    }
