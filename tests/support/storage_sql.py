"""Direct SQL on a store's schema for read-side tests: links, soft and hard deletes, bulk
rows, and the plans of the store's own read statements (EXPLAIN, custom and generic)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg

__all__ = [
    "bulk_streams",
    "hard_delete",
    "link",
    "plan",
    "plan_nodes",
    "soft_delete",
    "sql",
]


@contextmanager
def sql(dsn: str, schema: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection whose search_path is the store's schema."""
    with psycopg.connect(dsn, autocommit=True, options=f"-c search_path={schema}") as conn:
        yield conn


def link(dsn: str, schema: str, stream_uuid: str, event_ids: Sequence[int]) -> None:
    """Link events into a stream after its last position, as link_to_stream would: the
    streams row is created if missing and its stream_version is the last event_number."""
    with sql(dsn, schema) as conn, conn.transaction():
        conn.execute(
            "INSERT INTO streams (stream_uuid) VALUES (%s) ON CONFLICT (stream_uuid) DO NOTHING",
            (stream_uuid,),
        )
        row = conn.execute(
            "SELECT stream_id, stream_version FROM streams WHERE stream_uuid = %s FOR UPDATE",
            (stream_uuid,),
        ).fetchone()
        assert row is not None
        stream_id, version = row
        for n, event_id in enumerate(event_ids, start=version + 1):
            conn.execute(
                "INSERT INTO links (stream_id, event_number, event_id) VALUES (%s, %s, %s)",
                (stream_id, n, event_id),
            )
        conn.execute(
            "UPDATE streams SET stream_version = %s WHERE stream_id = %s",
            (version + len(event_ids), stream_id),
        )


def soft_delete(dsn: str, schema: str, stream_uuid: str) -> None:
    with sql(dsn, schema) as conn:
        conn.execute("UPDATE streams SET deleted_at = now() WHERE stream_uuid = %s", (stream_uuid,))


def hard_delete(dsn: str, schema: str, stream_uuid: str) -> None:
    """Remove a stream, its events and every link to them, the way a hard delete may."""
    with sql(dsn, schema) as conn, conn.transaction():
        conn.execute("SET LOCAL eventstore_actors.hard_delete = 'on'")
        conn.execute(
            "DELETE FROM links WHERE event_id IN (SELECT e.event_id FROM events AS e"
            " JOIN streams AS s ON s.stream_id = e.stream_id WHERE s.stream_uuid = %s)"
            " OR stream_id IN (SELECT stream_id FROM streams WHERE stream_uuid = %s)",
            (stream_uuid, stream_uuid),
        )
        conn.execute(
            "DELETE FROM events WHERE stream_id IN"
            " (SELECT stream_id FROM streams WHERE stream_uuid = %s)",
            (stream_uuid,),
        )
        conn.execute("DELETE FROM streams WHERE stream_uuid = %s", (stream_uuid,))


def bulk_streams(dsn: str, schema: str, streams: int, per_stream: int, links: int = 0) -> None:
    """`streams` streams "bulk-N" of `per_stream` events each and `links` link-only streams
    "bulk-links-N" (linking the events of bulk-N), written straight in SQL, then ANALYZE.
    On an empty store only: event_ids are computed from stream_ids."""
    with sql(dsn, schema) as conn, conn.transaction():
        conn.execute(
            "INSERT INTO streams (stream_uuid, stream_version, created_at)"
            " SELECT 'bulk-' || g, %s, now() - (g || ' seconds')::interval"
            " FROM generate_series(1, %s) AS g",
            (per_stream, streams),
        )
        conn.execute(
            "INSERT INTO events (event_id, stream_id, stream_version, event_type, data, created_at)"
            " SELECT (s.stream_id - 1) * %(n)s + v, s.stream_id, v, 'bulk', '{}'::bytea, now()"
            " FROM streams AS s, generate_series(1, %(n)s) AS v",
            {"n": per_stream},
        )
        conn.execute("UPDATE event_counter SET last_event_id = (SELECT max(event_id) FROM events)")
        # Link-only streams "bulk-links-N", each linking `per_stream` events of stream N.
        conn.execute(
            "INSERT INTO streams (stream_uuid, stream_version)"
            " SELECT 'bulk-links-' || g, %s FROM generate_series(1, %s) AS g",
            (per_stream, links),
        )
        conn.execute(
            "INSERT INTO links (stream_id, event_number, event_id)"
            " SELECT l.stream_id, e.stream_version, e.event_id FROM streams AS l"
            " JOIN events AS e ON e.stream_id = substr(l.stream_uuid, 12)::bigint"
            " WHERE l.stream_uuid LIKE 'bulk-links-%%'"
        )
    with sql(dsn, schema) as conn:
        conn.execute("ANALYZE")


def plan(
    dsn: str,
    schema: str,
    query: str,
    params: dict[str, Any],
    types: dict[str, str],
    *,
    generic: bool,
    analyze: bool = False,
) -> dict[str, Any]:
    """The JSON plan of one of the store's statements with these parameters: the custom
    plan, or the generic plan a prepared statement falls back to after a few executions;
    `analyze`: run it too (actual rows and loops in the plan)."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    # A literal % of the statement reads %% for psycopg, which sends %.
    text = re.sub(r"%\((\w+)\)s", number, query).rstrip().rstrip(";").replace("%%", "%")
    decl = ", ".join(types[n] for n in names)
    with sql(dsn, schema) as conn:
        conn.execute(f"SET plan_cache_mode = {'force_generic_plan' if generic else 'auto'}")
        conn.execute(f"PREPARE q ({decl}) AS {text}")
        literal = ", ".join(
            "NULL" if params[n] is None else f"{_literal(params[n])}::{types[n]}" for n in names
        )
        options = "ANALYZE, FORMAT JSON" if analyze else "FORMAT JSON"
        rows = conn.execute(f"EXPLAIN ({options}) EXECUTE q ({literal})").fetchall()
    result: dict[str, Any] = rows[0][0][0]["Plan"]
    return result


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "'" + json.dumps(value).replace("[", "{").replace("]", "}") + "'"
    return "'" + str(value).replace("'", "''") + "'"


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of a JSON plan, depth first."""
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)
