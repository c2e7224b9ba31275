"""The read pool's prepared statements get one generic plan per connection
(`storage.pool.GENERIC_PLANS`): PostgreSQL's default chose a custom plan at every execution
of the store's reads, planning them anew each time (a backward read of the last events cost
twice raw's)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from support import events
from support.factory import new_stream

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
