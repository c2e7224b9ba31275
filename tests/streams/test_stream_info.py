"""stream_info and paginate_streams.

Ported from the Elixir EventStore suite (test/streams/stream_info_test.exs,
test/streams/paginate_streams_test.exs), with this contract's differences: "$all" is never
listed in pages, and a soft-deleted stream's info shows status "deleted" instead of raising.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from support.factory import make_events, new_stream
from support.storage_sql import bulk_streams, hard_delete, plan, plan_nodes, soft_delete, sql

from eventstore_actors import EventStore, Page, StreamInfo, StreamNotFoundError
from eventstore_actors.storage import stream_info as pages
from eventstore_actors.streams import SORT_FIELDS


def append(store: EventStore, count: int, stream: str | None = None) -> str:
    stream = stream or new_stream()
    store.append_to_stream(stream, 0, make_events(count))
    return stream


def uuids(page: Page[StreamInfo]) -> list[str]:
    return [e.stream_uuid for e in page.entries]


# --- stream_info ---------------------------------------------------------------------------------


def test_stream_info_of_all_on_an_empty_store(store: EventStore) -> None:
    assert store.stream_info("$all") == StreamInfo("$all", 0, None, None, "created")


def test_stream_info_of_created_streams(store: EventStore) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    s1, s2, s3 = append(store, 1), append(store, 2), append(store, 3)
    assert store.stream_info("$all") == StreamInfo("$all", 6, None, None, "created")
    for stream, version in ((s1, 1), (s2, 2), (s3, 3)):
        info = store.stream_info(stream)
        assert (info.stream_uuid, info.stream_version) == (stream, version)
        assert (info.deleted_at, info.status) == (None, "created")
        assert info.created_at is not None and info.created_at.tzinfo is not None
        assert before <= info.created_at <= datetime.now(UTC) + timedelta(seconds=5)
    store.append_to_stream(s1, 1, make_events(2))
    assert store.stream_info(s1).stream_version == 3
    assert store.stream_info("$all").stream_version == 8


def test_stream_info_of_a_missing_stream_raises(store: EventStore) -> None:
    with pytest.raises(StreamNotFoundError) as err:
        store.stream_info("doesnotexist")
    assert err.value.stream_uuid == "doesnotexist"


def test_stream_info_of_soft_and_hard_deleted_streams(
    store: EventStore, dsn: str, schema: str
) -> None:
    s1, s2, s3 = append(store, 1), append(store, 2), append(store, 3)
    soft_delete(dsn, schema, s1)
    hard_delete(dsn, schema, s2)
    info = store.stream_info(s1)  # soft-deleted: shown as deleted, not an error
    assert (info.stream_version, info.status) == (1, "deleted")
    assert info.deleted_at is not None and info.deleted_at.tzinfo is not None
    with pytest.raises(StreamNotFoundError):
        store.stream_info(s2)
    assert store.stream_info(s3).status == "created"
    assert store.stream_info("$all").stream_version == 6  # ids are never reused


# --- paginate_streams ----------------------------------------------------------------------------


def test_paginate_an_empty_store(store: EventStore) -> None:
    assert store.paginate_streams() == Page([], 1, 50, 0, 0)
    assert store.paginate_streams(page_number=3, page_size=2) == Page([], 3, 2, 0, 0)
    assert store.paginate_streams(search="x") == Page([], 1, 50, 0, 0)


def test_paginate_includes_all_created_streams_never_all(store: EventStore) -> None:
    s1, s2, s3 = append(store, 1), append(store, 2), append(store, 3)
    page = store.paginate_streams()
    assert (page.page_number, page.page_size, page.total_entries, page.total_pages) == (1, 50, 3, 1)
    assert uuids(page) == [s1, s2, s3]
    assert [e.stream_version for e in page.entries] == [1, 2, 3]
    assert all(e.status == "created" and e.deleted_at is None for e in page.entries)
    assert page.entries == [store.stream_info(s) for s in (s1, s2, s3)]
    assert store.paginate_streams(search="$all").total_entries == 0


def test_paginate_sorting(store: EventStore, dsn: str, schema: str) -> None:
    s1 = append(store, 3, "b-stream")
    s2 = append(store, 1, "c-stream")
    s3 = append(store, 2, "a-stream")
    soft_delete(dsn, schema, s1)
    with sql(dsn, schema) as conn:  # distinct creation times, not in creation order
        conn.execute(
            "UPDATE streams SET created_at = now() - (CASE stream_uuid WHEN 'b-stream' THEN 1"
            " WHEN 'c-stream' THEN 3 ELSE 2 END || ' minutes')::interval"
        )

    def order(sort_by: str, sort_dir: str = "asc") -> list[str]:
        return uuids(store.paginate_streams(sort_by=sort_by, sort_dir=sort_dir))

    assert order("stream_id") == [s1, s2, s3]
    assert order("stream_id", "desc") == [s3, s2, s1]
    assert order("created_at", "desc") == [s1, s3, s2]
    assert order("created_at") == [s2, s3, s1]
    assert order("stream_uuid") == [s3, s1, s2]
    assert order("stream_uuid", "desc") == [s2, s1, s3]
    assert order("stream_version") == [s2, s3, s1]
    assert order("stream_version", "desc") == [s1, s3, s2]
    assert order("status") == [s2, s3, s1]  # "created" before "deleted"
    assert order("status", "desc") == [s1, s3, s2]  # ties by stream_id, in the direction
    assert order("deleted_at") == [s1, s2, s3]  # not deleted (NULL) last ascending
    assert order("deleted_at", "desc") == [s3, s2, s1]  # and first descending


def test_paginate_searching_by_stream_uuid(store: EventStore) -> None:
    s1 = append(store, 1, "stream-1")
    s2 = append(store, 2, "stream-2")
    s3 = append(store, 3, "Stream-3")
    other = append(store, 1, "other_100%")
    assert uuids(store.paginate_streams(search="stream-1")) == [s1]
    assert uuids(store.paginate_streams(search="stream")) == [s1, s2, s3]
    assert uuids(store.paginate_streams(search="STREAM")) == [s1, s2, s3]  # case-insensitive
    assert uuids(store.paginate_streams(search="eam-")) == [s1, s2, s3]  # a substring
    assert store.paginate_streams(search="stream").total_entries == 3
    # LIKE wildcards are matched literally.
    assert uuids(store.paginate_streams(search="%")) == [other]
    assert uuids(store.paginate_streams(search="_")) == [other]
    assert uuids(store.paginate_streams(search="r_1")) == [other]
    assert uuids(store.paginate_streams(search="stream_1")) == []
    assert uuids(store.paginate_streams(search="\\")) == []
    assert store.paginate_streams(search="nothing") == Page([], 1, 50, 0, 0)
    page = store.paginate_streams(search="stream", page_size=2, page_number=2)
    assert (uuids(page), page.total_entries, page.total_pages) == ([s3], 3, 2)


def test_paginate_paging_through_streams(store: EventStore) -> None:
    streams = [append(store, n) for n in range(1, 7)]
    page1 = store.paginate_streams(page_size=2)
    assert uuids(page1) == streams[:2]
    assert (page1.page_number, page1.page_size, page1.total_entries, page1.total_pages) == (
        1,
        2,
        6,
        3,
    )
    assert store.paginate_streams(page_size=2, page_number=1) == page1
    assert uuids(store.paginate_streams(page_size=2, page_number=2)) == streams[2:4]
    page3 = store.paginate_streams(page_size=2, page_number=3)
    assert (uuids(page3), page3.total_pages) == (streams[4:], 3)
    page4 = store.paginate_streams(page_size=2, page_number=4)  # past the end: empty
    assert (page4.entries, page4.total_entries, page4.total_pages) == ([], 6, 3)
    page = store.paginate_streams(page_size=4, page_number=2)
    assert (uuids(page), page.total_pages) == (streams[4:], 2)
    assert store.paginate_streams(page_size=5, page_number=2**62).entries == []
    assert store.paginate_streams(page_size=2**62, page_number=2**62).total_entries == 6


def test_paginate_lists_soft_deleted_streams_not_hard_deleted_ones(
    store: EventStore, dsn: str, schema: str
) -> None:
    s1, s2, s3 = append(store, 1), append(store, 2), append(store, 3)
    soft_delete(dsn, schema, s1)
    hard_delete(dsn, schema, s2)
    page = store.paginate_streams()
    assert uuids(page) == [s1, s3]
    assert [e.status for e in page.entries] == ["deleted", "created"]
    assert page.entries[0].deleted_at is not None
    assert (page.total_entries, page.total_pages) == (2, 1)


@pytest.mark.parametrize("sort_by", SORT_FIELDS)
@pytest.mark.parametrize("descending", [False, True], ids=["asc", "desc"])
def test_a_page_is_an_index_range_scan(
    store: EventStore, dsn: str, schema: str, sort_by: str, descending: bool
) -> None:
    """On 5,000 streams (ANALYZEd, enable_seqscan as it is), a page of 50 in every order is
    read from an index in that order and cut by the limit: no sort below the limit, so it
    does not grow with the number of streams (the count is a separate aggregate)."""
    bulk_streams(dsn, schema, streams=5000, per_stream=1)
    with sql(dsn, schema) as conn:
        conn.execute("UPDATE streams SET deleted_at = now() WHERE stream_id % 10 = 0")
        conn.execute("VACUUM ANALYZE streams")
    types = {"limit": "bigint", "offset": "bigint"}
    params = {"limit": 50, "offset": 100}
    for generic in (False, True):
        root = plan(
            dsn,
            schema,
            pages.page_query(sort_by, descending, False),
            params,
            types,
            generic=generic,
        )
        limits = [n for n in plan_nodes(root) if n["Node Type"] == "Limit"]
        assert len(limits) == 1
        below = list(plan_nodes(limits[0]))
        kinds = [n["Node Type"] for n in below]
        assert "Sort" not in kinds and "Seq Scan" not in kinds, (sort_by, kinds)
        assert any(n["Node Type"] in ("Index Scan", "Index Only Scan") for n in below), kinds
    page = store.paginate_streams(sort_by=sort_by, sort_dir="desc" if descending else "asc")
    assert (len(page.entries), page.total_entries, page.total_pages) == (50, 5000, 100)
