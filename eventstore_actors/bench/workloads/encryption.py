"""Personal data: encrypted appends and reads next to their plain twins, in the same run.

Two stores run side by side on the bench schema: one plain, one with `encryption` (a random
master key). The same 100-event appends (one writer, a new stream each, the events of one
data subject out of 50, whose keys were created and cached before the clock starts) go
through each; then each store reads its own streams back whole (READ_PASSES passes). The
two sides are interleaved call by call (plain then encrypted, then the other way round), and
each call is timed: the median call of each side counts, so that drift in the machine's load
(which moved whole rounds of one side by up to 2x) hits both sides alike and a stall of a
few calls does not decide. The client's CPU time per event (all its threads) is reported
too. The "raw" column is the plain twin; the target (docs/personal-data.md): encrypted costs
at most 15 % more, i.e. >= 0.87x plain throughput.
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
from ..payload import api_events
from ..results import Result, Target

__all__ = ["encryption_steps", "run_encryption"]

BATCH = 100
SUBJECTS = 50
#: Passes over the appended streams when reading (a read costs a fraction of an append).
READ_PASSES = 3
TARGET = Target("ratio>=", 0.87, ">= 0.87x plain (<= 15 % more)")

#: One timed call: (wall seconds, the calling thread's CPU seconds).
Timing = tuple[float, float]


def encryption_steps(ctx: Context) -> int:
    return 2


def run_encryption(ctx: Context) -> list[Result]:
    pairs = max(2, ctx.sizes.append_rounds.get(1, 10) * ctx.sizes.repeats * 2)
    plain_events: list[EventData] = api_events(BATCH)
    ctx.schema.reset()
    key = os.urandom(32)
    streams: list[tuple[str, str]] = []  # (plain, encrypted)
    with ctx.store() as plain, ctx.store(encryption=Encryption(master_key=key)) as sealed:
        sealed_batches = [
            [replace(e, subject=f"subject-{n}") for e in plain_events] for n in range(SUBJECTS)
        ]
        # Steady state: the subjects' keys exist and are cached (a subject's first event
        # costs one more transaction, once per store instance).
        for batch in sealed_batches:
            sealed.append_to_stream(f"warm-{uuid.uuid4().hex}", 0, batch[:1])

        def append(i: int, encrypted: bool) -> None:
            stream = f"{'sealed' if encrypted else 'plain'}-{uuid.uuid4().hex}"
            if encrypted:
                sealed.append_to_stream(stream, 0, sealed_batches[i % SUBJECTS])
                streams[i] = (streams[i][0], stream)
            else:
                plain.append_to_stream(stream, 0, plain_events)
                streams[i] = (stream, streams[i][1])

        def read(i: int, encrypted: bool) -> None:
            store, name = (sealed, streams[i][1]) if encrypted else (plain, streams[i][0])
            events = store.read_stream_forward(name, 1, BATCH)
            assert len(events) == BATCH

        streams.extend(("", "") for _ in range(pairs))
        with ctx.step("personal data: 100-event appends, plain and encrypted in turn"):
            plain_appends, sealed_appends = _interleaved(pairs, append)
        with ctx.step("personal data: 100-event reads, plain and encrypted in turn"):
            plain_reads, sealed_reads = _interleaved(
                pairs * READ_PASSES, lambda i, e: read(i % pairs, e)
            )
    return [
        _result("100-event appends, encrypted (raw = plain twin)", plain_appends, sealed_appends),
        _result("100-event stream reads, encrypted (raw = plain twin)", plain_reads, sealed_reads),
    ]


def _interleaved(
    calls: int, call: Callable[[int, bool], None]
) -> tuple[list[Timing], list[Timing]]:
    """`calls` calls per side, `call(i, encrypted)`, each plain call next to its encrypted
    twin (which goes first alternates): (plain timings, encrypted timings)."""
    plain: list[Timing] = []
    sealed: list[Timing] = []
    clock, cpu = time.perf_counter, time.process_time
    for i in range(calls):
        for encrypted in (i % 2 == 1, i % 2 == 0):
            wall, used = clock(), cpu()
            call(i, encrypted)
            (sealed if encrypted else plain).append((clock() - wall, cpu() - used))
    return plain, sealed


def _result(name: str, plain: list[Timing], sealed: list[Timing]) -> Result:
    """Events per second of each side's median call; every call's figures in `extra`."""
    plain_wall = statistics.median(w for w, _ in plain)
    sealed_wall = statistics.median(w for w, _ in sealed)
    return Result(
        workload="personal-data",
        name=name,
        unit="events/s",
        api=BATCH / sealed_wall,
        raw=BATCH / plain_wall,
        target=TARGET,
        extra=_extra(plain, sealed),
    )


def _extra(plain: list[Timing], sealed: list[Timing]) -> dict[str, Any]:
    """The calls per side, the ratio of the sides' total times, and the median client CPU
    µs per event of each side."""
    return {
        "calls_per_side": len(plain),
        "total_ratio": sum(w for w, _ in plain) / sum(w for w, _ in sealed),
        "plain_cpu_us_per_event": statistics.median(c for _, c in plain) / BATCH * 1e6,
        "encrypted_cpu_us_per_event": statistics.median(c for _, c in sealed) / BATCH * 1e6,
    }
