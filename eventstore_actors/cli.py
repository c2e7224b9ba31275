"""The `eventstore-actors` command line: administration, the demo and the benchmarks."""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, NoReturn

from . import __version__, admin
from .config import redact, redact_url, resolve_dsn, scrub, validate_schema
from .errors import ConfigError, EventStoreError

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


#: Commands that destroy data: they ask first, and need --yes without a terminal.
_DESTRUCTIVE = {
    "drop": "drop the event store (every event, stream, subscription and snapshot)",
    "reset": "delete every event, stream, subscription and snapshot",
}


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr, like every other error of the command line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, _safe(f"{self.prog}: {_one_line(message)} (see --help)\n"))


def _safe(text: str) -> str:
    """`text` without any password of a DSN on the command line or in EVENTSTORE_DSN: the
    last guard before anything is printed (a DSN typed as a stray argument, say)."""
    return scrub(text, *sys.argv[1:], os.environ.get("EVENTSTORE_DSN"))


def _print(text: str, *, err: bool = False) -> None:
    print(_safe(text), file=sys.stderr if err else sys.stdout, flush=True)


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="eventstore-actors",
        description="A CQRS event store on PostgreSQL, built as supervised pykka actors.",
    )
    parser.add_argument("--version", action="version", version=f"eventstore-actors {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in _ADMIN.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _connection_options(sub)
        if name in _DESTRUCTIVE:
            _yes_option(sub)
    demo = commands.add_parser(
        "demo",
        help="append, read and subscribe to a few events, printing what happens",
        description="Append, read back and subscribe to events in the schema 'demo' (its own: "
        "created if missing, emptied first). Another --schema that holds events is emptied "
        "only after a confirmation (or --yes).",
    )
    _connection_options(demo, default_schema="demo")
    status = commands.add_parser(
        "status",
        help="schema version, head, streams and every subscription's checkpoint, lag, holder "
        "and state",
        description="Print the schema version, the head event_id, the number of streams and "
        "one row per durable subscription (checkpoint, head, lag, active, holder, parked, "
        "lag_seconds, state). With --check, exit with status 2 when any subscription is "
        "stalled (a held one whose holding process stopped looking after it, frozen say, "
        "counts too) or stopped (0 otherwise), for monitoring scripts and cron.",
    )
    _connection_options(status)
    status.add_argument("--json", action="store_true", help="print one JSON object instead")
    status.add_argument(
        "--check",
        action="store_true",
        help="exit 2 when any subscription is stalled or stopped, 0 otherwise",
    )
    archive = commands.add_parser(
        "archive",
        help="move the oldest events to Parquet files (reads stay transparent)",
        description="Move the events before an event_id, or older than an age, out of "
        "PostgreSQL into Apache Parquet files under --target (a directory or fsspec URL), "
        "then delete their rows; every read still returns them (needs pyarrow: from a "
        "checkout, pip install '.[archive]'). Safe to interrupt and run again.",
    )
    _connection_options(archive)
    which = archive.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--before", type=int, metavar="EVENT_ID", help="the events before this event_id"
    )
    which.add_argument(
        "--older-than",
        type=_age,
        metavar="AGE",
        help="the events older than this: a number and s, m, h, d or w (e.g. 30d)",
    )
    archive.add_argument("--target", required=True, metavar="URL", help="directory or URL")
    _yes_option(demo)
    demo.add_argument(
        "--follow",
        action="store_true",
        help="then keep printing events appended by others until Ctrl-C",
    )
    rotate = commands.add_parser(
        "rotate-master-key",
        help="re-wrap the data keys of personal data with a new master key",
        description="Re-wrap every data key of the schema (docs/personal-data.md) from the "
        "master key in the environment variable --old-key-env to the one in --new-key-env "
        "(32 bytes, base64 each; keys are never taken on the command line). Events are not "
        "touched; keys already wrapped by the new key are left as they are. Restart the stores "
        "with the new key afterwards.",
    )
    _connection_options(rotate)
    rotate.add_argument(
        "--old-key-env",
        default="EVENTSTORE_MASTER_KEY",
        help="variable holding the current master key (default: EVENTSTORE_MASTER_KEY)",
    )
    rotate.add_argument(
        "--new-key-env",
        default="EVENTSTORE_NEW_MASTER_KEY",
        help="variable holding the new master key (default: EVENTSTORE_NEW_MASTER_KEY)",
    )
    embedded = commands.add_parser(
        "embedded",
        help="show or stop the embedded PostgreSQL server(s) this package started",
        description="The embedded PostgreSQL keeps running after the process that started it "
        "exits, so that the next run reuses it. `status` lists its data directories (under the "
        "user data dir, or --data-dir) with pid and port; `stop` stops them (data is kept).",
    )
    embedded.add_argument("action", choices=["status", "stop"])
    embedded.add_argument("--data-dir", help="only this data directory")
    embedded.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    console = commands.add_parser(
        "console",
        help="serve the web console (overview, streams, $all tail, subscriptions, parked)",
        description="Serve the operator's console over HTTP (needs the 'console' extra: pip "
        "install 'eventstore-actors[console]'). Read-only unless --allow-writes, which also "
        "needs the token in $EVENTSTORE_CONSOLE_TOKEN, sent with every write. Personal data "
        "is shown decrypted when $EVENTSTORE_MASTER_KEY holds the master key (one that does not "
        "open the schema's data keys is refused at start), else marked encrypted.",
    )
    _connection_options(console)
    console.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    console.add_argument("--port", type=int, default=8765, help="port (default: 8765)")
    console.add_argument(
        "--allow-writes",
        action="store_true",
        help="allow replaying parked events (POST, with the token of $EVENTSTORE_CONSOLE_TOKEN)",
    )
    commands.add_parser(
        "bench",
        help="run the benchmark suite (see `eventstore-actors bench --help`)",
        add_help=False,
    )
    return parser


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _age(text: str) -> timedelta:
    """`--older-than`: a positive number and a unit (s, m, h, d, w), e.g. 30d."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if not found or float(found.group(1)) <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an age: a positive number and s, m, h, d or w (e.g. 30d)"
        )
    return timedelta(seconds=float(found.group(1)) * _UNITS[found.group(2)])


def _yes_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="do not ask for confirmation (required when stdin is not a terminal)",
    )


class _ScrubLog(logging.Filter):
    """No password in a log line, whatever a library put in it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = _safe(record.getMessage())
        record.args = None
        return True


def _configure_logging(verbose: bool) -> None:
    # The command line is an application, so it (unlike the library) configures logging: its
    # own handler on stderr (stdout carries the commands' output), WARNING unless --verbose.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_ScrubLog())
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    if verbose:  # the store's own lines, not every library's debug output
        logging.getLogger("eventstore_actors").setLevel(logging.DEBUG)


def _confirm(command: str, dsn: str, schema: str, yes: bool) -> None:
    """Ask before destroying data: on a terminal, type 'yes'; without one, only with --yes.
    Raises _Refused (nothing done) otherwise."""
    if yes:
        return
    what = _DESTRUCTIVE.get(command, "empty it first (every event is deleted)")
    where = f"schema {schema!r} of {redact(dsn)}"
    if not sys.stdin.isatty():
        raise _Refused(
            f"this would {what} in {where}; stdin is not a terminal, so pass --yes to confirm"
        )
    _print(f"eventstore-actors {command}: this will {what} in {where}.", err=True)
    print("Type 'yes' to go on: ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise _Refused("not confirmed, nothing changed")


class _Refused(Exception):
    """A destructive command without confirmation."""


#: A command named in a message: `eventstore-actors init --dsn '...' --schema s`.
_NAMED_COMMAND_RE = re.compile(
    r"`eventstore-actors (create|init|migrate|status|drop|reset|demo)(?: [^`]*)?`"
)
_PASSWORD_NOTE = " (your password in place of ***)"


def _next_command(name: str, args: argparse.Namespace) -> str:
    """`eventstore-actors NAME` with the --dsn (password hidden) and --schema the user gave."""
    parts = ["eventstore-actors", name]
    if getattr(args, "dsn", None):
        parts += ["--dsn", shlex.quote(scrub(args.dsn, args.dsn))]
    schema = getattr(args, "schema", "public")
    if schema != "public":
        parts += ["--schema", schema]
    return " ".join(parts)


def _with_users_arguments(text: str, args: argparse.Namespace) -> str:
    """`text` with every command it names given the user's own --dsn and --schema (the
    library's hints name the DSN it resolved, or none)."""
    if not hasattr(args, "schema"):
        return text

    def swap(found: re.Match[str]) -> str:
        command = _next_command(found.group(1), args)
        return f"`{command}`{_PASSWORD_NOTE if '***' in command else ''}"

    return _NAMED_COMMAND_RE.sub(swap, text.replace(_PASSWORD_NOTE, ""))


def _connection_options(parser: argparse.ArgumentParser, default_schema: str = "public") -> None:
    parser.add_argument("--dsn", help=_DSN_HELP)
    parser.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    parser.add_argument("--schema", default=default_schema, help=f"default: {default_schema}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; the exit status: 0 success, 1 failure, 2 usage (and `status
    --check` finding a stalled or stopped subscription), 130 Ctrl-C."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["bench"]:
        from .bench.cli import main as bench_main

        return bench_main(args_list[1:])
    args = _parser().parse_args(args_list)
    _configure_logging(args.verbose)
    # SIGTERM stops a command like Ctrl-C does: the store and the demo's actors stop cleanly.
    previous_term = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        if args.command == "embedded":
            return _embedded(args.action, args.data_dir)
        schema = validate_schema(args.schema)
        from_embedded = args.dsn is None and not os.environ.get("EVENTSTORE_DSN")
        dsn = resolve_dsn(args.dsn)
        if args.command == "console":
            return _console(dsn, schema, args)
        if args.command == "demo":
            from .demo import run_demo

            if schema != "demo" and _holds_events(dsn, schema):
                _confirm("demo", dsn, schema, args.yes)
            run_demo(dsn, schema, embedded=from_embedded, follow=args.follow)
            return 0
        if args.command == "status":
            from .status import report

            text, healthy = report(dsn, schema, as_json=args.json)
            print(text)
            return 2 if args.check and not healthy else 0
        if args.command == "rotate-master-key":
            count = admin.rotate_master_key(
                dsn, schema, old=_env_key(args.old_key_env), new=_env_key(args.new_key_env)
            )
            _print(
                f"eventstore-actors rotate-master-key: {count} data key(s) re-wrapped "
                f"(schema {schema}); restart the stores with the new key"
            )
            return 0
        if args.command == "archive":
            from .config import Settings
            from .lifecycle.archive import archive as archive_events

            result = archive_events(
                Settings(dsn=dsn, schema=schema),
                before_event_id=args.before,
                older_than=args.older_than,
                target=args.target,
            )
            if result.events == 0:
                _print(f"eventstore-actors archive: nothing to move (schema {schema})")
            else:
                _print(
                    f"eventstore-actors archive: moved {result.events} events (event_ids "
                    f"{result.first_event_id}..{result.last_event_id}) to "
                    f"{', '.join(redact_url(f) for f in result.files)}"
                )
            return 0
        if args.command in _DESTRUCTIVE:
            _confirm(args.command, dsn, schema, args.yes)
        outcome: object = None
        if args.command == "migrate":
            before, now = admin._migrate(dsn, schema)
        else:
            action, _ = _ADMIN[args.command]
            outcome = action(dsn, schema)
    except KeyboardInterrupt:
        _stop_everything()
        _print(f"eventstore-actors {args.command}: interrupted", err=True)
        return 130
    except Exception as exc:
        # Every failure is one line on stderr; -v adds the traceback for a bug report.
        if args.verbose and not isinstance(exc, _Refused):
            _print(traceback.format_exc().rstrip(), err=True)
        text = _with_users_arguments(_one_line(str(exc)) or type(exc).__name__, args)
        if not isinstance(exc, (EventStoreError, _Refused)):
            text = f"{type(exc).__name__}: {text}"
        _print(f"eventstore-actors {args.command}: {text}", err=True)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous_term)
    status_command = _next_command("status", args)
    if args.command == "migrate":
        if before == now:
            _print(
                f"eventstore-actors migrate: nothing to do: schema {schema} is already at "
                f"version {now}; see it with `{status_command}`"
            )
        else:
            _print(
                f"eventstore-actors migrate: schema {schema} upgraded from version {before}, "
                f"now at version {now}"
            )
    elif args.command in ("create", "init") and outcome is False:
        _print(
            f"eventstore-actors {args.command}: nothing to do: schema {schema} already holds "
            f"a store; see it with `{status_command}`"
        )
    elif args.command == "drop" and outcome is False:
        _print(f"eventstore-actors drop: nothing to drop (no store in schema {schema})")
    else:
        _print(f"eventstore-actors {args.command}: done (schema {schema})")
    return 0


_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _console(dsn: str, schema: str, args: argparse.Namespace) -> int:
    """Serve the console until Ctrl-C or SIGTERM, then stop the store."""
    try:
        import uvicorn

        from .console import app
    except ImportError as exc:
        raise ConfigError(
            f"the console needs the 'console' extra ({exc.name} is missing): "
            "pip install 'eventstore-actors[console]'"
        ) from None
    from .lifecycle.encryption import ENV_MASTER_KEY, Encryption
    from .store import EventStore

    # Personal data is shown decrypted when the master key is in the environment, as every
    # store takes it (Encryption() reads it: a bad key, or one that does not open the
    # schema's data keys, is a ConfigError at start); without it, such events show as
    # encrypted.
    encryption = Encryption() if os.environ.get(ENV_MASTER_KEY) else None
    store = EventStore.start(dsn, schema=schema, encryption=encryption)
    try:
        web: Any = app(store, allow_writes=args.allow_writes)
        if args.host in _LOOPBACK:
            # Only requests addressed to this machine: a web page elsewhere cannot reach the
            # console by pointing a host name of its own at 127.0.0.1 (DNS rebinding).
            from .integrations.console.hosts import LoopbackHosts

            web = LoopbackHosts(web)
        host = f"[{args.host}]" if ":" in args.host else args.host  # an IPv6 address
        _print(
            f"eventstore-actors console: http://{host}:{args.port}/ (schema {schema}, "
            f"{'writes allowed with the token' if args.allow_writes else 'read-only'})",
            err=True,
        )
        config = uvicorn.Config(
            web,
            host=args.host,
            port=args.port,
            log_level="debug" if args.verbose else "warning",
            timeout_graceful_shutdown=2,
        )
        uvicorn.Server(config).run()
    finally:
        store.stop()
    return 0


def _env_key(name: str) -> bytes:
    """The base64 master key in the environment variable `name` (ConfigError otherwise; the
    message never shows the value)."""
    import base64
    import binascii

    text = os.environ.get(name)
    if not text:
        raise ConfigError(f"the environment variable {name} is not set (a base64 master key)")
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"the environment variable {name} is not valid base64") from None


def _stop_everything() -> None:
    """After Ctrl-C: a second one must not interrupt the cleanup (it printed a threading
    traceback), and no actor thread may keep the interpreter alive."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import pykka

        pykka.ActorRegistry.stop_all(block=True, timeout=10.0)
    except Exception:
        pass
    finally:
        signal.signal(signal.SIGINT, previous)


def _holds_events(dsn: str, schema: str) -> bool:
    """Whether `schema` holds a store with events (the demo would empty it)."""
    import psycopg

    from .storage.schema import holds_events

    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            return holds_events(conn, schema)
    except psycopg.Error:
        return False  # no store there, or no server: the demo itself says so


def _embedded(action: str, data_dir: str | None) -> int:
    from .embedded import default_data_dir, find_servers, stop_server

    servers = find_servers(data_dir)
    where = data_dir or default_data_dir().parent
    if not servers:
        _print(f"eventstore-actors embedded: no embedded PostgreSQL data directory in {where}")
        return 0
    for server in servers:
        if action == "stop" and server.running:
            stop_server(server.data_dir)
            _print(f"stopped: {server.data_dir} (pid {server.pid}, port {server.port}); data kept")
        elif server.running:
            _print(
                f"running: {server.data_dir} (pid {server.pid}, port {server.port}, "
                f"socket {server.socket_dir}); dsn: {server.dsn}"
            )
        else:
            _print(f"stopped: {server.data_dir}")
    if action == "status" and any(s.running for s in servers):
        _print("stop with: eventstore-actors embedded stop (the next run starts it again)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
