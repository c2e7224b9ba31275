"""Personal data: encrypted appends and reads next to their plain twins, in the same run.

Two stores run side by side on the bench schema: one plain, one with `encryption` (a random
master key). The same 100-event appends (one writer, a new stream each, the events of one
data subject out of 50, whose keys were created and cached before the clock starts) go
through each, alternating plain and encrypted rounds so that drift in the machine's load
hits both; then each store reads its own streams back whole, three times, alternating. The
"raw" column is the plain twin; the target (docs/personal-data.md): encrypted costs at most
15 % more, i.e. >= 0.87x plain throughput.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import replace

from ...events import EventData
from ...lifecycle.encryption import Encryption
from ..context import Context
from ..harness import run_workers
from ..payload import api_events
from ..results import Result, Target

__all__ = ["encryption_steps", "run_encryption"]

BATCH = 100
SUBJECTS = 50
#: Rounds of reads per side, alternating (the best counts): one read pass is short.
READ_ROUNDS = 3
TARGET = Target("ratio>=", 0.87, ">= 0.87x plain (<= 15 % more)")


def encryption_steps(ctx: Context) -> int:
    return 2 * ctx.sizes.repeats + 2 * READ_ROUNDS


def run_encryption(ctx: Context) -> list[Result]:
    rounds = ctx.sizes.append_rounds.get(1, 10)
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

        def appends(encrypted: bool) -> float:
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
                return run_workers(1, rounds, op, lockstep=False)

        plain_runs: list[float] = []
        sealed_runs: list[float] = []
        for r in range(ctx.sizes.repeats):
            # Neither side always goes first.
            for encrypted in (r % 2 == 1, r % 2 == 0):
                (sealed_runs if encrypted else plain_runs).append(appends(encrypted))

        def reads(encrypted: bool) -> float:
            store = sealed if encrypted else plain
            names = sealed_streams if encrypted else plain_streams

            def op(worker: int, i: int) -> None:
                events = store.read_stream_forward(names[i], 1, BATCH)
                assert len(events) == BATCH

            label = "encrypted" if encrypted else "plain"
            with ctx.step(f"personal data: 100-event reads, {label}"):
                return run_workers(1, len(names), op, lockstep=False)

        plain_reads: list[float] = []
        sealed_reads: list[float] = []
        for r in range(READ_ROUNDS):
            for encrypted in (r % 2 == 1, r % 2 == 0):
                (sealed_reads if encrypted else plain_reads).append(reads(encrypted))
        read_plain, read_sealed = min(plain_reads), min(sealed_reads)
    appended = rounds * BATCH
    read_events = len(plain_streams) * BATCH
    return [
        Result(
            workload="personal-data",
            name="100-event appends, encrypted (raw = plain twin)",
            unit="events/s",
            api=appended / min(sealed_runs),
            raw=appended / min(plain_runs),
            target=TARGET,
            extra={"plain_runs_s": plain_runs, "encrypted_runs_s": sealed_runs},
        ),
        Result(
            workload="personal-data",
            name="100-event stream reads, encrypted (raw = plain twin)",
            unit="events/s",
            api=len(sealed_streams) * BATCH / read_sealed,
            raw=read_events / read_plain,
            target=TARGET,
            extra={"plain_runs_s": plain_reads, "encrypted_runs_s": sealed_reads},
        ),
    ]
