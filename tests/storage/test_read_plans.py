"""The read pool's prepared statements get one generic plan per connection
(`storage.pool.GENERIC_PLANS`): PostgreSQL's default chose a custom plan at every execution
of the store's reads, planning them anew each time (a backward read of the last events cost
twice raw's)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support import events, storage_sql
from support.factory import new_stream
from support.storage_sql import plan_nodes

from eventstore_actors import EventStore
from eventstore_actors.config import Settings
from eventstore_actors.storage import reader
from eventstore_actors.storage.pool import ReadPool


@pytest.fixture
def pool(dsn: str, schema: str) -> Iterator[ReadPool]:
    found = ReadPool(Settings(dsn=dsn, schema=schema, pool_size=1, pool_overflow=0))
    found.open()
    try:
        yield found
    finally:
        found.close()


def _plans(conn: Any) -> list[tuple[int, int]]:
    rows = conn.execute(
        "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
        " WHERE statement LIKE '%forget_generation%'",
        prepare=False,
    ).fetchall()
    return [(int(g), int(c)) for g, c in rows]


def test_reads_on_the_pool_are_planned_once_not_at_every_execution(
    store: EventStore, pool: ReadPool, schema: str
) -> None:
    for _ in range(3):
        store.append_to_stream(new_stream(), 0, events(5))
    for _ in range(12):
        found = pool.run(lambda c: reader.read_all(c, reader.MAX_POSITION, 10, backward=True))
        assert [row[0] for row in found] == list(range(15, 5, -1))
    # psycopg prepares the statement at its fifth use; every execution since is generic.
    ((generic, custom),) = pool.run(_plans)
    assert generic >= 7 and custom == 0, (generic, custom)
    # The option is added to the store's own: the search path still leads to its schema.
    assert pool.run(lambda c: c.execute("SHOW search_path").fetchone()) == (f"{schema},pg_temp",)


def _generic_plan(dsn: str, schema: str, query: str, params: dict[str, int]) -> dict[str, Any]:
    """The generic plan of `query` (what a pooled connection runs), run with `params`."""
    types = dict.fromkeys(params, "bigint")
    return storage_sql.plan(dsn, schema, query, params, types, generic=True, analyze=True)


def test_a_read_from_the_first_event_looks_each_stream_up_once_and_retention_only_when_set(
    store: EventStore, pool: ReadPool, dsn: str, schema: str
) -> None:
    """sql/read/all_events.sql: the retention rule is a condition on the event row, probed
    only when some stream has retention, so the join to streams is on the key alone and the
    generic plan caches stream rows (Memoize) as a plain join does: about 0.7 ms less per
    1,000 events read (docs/benchmarks.md)."""
    # A store of some size (on a few rows the planner rightly scans and sorts instead).
    streams = [new_stream() for _ in range(100)]
    for stream in streams:
        store.append_to_stream(stream, 0, events(50))
    pool.run(lambda c: c.execute("ANALYZE events, streams", prepare=False))
    query = reader.all_query(False, False, False, open_ended=True)
    params = {"low": 1, "count": 1000}

    plan = _generic_plan(dsn, schema, query, params)
    nodes = list(plan_nodes(plan))
    assert plan["Actual Rows"] == 1000
    assert [n["Cache Key"] for n in nodes if n["Node Type"] == "Memoize"] == ["e.stream_id"]
    (probe,) = [n for n in nodes if n.get("Subplan Name", "").startswith("SubPlan")]
    assert probe["Actual Loops"] == 0, "no stream has retention: no event probes for it"

    store.set_stream_retention(streams[1], max_count=5)
    plan = _generic_plan(dsn, schema, query, params)
    assert plan["Actual Rows"] == 1000
    found = pool.run(lambda c: reader.read_all(c, 0, 200))
    assert [row[0] for row in found] == [*range(1, 51), *range(96, 246)], "45 hidden"


def test_a_covered_page_comes_in_scan_order_and_an_empty_one_still_says_how_far(
    make_store: Callable[..., EventStore], pool: ReadPool, dsn: str, schema: str
) -> None:
    """read_all_covered: a page carries the counter in every row of the same statement
    (sql/read/all_counted.sql, no sort); a read that finds no event asks
    sql/read/all_covered.sql for the counter alone (here: beyond a hard-deleted stream)."""
    store = make_store(enable_hard_deletes=True)
    for _ in range(20):
        store.append_to_stream(new_stream(), 0, events(50))  # 1-1000
    gone = new_stream()
    store.append_to_stream(gone, 0, events(5))  # 1001-1005
    store.delete_stream(gone, 5, hard=True)
    pool.run(lambda c: c.execute("ANALYZE events, streams", prepare=False))

    def covered(start: int, count: int) -> tuple[list[int], int]:
        rows, upto = pool.run(lambda c: reader.read_all_covered(c, start, count))
        return [row[0] for row in rows], upto

    assert covered(1, 300) == (list(range(1, 301)), 300), "a full page: up to its last row"
    assert covered(901, 300) == (list(range(901, 1001)), 1005), "short: up to the counter"
    assert covered(1001, 300) == ([], 1005), "nothing left but a gap: covered all the same"
    assert covered(1006, 300) == ([], 1005), "nothing beyond the counter"

    query = reader._all_query_with("read/all_counted", open_ended=True)
    plan = _generic_plan(dsn, schema, query, {"low": 1, "count": 900})
    assert plan["Actual Rows"] == 900
    assert [n["Node Type"] for n in plan_nodes(plan) if "Sort" in n["Node Type"]] == []


def test_a_partition_of_a_consumer_group_is_read_in_event_order_not_stream_by_stream(
    store: EventStore, pool: ReadPool, dsn: str, schema: str
) -> None:
    """The partition's condition has no statistics: PostgreSQL took it to keep one stream
    in 200 and began from the streams, reading all their events from `low` on and sorting
    them for every page. The partition is now computed in a LATERAL subquery per stream
    (sql/read/all_events.sql): events in order, each stream's partition once (Memoize)."""
    streams = [new_stream() for _ in range(100)]
    for stream in streams:
        store.append_to_stream(stream, 0, events(50))  # 1-5000, stream by stream
    pool.run(lambda c: c.execute("ANALYZE events, streams", prepare=False))
    mine = {s for s in streams if reader.partition_of(s, 4) == 1}

    def page(start: int) -> tuple[list[int], int]:
        rows, upto = pool.run(lambda c: reader.read_all_covered(c, start, 100, partition=(1, 4)))
        assert {row[1] for row in rows} <= mine
        return [row[0] for row in rows], upto

    expected = [i + 1 for i, s in enumerate(s for s in streams for _ in range(50)) if s in mine]
    got, start = [], 1
    for _ in range(100):  # about 13 pages of 100, each covering up to its last row
        ids, upto = page(start)
        got += ids
        if upto >= 5000:
            break
        start = upto + 1
    assert got == expected

    query = reader._all_query_with("read/all_counted", False, False, True, True)
    params = {"low": 1, "count": 100, "partition": 1, "partitions": 4}
    plan = _generic_plan(dsn, schema, query, params)
    nodes = list(plan_nodes(plan))
    assert [n["Node Type"] for n in nodes if "Sort" in n["Node Type"]] == []
    (scan,) = [n for n in nodes if n.get("Index Name") == "events_pkey"]
    # Events are read in order until the page is full: a few hundred, not the 1,250 or so
    # of the partition's streams that the old plan read and sorted for every page.
    assert scan["Actual Rows"] < 1000, scan["Actual Rows"]
    assert any(n["Node Type"] == "Memoize" for n in nodes)


def test_a_read_by_prefix_is_planned_for_its_prefix(
    store: EventStore, pool: ReadPool, dsn: str, schema: str
) -> None:
    """A prefix of most streams is read in event order, a prefix of one stream stream by
    stream: only a plan that knows the prefix can tell, so its pattern is written into the
    statement (storage/reader.py `_with_prefix`); as a parameter, the read pool's generic
    plan read every event of the prefix's streams from `low` on, for every page."""
    for i in range(200):
        store.append_to_stream(f"many-{i}", 0, events(100))  # 1-20000
    store.append_to_stream("rare_1", 0, events(50))  # 20001-20050
    pool.run(lambda c: c.execute("ANALYZE events, streams", prepare=False))

    for _ in range(6):  # more than psycopg's threshold: still not prepared
        rows, upto = pool.run(lambda c: reader.read_all_covered(c, 1, 100, stream_prefix="many-"))
        assert ([r[0] for r in rows], upto) == (list(range(1, 101)), 100)
        # "_" and "%" are matched as themselves.
        found = pool.run(lambda c: reader.read_all(c, 0, 100, stream_prefix="rare_"))
        assert [r[0] for r in found] == list(range(20001, 20051))
        assert pool.run(lambda c: reader.read_all(c, 0, 100, stream_prefix="rare%")) == []
    prepared = pool.run(
        lambda c: c.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%LIKE%'",
            prepare=False,
        ).fetchone()
    )
    assert prepared == (0,)

    query = reader._all_query_with("read/all_counted", False, True, False, True)

    def events_read(prefix: str) -> int:
        """Events the pool's plan read in event order (0: it began from the streams)."""
        text = pool.run(lambda c: reader._with_prefix(query, c, prefix))
        plan = _generic_plan(dsn, schema, text, {"low": 1, "count": 100})
        return sum(
            n["Actual Rows"]
            for n in plan_nodes(plan)
            if n["Node Type"] == "Index Scan" and n.get("Index Name") == "events_pkey"
        )

    assert 100 <= events_read("many-") < 1000
    assert events_read("rare_") == 0
