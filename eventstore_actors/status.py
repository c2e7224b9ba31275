"""`eventstore-actors status`: the store and its subscriptions at a glance, without starting
a store (one connection, read-only queries)."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from . import hints
from .config import Settings, redact_url, resolve_dsn
from .errors import ConfigError, StoreUnavailableError
from .storage import archive, keys, retention
from .storage import schema as schema_ops
from .storage.connection import connect_for_command
from .storage.deadline import guard
from .storage.errors import translate
from .storage.migrations import SCHEMA_VERSION
from .subscriptions import info

__all__ = ["UNHEALTHY", "healthy", "report", "status"]

_COLUMNS = (
    "stream_uuid",
    "subscription_name",
    "checkpoint",
    "head",
    "lag",
    "active",
    "holder",
    "parked",
    "lag_seconds",
    "state",
)
#: The states `status --check` reports as a failure (exit code 2), for monitoring and cron.
UNHEALTHY = ("stalled", "stopped")


def status(dsn: str, schema: str, *, as_json: bool = False) -> str:
    """The report `eventstore-actors status` prints (a table, or JSON)."""
    return report(dsn, schema, as_json=as_json)[0]


def healthy(subscriptions: list[dict[str, Any]]) -> bool:
    """Whether no subscription (rows of the report) is stalled or stopped."""
    return not any(s["state"] in UNHEALTHY for s in subscriptions)


def report(dsn: str, schema: str, *, as_json: bool = False) -> tuple[str, bool]:
    """The report `eventstore-actors status` prints (a table, or JSON), and whether every
    subscription is healthy (none stalled or stopped: what `status --check` exits 0 for)."""
    # Checked and resolved as every store and command does: a DSN libpq cannot parse is a
    # ConfigError with its password hidden, not psycopg's error quoting it.
    dsn = resolve_dsn(dsn)
    settings = Settings(dsn=dsn, schema=schema)
    try:
        conn = connect_for_command(settings)  # also through PgBouncer
    except StoreUnavailableError as exc:
        hint = hints.missing_database(str(exc), dsn, schema)
        if hint is None:
            raise
        raise ConfigError(hint) from None
    try:
        with conn, guard(conn, settings.io_timeout):  # a frozen path ends
            version = schema_ops.installed_version(conn, schema)
            if version is None:
                raise ConfigError(hints.not_initialised(schema, dsn))
            if version < SCHEMA_VERSION:  # its tables lack columns this report reads
                raise ConfigError(schema_ops.outdated(schema, version))
            if version > SCHEMA_VERSION:
                raise ConfigError(schema_ops.too_new(schema, version))
            _, head, streams = info.summary(conn)
            subscriptions = info.load(conn, schema)
            kept, limited = retention.settings(conn, _RETENTION_SHOWN)
            forgotten = keys.forgotten_count(conn)
            archived = archive.manifest(conn)
    except psycopg.Error as exc:
        raise translate(exc, what="status report") from None
    shown: dict[str, Any] = {
        "schema": schema,
        "schema_version": version,
        "head": head,
        "streams": streams,
        "forgotten_subjects": forgotten,
        "subscriptions": [s.to_json() for s in subscriptions],
        "retention": {
            "streams": kept,
            "shown": [
                {
                    "stream_uuid": stream,
                    "first_version": first,
                    "max_count": count,
                    "max_age_seconds": None if age is None else age.total_seconds(),
                }
                for stream, first, count, age in limited
            ],
        },
        "archived": [
            {
                "first_event_id": f.first_event_id,
                "last_event_id": f.last_event_id,
                "events": f.events,
                "url": redact_url(f.url),  # one recorded with a password: without it
                "state": f.state,
                "created_at": f.created_at.isoformat(),
            }
            for f in archived
        ],
    }
    ok = healthy(shown["subscriptions"])
    if as_json:
        return json.dumps(shown, indent=2), ok
    lines = [
        f"schema {schema}: version {version}, head event_id {head}, {streams} streams, "
        f"{len(subscriptions)} subscriptions, {forgotten} forgotten data subjects"
    ]
    if subscriptions:
        columns: tuple[str, ...] = _COLUMNS
        if any(sub.partition is not None for sub in subscriptions):  # consumer groups
            columns = (*_COLUMNS[:2], "partition", *_COLUMNS[2:])
        rows = [list(columns)] + [
            [_cell(row[c]) for c in columns] for row in shown["subscriptions"]
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
        for cells in rows:
            padded = (cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
            lines.append("  ".join(padded).rstrip())
    for f in archived:  # oldest first; 'recorded': its rows are still being deleted
        pending = "" if f.state == "deleted" else " (rows still being deleted)"
        lines.append(
            f"archived event_ids {f.first_event_id}..{f.last_event_id}: {f.events} events "
            f"in {redact_url(f.url)}{pending}"
        )
    lines.extend(_retention_lines(kept, limited))
    return "\n".join(lines), ok


#: Streams with retention listed by `status` (their number is always shown).
_RETENTION_SHOWN = 20


def _retention_lines(kept: int, limited: list[Any]) -> list[str]:
    """The retention part of the report: how many streams have one, and the first few."""
    if not kept:
        return []
    more = f" (first {len(limited)} shown)" if kept > len(limited) else ""
    lines = [f"{kept} streams with retention{more}:"]
    for stream, first, count, age in limited:
        limits = [f"first_version {first}"]
        limits.append(f"max_count {'-' if count is None else count}")
        limits.append(f"max_age {'-' if age is None else _age(age)}")
        lines.append(f"  {stream}  " + "  ".join(limits))
    return lines


def _age(age: Any) -> str:
    """A max_age as the CLI would take it: 30d, 12h, 90s."""
    seconds = age.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
