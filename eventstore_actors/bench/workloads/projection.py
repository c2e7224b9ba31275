"""Projection: an all-streams subscription applied to a table, one transaction per batch.

The job: replay interleaved events (several streams, round-robin, so each stream's run is one
event long) into a projection table, exactly once: each batch's table update and its ack
(`ack(events, conn=)`) commit together. Without mixed batches every batch holds one stream,
so this commits once per event; with `mixed_batches=True` a batch holds up to `max_batch`
events of any streams. Raw: pages of 1,000 read with psycopg, each page's update and
checkpoint committed in one transaction (the same work, at the best batch size).
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

from psycopg import sql as pgsql

from eventstore_actors import Events

from .. import raw
from ..context import Context
from ..payload import EVENT_TYPE, data_dict, encode, metadata_dict
from ..results import Result
from ..subscriber import Inbox

__all__ = ["projection_steps", "run_projection"]

STREAMS = 10
PAGE = 1000
_COPY = (
    "COPY events (event_id, stream_id, stream_version, event_type, correlation_id,"
    " causation_id, data, metadata, created_at) FROM STDIN (FORMAT BINARY)"
)
_COPY_TYPES = ["int8", "int8", "int8", "text", "text", "text", "bytea", "bytea", "timestamptz"]


def projection_steps(ctx: Context) -> int:
    return 4


def _preload_interleaved(ctx: Context, total: int) -> None:
    """`total` events over STREAMS streams, round-robin (setup, not timed)."""
    payloads = [(encode(data_dict(i)), encode(metadata_dict(i))) for i in range(100)]
    uuids = [f"proj-{i}-{uuid.uuid4().hex[:8]}" for i in range(STREAMS)]
    versions = [total // STREAMS + (1 if i < total % STREAMS else 0) for i in range(STREAMS)]
    now = datetime.now(UTC)
    with ctx.schema.connect(autocommit=False) as conn:
        ids = conn.execute(
            "INSERT INTO streams (stream_uuid, stream_version)"
            " SELECT * FROM unnest(%s::text[], %s::bigint[]) RETURNING stream_id, stream_uuid",
            (uuids, versions),
        ).fetchall()
        by_uuid = {u: sid for sid, u in ids}
        with conn.cursor().copy(_COPY) as copy:
            copy.set_types(_COPY_TYPES)
            for i in range(total):
                data, metadata = payloads[i % len(payloads)]
                stream_id = by_uuid[uuids[i % STREAMS]]
                copy.write_row(
                    (
                        i + 1,
                        stream_id,
                        i // STREAMS + 1,
                        EVENT_TYPE,
                        None,
                        None,
                        data,
                        metadata,
                        now,
                    )
                )
        conn.execute("UPDATE event_counter SET last_event_id = %s WHERE id = 1", (total,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_projection (name text PRIMARY KEY, n bigint)"
        )
        conn.commit()
        conn.execute("ANALYZE events, streams")
        conn.commit()


def _api(ctx: Context, total: int, mixed: bool) -> tuple[float, int]:
    name = f"bench-projection-{'mixed' if mixed else 'plain'}"
    inbox = Inbox()
    seen = last = batches = 0
    update = "UPDATE bench_projection SET n = n + %s WHERE name = %s"
    with ctx.store() as store, ctx.schema.connect(autocommit=False) as conn:
        conn.execute("INSERT INTO bench_projection VALUES (%s, 0)", (name,))
        conn.commit()
        began = time.perf_counter()
        sub = store.subscribe_to_all_streams(name, inbox, mixed_batches=mixed)
        while seen < total:
            _, message = inbox.get(60)
            if not isinstance(message, Events):
                continue
            events = message.events
            assert events[0].event_id == last + 1, (events[0].event_id, last)
            last = events[-1].event_id
            with conn.transaction():
                conn.execute(update, (len(events), name), prepare=True)
                sub.ack(events, conn=conn)
            seen += len(events)
            batches += 1
        elapsed = time.perf_counter() - began
        store.delete_all_streams_subscription(name)
    return elapsed, batches


def _raw(ctx: Context, total: int) -> tuple[float, int]:
    name = "bench-projection-raw"
    seen = batches = 0
    with ctx.schema.connect(autocommit=False) as conn:
        conn.execute("INSERT INTO bench_projection VALUES (%s, 0)", (name,))
        conn.execute(
            "INSERT INTO subscriptions (stream_uuid, subscription_name) VALUES ('$all', %s)",
            (name,),
        )
        conn.commit()
        began = time.perf_counter()
        checkpoint = 0
        while True:
            page = raw.read_all(conn, checkpoint + 1, PAGE)
            if not page:
                conn.commit()
                break
            conn.execute(
                "UPDATE bench_projection SET n = n + %s WHERE name = %s",
                (len(page), name),
                prepare=True,
            )
            checkpoint = page[-1][0]
            conn.execute(
                "UPDATE subscriptions SET last_seen = %s"
                " WHERE stream_uuid = '$all' AND subscription_name = %s",
                (checkpoint, name),
                prepare=True,
            )
            conn.commit()
            seen += len(page)
            batches += 1
        elapsed = time.perf_counter() - began
        conn.execute("DELETE FROM subscriptions WHERE subscription_name = %s", (name,))
        conn.commit()
    assert seen == total, (seen, total)
    return elapsed, batches


def run_projection(ctx: Context) -> list[Result]:
    total = ctx.sizes.catchup_events
    with ctx.step("projection: loading interleaved events"):
        ctx.schema.reset()
        _preload_interleaved(ctx, total)
    with ctx.step("projection, raw"):
        raw_s, raw_batches = _raw(ctx, total)
    with ctx.step("projection, API, mixed batches"):
        mixed_s, mixed_batches = _api(ctx, total, mixed=True)
    with ctx.step("projection, API, one stream per batch"):
        plain_s, plain_batches = _api(ctx, total, mixed=False)
    with ctx.schema.connect() as conn:
        conn.execute(pgsql.SQL("DROP TABLE IF EXISTS bench_projection"))
    described = f"{total:,} events over {STREAMS} streams round-robin, a commit per batch"
    return [
        Result(
            "projection",
            f"projection with mixed batches, {described}",
            "events/s",
            total / mixed_s,
            total / raw_s,
            extra={"events": total, "api_batches": mixed_batches, "raw_batches": raw_batches},
        ),
        Result(
            "projection",
            f"projection, one stream per batch, {described}",
            "events/s",
            total / plain_s,
            total / raw_s,
            extra={"events": total, "api_batches": plain_batches, "raw_batches": raw_batches},
        ),
    ]
