"""The `eventstore-actors` command line: administration, the demo and the benchmarks."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn

import structlog

from . import admin
from .config import resolve_dsn, validate_schema
from .errors import EventStoreError

__all__ = ["main"]

_ADMIN: dict[str, tuple[Callable[[str, str], object], str]] = {
    "create": (admin.create, "create the database if missing, then the tables"),
    "init": (admin.init, "create the tables in an existing database"),
    "drop": (admin.drop, "drop the store's tables, then its schema if left empty (not public)"),
    "reset": (admin.reset, "empty every table and restart ids at 1"),
    "migrate": (admin.migrate, "upgrade a store made by an earlier release, in place"),
}

_DSN_HELP = (
    "libpq DSN or URI; default: $EVENTSTORE_DSN, else the embedded PostgreSQL "
    "(pip install 'eventstore-actors[embedded]')"
)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr, like every other error of the command line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {_one_line(message)} (see --help)\n")


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="eventstore-actors",
        description="A CQRS event store on PostgreSQL, built as supervised pykka actors.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in _ADMIN.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _connection_options(sub)
    demo = commands.add_parser(
        "demo",
        help="append, read and subscribe to a few events, printing what happens",
        description="Append, read back and subscribe to events in a fresh schema 'demo' "
        "(created if missing, emptied first).",
    )
    _connection_options(demo, default_schema="demo")
    commands.add_parser(
        "bench",
        help="run the benchmark suite (see `eventstore-actors bench --help`)",
        add_help=False,
    )
    return parser


def _configure_logging(verbose: bool) -> None:
    # The command line is an application, so it (unlike the library) configures structlog.
    level = logging.DEBUG if verbose else logging.WARNING
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def _connection_options(parser: argparse.ArgumentParser, default_schema: str = "public") -> None:
    parser.add_argument("--dsn", help=_DSN_HELP)
    parser.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    parser.add_argument("--schema", default=default_schema, help=f"default: {default_schema}")


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["bench"]:
        from .bench.cli import main as bench_main

        return bench_main(args_list[1:])
    args = _parser().parse_args(args_list)
    _configure_logging(args.verbose)
    try:
        schema = validate_schema(args.schema)
        dsn = resolve_dsn(args.dsn)
        if args.command == "demo":
            from .demo import run_demo

            run_demo(dsn, schema)
            return 0
        action, _ = _ADMIN[args.command]
        outcome = action(dsn, schema)
    except KeyboardInterrupt:
        print(f"eventstore-actors {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # Every failure is one line on stderr; -v adds the traceback for a bug report.
        if args.verbose:
            traceback.print_exc()
        text = _one_line(str(exc)) or type(exc).__name__
        if not isinstance(exc, EventStoreError):
            text = f"{type(exc).__name__}: {text}"
        print(f"eventstore-actors {args.command}: {text}", file=sys.stderr)
        return 1
    if args.command == "migrate":
        print(f"eventstore-actors migrate: schema {schema} is at version {outcome}")
    elif args.command == "drop" and outcome is False:
        print(f"eventstore-actors drop: nothing to drop (no store in schema {schema})")
    else:
        print(f"eventstore-actors {args.command}: done (schema {schema})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
