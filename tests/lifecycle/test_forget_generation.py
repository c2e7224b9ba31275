"""Personal data: the forget generation (schema v5) that lets reads check forgetting once per
statement instead of once per row (lifecycle/encryption.py, Keyring).

The safety rule is unchanged (API.md part 3): once forget_subject has returned, no process
decrypts that subject's events, whatever its key cache holds. Every test uses the real
PostgreSQL; a second store instance on the same schema stands for another process.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from support.keystore import MemoryKeyStore

from eventstore_actors import (
    ANY_VERSION,
    FORGOTTEN,
    Encryption,
    EventData,
    EventStore,
    EventStoreError,
    admin,
)
from eventstore_actors.storage import reader

KEY = bytes(range(32))


def _generation(dsn: str, schema: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        row = conn.execute("SELECT generation FROM forget_generation WHERE id = 1").fetchone()
    assert row is not None
    return int(row[0])


def _keyring(store: EventStore) -> Any:
    return store.settings.serializer.keyring  # type: ignore[attr-defined]


def _plans() -> dict[str, tuple[str, dict[str, Any]]]:
    stream = {"stream_uuid": "s", "start": 1, "count": 100, "live_only": False}
    types = {**stream, "event_types": ["A"]}
    every = {"low": 1, "high": reader.MAX_POSITION, "count": 100}
    return {
        "stream forward": (reader.stream_query(False), stream),
        "stream backward": (reader.stream_query(True), stream),
        "stream by type": (reader.stream_query(False, True), types),
        "all forward": (reader.all_query(False, False, False), every),
        "all backward": (reader.all_query(True, False, False), every),
        "all covered": (reader._all_query_with("read/all_covered"), every),
        "all counted": (reader._all_query_with("read/all_counted", open_ended=True), every),
        "all forward from the first": (reader.all_query(False, False, False, False, True), every),
        "stream covered": (reader._stream_covered_query(), stream),
    }


@pytest.mark.parametrize("name", sorted(_plans()))
def test_reads_check_forgetting_once_per_statement(
    make_store: Callable[..., EventStore], dsn: str, schema: str, name: str
) -> None:
    """No probe of forgotten_subjects per row: the generation is one InitPlan."""
    store = make_store(encryption=Encryption(master_key=KEY))
    events = [EventData({"i": i}, "A", subject=f"p{i % 3}") for i in range(20)]
    store.append_to_stream("s", ANY_VERSION, events)
    query, params = _plans()[name]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        row = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + query, params).fetchone()
    assert row is not None
    plan = row[0][0]["Plan"]
    text = json.dumps(plan)
    assert "forgotten_subjects" not in text

    def generation_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
        found = [node] if node.get("Relation Name") == "forget_generation" else []
        for child in node.get("Plans", []):
            found += generation_nodes(child)
        return found

    nodes = generation_nodes(plan)
    assert nodes and all(n["Actual Loops"] <= 1 for n in nodes)


def test_every_newly_forgotten_subject_draws_a_new_generation(
    make_store: Callable[..., EventStore], dsn: str, schema: str
) -> None:
    store = make_store(encryption=Encryption(master_key=KEY))
    store.append_to_stream("s", ANY_VERSION, [EventData({"a": 1}, "A", subject="ann")])
    seen = [_generation(dsn, schema)]
    assert store.forget_subject("ann") == 1
    seen.append(_generation(dsn, schema))
    assert store.forget_subject("ann") == 0  # already forgotten: nothing changes
    assert _generation(dsn, schema) == seen[-1]
    store.forget_subject("nobody")  # unknown, but newly forgotten
    seen.append(_generation(dsn, schema))
    # Whoever marks a subject forgotten (a release-4 process, by hand) draws one too.
    with psycopg.connect(dsn) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        conn.execute("INSERT INTO forgotten_subjects (subject) VALUES ('by-hand')")
    seen.append(_generation(dsn, schema))
    admin.reset(dsn, schema)  # keys and forgotten subjects gone: caches must drop
    seen.append(_generation(dsn, schema))
    assert len(set(seen)) == len(seen)
    assert all(0 <= g < 2**62 for g in seen)


@pytest.mark.parametrize("keys", ["master key", "key store"])
def test_a_cache_that_still_holds_the_key_opens_nothing_after_a_forget(
    make_store: Callable[..., EventStore], keys: str
) -> None:
    shared = MemoryKeyStore()

    def encryption() -> Encryption:
        if keys == "key store":
            return Encryption(key_store=shared)
        return Encryption(master_key=KEY)

    first = make_store(encryption=encryption())
    second = make_store(encryption=encryption())  # stands for another process
    first.append_to_stream(
        "s",
        ANY_VERSION,
        [EventData({"a": 1}, "A", subject="kim"), EventData({"b": 2}, "B", subject="lou")],
    )
    assert [e.data for e in second.read_stream_forward("s")] == [{"a": 1}, {"b": 2}]
    keyring = _keyring(second)
    assert keyring.cached("kim")
    generation, entries, older = keyring.state
    stale = (generation, dict(entries), set(older))
    assert first.forget_subject("kim") == 1
    # Its notification not handled yet, or lost: the cache still holds the key.
    keyring.state = stale
    for events in (
        second.read_stream_forward("s"),
        second.read_stream_backward("s")[::-1],
        second.read_all_streams_forward(),
    ):
        assert [e.forgotten for e in events] == [True, False]
        assert events[0].data is FORGOTTEN and events[1].data == {"b": 2}
    assert not keyring.cached("kim")
    assert keyring.generation != generation


def test_forgetting_another_subject_refetches_keys_and_reads_go_on(
    make_store: Callable[..., EventStore],
) -> None:
    first = make_store(encryption=Encryption(master_key=KEY))
    second = make_store(encryption=Encryption(master_key=KEY))
    first.append_to_stream("s", ANY_VERSION, [EventData({"a": 1}, "A", subject="max")])
    first.append_to_stream("t", ANY_VERSION, [EventData({"a": 2}, "A", subject="ned")])
    assert second.read_stream_forward("s")[0].data == {"a": 1}
    keyring = _keyring(second)
    before = keyring.generation
    first.forget_subject("ned")
    assert second.read_stream_forward("s")[0].data == {"a": 1}
    assert keyring.generation != before and keyring.cached("max")
    event = second.read_stream_forward("t")[0]
    assert event.forgotten and event.data is FORGOTTEN
    assert not keyring.cached("ned")


def test_rows_of_another_generation_fetch_the_key_once_after_their_read(
    make_store: Callable[..., EventStore], dsn: str, schema: str
) -> None:
    """A key cached at generation g opens rows read at g without asking the database. A row
    of another generation fetches the key (after its read: it sees at least the forgets the
    read saw); rows of that generation then use the cache while it holds g's keys."""
    store = make_store(encryption=Encryption(master_key=KEY))
    store.append_to_stream("s", ANY_VERSION, [EventData({"a": 1}, "A", subject="oli")])
    serializer = store.settings.serializer
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        older = reader.read_stream(conn, "s", 1, 10)
        store.forget_subject("someone-else")
        newer = reader.read_stream(conn, "s", 1, 10)
    assert older[0][12] != newer[0][12]
    assert store.read_stream_forward("s")[0].data == {"a": 1}  # cached at the newer one
    keyring = _keyring(store)
    assert keyring.generation == newer[0][12]
    fetched: list[str] = []
    fetch = keyring._fetch

    def counting(subject: str) -> Any:
        fetched.append(subject)
        return fetch(subject)

    keyring._fetch = counting
    assert reader.decode(newer, serializer)[0].data == {"a": 1}
    assert fetched == []
    assert reader.decode(older, serializer)[0].data == {"a": 1}
    assert fetched == ["oli"]  # once: the older generation is now known to be included
    assert reader.decode(older, serializer)[0].data == {"a": 1}
    assert reader.decode(newer, serializer)[0].data == {"a": 1}
    assert fetched == ["oli"]
    # A cache of another generation (a stale one, another timeline) is not used.
    keyring.state = (older[0][12], keyring.state[1], set())
    assert reader.decode(newer, serializer)[0].data == {"a": 1}
    assert fetched == ["oli", "oli"]
    assert keyring.generation == newer[0][12]


def test_a_store_without_encryption_still_never_returns_ciphertext(
    make_store: Callable[..., EventStore],
) -> None:
    sealed = make_store(encryption=Encryption(master_key=KEY))
    sealed.append_to_stream("s", ANY_VERSION, [EventData({"a": 1}, "A", subject="pia")])
    with pytest.raises(EventStoreError):
        make_store().read_stream_forward("s")
