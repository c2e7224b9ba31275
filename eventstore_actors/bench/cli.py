"""`eventstore-actors bench` / `python -m bench`: run the workloads, print and save the results."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .context import Context
from .gate import (
    DEFAULT_BASELINE,
    compare,
    format_comparison,
    load_baseline,
    save_baseline,
)
from .machine import busy_warning, describe, load_average, summary
from .progress import Progress
from .report import format_seed_table, format_table, write_json, write_plot
from .results import Result
from .schema import BenchSchema
from .sizes import PRESETS
from .workloads import WORKLOADS

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eventstore-actors bench",
        description="Benchmark the public API against the fastest raw psycopg code doing the "
        "same job on the same schema, and compare each with its target.",
        epilog="Workloads: " + "; ".join(f"{w.name} ({w.description})" for w in WORKLOADS.values()),
    )
    parser.add_argument(
        "--dsn", help="libpq DSN or URI; default: $EVENTSTORE_DSN, else the embedded PostgreSQL"
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        action="store_const",
        dest="preset",
        const="quick",
        help="small sizes (about 1.5 minutes; the full suite takes about 7 minutes)",
    )
    size.add_argument(
        "--smoke",
        action="store_const",
        dest="preset",
        const="smoke",
        help="tiny sizes: checks that the harness works, measures nothing (a few seconds)",
    )
    parser.set_defaults(preset="full")
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run only these workloads (repeat or separate with commas)",
    )
    parser.add_argument(
        "--growth-size",
        type=int,
        metavar="N",
        help="events stored for the large side of the growth workload (default 1,000,000)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the results as JSON")
    parser.add_argument(
        "--plot", type=Path, metavar="PATH", help="write a PNG of throughput vs concurrency"
    )
    parser.add_argument(
        "--schema",
        help="schema to run in, named bench...: created if missing, EMPTIED, left in place; "
        "default: a fresh bench_<random> schema, dropped afterwards",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 2 when a target is missed"
    )
    parser.add_argument(
        "--repeats",
        type=_positive,
        metavar="N",
        help="runs per side of each throughput workload, alternating raw and API; the best "
        "counts (default: 3 for the full suite, 1 for --quick and --smoke)",
    )
    parser.add_argument(
        "--check",
        nargs="?",
        type=Path,
        const=DEFAULT_BASELINE,
        metavar="PATH",
        help="compare each API/raw ratio with the one stored for this preset in PATH "
        "(default: bench/baseline-ratios.json of the checkout) and exit with status 3, "
        "naming the workload, when one fell more than the tolerance below it",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        metavar="F",
        help="with --check: the relative drop allowed, 0 to 1 (default: the file's, else 0.25)",
    )
    parser.add_argument(
        "--save-ratios",
        nargs="?",
        type=Path,
        const=DEFAULT_BASELINE,
        metavar="PATH",
        help="store this run's ratios for this preset in PATH (default as --check), keeping "
        "the others",
    )
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _selected(only: list[str] | None, parser: argparse.ArgumentParser) -> list[str]:
    if not only:
        return list(WORKLOADS)
    names = [n.strip() for item in only for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        parser.error(
            f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}"
        )
    return [n for n in WORKLOADS if n in names]


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    names = _selected(args.only, parser)
    if args.schema is not None and not args.schema.startswith("bench"):
        parser.error("--schema must start with 'bench': the bench empties it")
    if args.plot is not None and not _has_matplotlib():
        # Checked first: finding out after a 2.5-minute run is no use.
        parser.error("--plot needs matplotlib: pip install 'eventstore-actors[bench]'")
    if args.tolerance is not None and not 0 <= args.tolerance < 1:
        parser.error("--tolerance must be from 0 to below 1 (0.25: a 25 % drop is allowed)")
    baseline = None
    if args.check is not None:
        try:  # before the run: a missing file is no news after minutes of benchmarking
            baseline = load_baseline(args.check)
        except ValueError as exc:
            parser.error(f"--check: {exc}")
    sizes = PRESETS[args.preset]
    if args.growth_size is not None:
        sizes = sizes.with_growth_large(args.growth_size)
    if args.repeats is not None:
        sizes = sizes.with_repeats(args.repeats)

    from eventstore_actors import EventStoreError
    from eventstore_actors.config import resolve_dsn

    try:
        dsn = resolve_dsn(args.dsn)
        machine = describe(dsn)
    except (EventStoreError, OSError) as exc:
        print(f"eventstore-actors bench: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # psycopg errors: an unreachable or refusing server
        print(f"eventstore-actors bench: cannot connect: {exc}", file=sys.stderr)
        return 1

    warning = busy_warning()
    if warning:
        print(warning, file=sys.stderr)
    schema = BenchSchema(dsn, args.schema)
    schema.create()
    started = time.perf_counter()
    started_at = datetime.now(UTC)
    results: list[Result] = []
    failed: dict[str, str] = {}
    durations: dict[str, float] = {}
    progress = Progress(0, enabled=False)
    try:
        ctx = Context(dsn, schema, sizes, progress)
        total = sum(WORKLOADS[n].steps(ctx) for n in names)
        ctx.progress = progress = Progress(total, enabled=not args.no_progress)
        for name in names:
            began = time.perf_counter()
            try:
                results.extend(WORKLOADS[name].run(ctx))
            except Exception as exc:
                failed[name] = f"{type(exc).__qualname__}: {exc}"
                progress.write(f"bench: workload {name} failed: {failed[name]}")
            durations[name] = time.perf_counter() - began
    finally:
        progress.close()
        if args.schema is None:
            schema.drop()
    duration = time.perf_counter() - started

    print(f"eventstore-actors bench ({args.preset}) on {summary(machine)}")
    print(f"{len(results)} results in {duration:.0f} s")
    if warning:
        print(warning)
    print()
    print(format_table(results))
    seed = format_seed_table(results)
    if seed:
        print("\n" + seed)
    for name, reason in failed.items():
        print(f"\nworkload {name} FAILED: {reason}")

    document: dict[str, Any] = {
        "preset": args.preset,
        "started_at": started_at.isoformat(),
        "duration_s": duration,
        "load_average_1m_after": load_average(),
        "machine": machine,
        "sizes": sizes.to_json(),
        "workloads": names,
        "durations_s": durations,
        "results": [r.to_json() for r in results],
        "failed": failed,
    }
    if args.json:
        write_json(args.json, document)
    if args.plot and not write_plot(
        args.plot, results, f"eventstore-actors ({args.preset})", sys.stderr
    ):
        return 1
    if args.save_ratios is not None:
        save_baseline(args.save_ratios, results, args.preset)
        print(f"\nratios of this run stored for {args.preset} in {args.save_ratios}")
    if failed:
        return 1
    if baseline is not None:
        tolerance = baseline.tolerance if args.tolerance is None else args.tolerance
        comparisons = compare(results, baseline, args.preset, tolerance)
        regressed = [c for c in comparisons if c.regressed]
        print(f"\ncheck against {args.check} ({args.preset}, tolerance {tolerance:.0%}):")
        print(format_comparison(comparisons, tolerance))
        if regressed:
            lost = ", ".join(f"{c.name} [{c.workload}]" for c in regressed)
            print(f"eventstore-actors bench: regressed: {lost}", file=sys.stderr)
            return 3
    if args.strict and any(r.passed is False for r in results):
        return 2
    return 0
