"""`eventstore-actors status`: the store and its subscriptions at a glance, without starting
a store (one connection, read-only queries)."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from . import hints
from .config import Settings
from .errors import ConfigError, StoreUnavailableError
from .storage import archive
from .storage import schema as schema_ops
from .storage.connection import connect
from .storage.deadline import guard
from .storage.errors import translate
from .storage.migrations import SCHEMA_VERSION
from .subscriptions import info

__all__ = ["status"]

_COLUMNS = (
    "stream_uuid",
    "subscription_name",
    "checkpoint",
    "head",
    "lag",
    "active",
    "holder",
    "parked",
)


def status(dsn: str, schema: str, *, as_json: bool = False) -> str:
    """The report `eventstore-actors status` prints (a table, or JSON)."""
    settings = Settings(dsn=dsn, schema=schema)
    try:
        conn = connect(settings)
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
            archived = archive.manifest(conn)
    except psycopg.Error as exc:
        raise translate(exc, what="status report") from None
    report: dict[str, Any] = {
        "schema": schema,
        "schema_version": version,
        "head": head,
        "streams": streams,
        "subscriptions": [s.to_json() for s in subscriptions],
        "archived": [
            {
                "first_event_id": f.first_event_id,
                "last_event_id": f.last_event_id,
                "events": f.events,
                "url": f.url,
                "state": f.state,
                "created_at": f.created_at.isoformat(),
            }
            for f in archived
        ],
    }
    if as_json:
        return json.dumps(report, indent=2)
    lines = [
        f"schema {schema}: version {version}, head event_id {head}, {streams} streams, "
        f"{len(subscriptions)} subscriptions"
    ]
    if subscriptions:
        columns: tuple[str, ...] = _COLUMNS
        if any(sub.partition is not None for sub in subscriptions):  # consumer groups
            columns = (*_COLUMNS[:2], "partition", *_COLUMNS[2:])
        rows = [list(columns)] + [
            [_cell(row[c]) for c in columns] for row in report["subscriptions"]
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
        for cells in rows:
            padded = (cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
            lines.append("  ".join(padded).rstrip())
    for f in archived:  # oldest first; 'recorded': its rows are still being deleted
        pending = "" if f.state == "deleted" else " (rows still being deleted)"
        lines.append(
            f"archived event_ids {f.first_event_id}..{f.last_event_id}: {f.events} events "
            f"in {f.url}{pending}"
        )
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
