"""The workloads, by the name `--only` selects them with, in the order they run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..context import Context
from ..results import Result
from .aio import aio_steps, run_aio
from .appends import run_seed_appends, run_single_appends, seed_append_steps, single_append_steps
from .archive import archive_steps, run_archive
from .budget import budget_steps, run_budget
from .catchup import catchup_steps, run_catchup
from .competing import competing_steps, run_competing
from .encryption import encryption_steps, run_encryption
from .groups import group_steps, run_groups
from .growth import growth_steps, run_growth
from .latency import latency_steps, run_latency
from .metrics import metrics_steps, run_metrics
from .multi import any_append_steps, multi_append_steps, run_any_appends, run_multi_appends
from .projection import projection_steps, run_projection
from .reads import read_all_steps, run_read_all, run_seed_reads, seed_read_steps
from .scavenger import run_scavenger, scavenger_steps

__all__ = ["WORKLOADS", "Workload"]


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    #: How many progress steps `run` will tick.
    steps: Callable[[Context], int]
    run: Callable[[Context], list[Result]]


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in [
        Workload(
            "seed-append",
            "append 100 events to a new stream, 1/10/100 writers",
            seed_append_steps,
            run_seed_appends,
        ),
        Workload(
            "seed-read",
            "read a 100-event stream, 1/10/100 readers",
            seed_read_steps,
            run_seed_reads,
        ),
        Workload(
            "single-append",
            "single-event appends, 1 and 50 writers",
            single_append_steps,
            run_single_appends,
        ),
        Workload(
            "any-append",
            "ANY_VERSION single-event appends to one stream, 10 writers",
            any_append_steps,
            run_any_appends,
        ),
        Workload(
            "multi-append",
            "append_to_streams of 2 streams (one event each), 1 and 10 writers",
            multi_append_steps,
            run_multi_appends,
        ),
        Workload(
            "read-all",
            "read all streams in pages of 1,000 and through stream_all_forward",
            read_all_steps,
            run_read_all,
        ),
        Workload(
            "latency",
            "subscription delivery latency p50/p99, same process and another process",
            latency_steps,
            run_latency,
        ),
        Workload(
            "catchup",
            "all-streams subscription replaying stored events with acks",
            catchup_steps,
            run_catchup,
        ),
        Workload(
            "competing",
            "catch-up with 0.2 ms of work per event, 1 subscriber vs 4 competing consumers",
            competing_steps,
            run_competing,
        ),
        Workload(
            "projection",
            "projection committing once per batch over interleaved events, with and without "
            "mixed batches",
            projection_steps,
            run_projection,
        ),
        Workload(
            "aio",
            "asyncio: single-event appends from 50 tasks, catch-up through async for",
            aio_steps,
            run_aio,
        ),
        Workload(
            "groups",
            "consumer-group catch-up with 1, 2 and 4 processes, 0.2 ms of work per event",
            group_steps,
            run_groups,
        ),
        Workload(
            "budget",
            "200 live subscriptions: connections used and delivery p99, by default (one shared "
            "lock connection) and with shared_lock_session=False",
            budget_steps,
            run_budget,
        ),
        Workload(
            "metrics",
            "single-event appends with metrics on vs off, 1 and 50 writers",
            metrics_steps,
            run_metrics,
        ),
        Workload(
            "personal-data",
            "100-event appends and reads, encrypted per data subject vs plain",
            encryption_steps,
            run_encryption,
        ),
        Workload(
            "growth",
            "append/read cost and replay peak RSS, 10k vs 1M events stored",
            growth_steps,
            run_growth,
        ),
        Workload(
            "scavenger",
            "single-event appends while the retention scavenger deletes a large hidden range, "
            "vs appends alone",
            scavenger_steps,
            run_scavenger,
        ),
        Workload(
            "archive",
            "archived-range reads vs the same reads before the archive ($all page, stream, replay)",
            archive_steps,
            run_archive,
        ),
    ]
}
