"""An archive target belongs to one store (schema version 7's store_identity, a marker file in
the target): a second schema, or another database's store, given the same directory or fsspec
URL is refused with a ConfigError naming the owner before it writes anything, instead of
replacing and removing the first one's files. A target of the store from before the marker
(its files listed in its manifest) is adopted."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from support import events, fresh_schema

from eventstore_actors import ANY_VERSION, ConfigError, EventStore, admin
from eventstore_actors.lifecycle.archive.owner import MARKER

pytest.importorskip("pyarrow.parquet")
fsspec = pytest.importorskip("fsspec")


@pytest.fixture
def other(dsn: str) -> Iterator[str]:
    """A second store's schema in the same database."""
    with fresh_schema(dsn) as name:
        yield name


def listing(url: str) -> list[str]:
    fs, root = fsspec.core.url_to_fs(url)
    return sorted(str(p).rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False))


def reads(store: EventStore) -> list[tuple[int, str]]:
    return [(e.event_id, e.event_type) for e in store.read_all_streams_forward()]


@pytest.mark.parametrize("kind", ["directory", "fsspec"])
def test_a_second_store_cannot_archive_into_a_target_of_another(
    make_store: Callable[..., EventStore],
    dsn: str,
    schema: str,
    other: str,
    tmp_path: Path,
    kind: str,
) -> None:
    url = str(tmp_path / "shared") if kind == "directory" else f"memory://targets/{schema}"
    first = make_store(archive=url)
    first.append_to_stream("alpha", ANY_VERSION, events(10))
    assert first.archive(before_event_id=11).events == 10
    before, read = listing(url), reads(first)
    assert len(read) == 10
    with EventStore.start(dsn, schema=other, archive=url) as second:
        second.append_to_stream("beta", ANY_VERSION, events(10, start=100))
        with pytest.raises(ConfigError, match=f"belongs to schema '{schema}'"):
            second.archive(before_event_id=11)
        # Nothing written, nothing removed: both stores read all they had.
        assert listing(url) == before and reads(first) == read
        assert len(reads(second)) == 10
        first.append_to_stream("alpha", ANY_VERSION, events(10, start=10))
        with pytest.raises(ConfigError, match="nothing was written"):
            second.archive(before_event_id=5)  # would have removed the first's 11-20
        assert first.archive(before_event_id=21).events == 10
        assert len(reads(first)) == 20
        assert second.archive(before_event_id=11, target=f"{url}-beta").events == 10
        assert len(reads(second)) == 10 and len(reads(first)) == 20
    # The marker names the first store.
    marker = json.loads(first_marker(url))
    assert (marker["schema"], marker["database"]) == (schema, dsn.rsplit("/", 1)[-1])


def first_marker(url: str) -> bytes:
    fs, root = fsspec.core.url_to_fs(url)
    return bytes(fs.cat_file(f"{root.rstrip('/')}/{MARKER}"))


def test_a_target_from_before_the_marker_is_adopted_by_its_own_store_only(
    make_store: Callable[..., EventStore], dsn: str, other: str, tmp_path: Path
) -> None:
    """A target the store archived to before schema version 7 (its files listed in the
    manifest, no marker) is the store's own; another store finds files it does not list
    there and no marker: refused."""
    target = tmp_path / "old"
    store = make_store(archive=str(target))
    store.append_to_stream("alpha", ANY_VERSION, events(4))
    assert store.archive(before_event_id=3).events == 2
    (target / MARKER).unlink(missing_ok=True)  # as a release-6 archive left it
    with EventStore.start(dsn, schema=other, archive=str(target)) as second:
        second.append_to_stream("beta", ANY_VERSION, events(4))
        with pytest.raises(ConfigError, match="does not list"):
            second.archive(before_event_id=3)
        assert not (target / MARKER).exists()
    assert store.archive(before_event_id=5).events == 2
    assert (target / MARKER).exists() and len(reads(store)) == 4


def test_a_copy_of_a_store_sharing_its_identity_cannot_take_its_target(
    make_store: Callable[..., EventStore], dsn: str, schema: str, other: str, tmp_path: Path
) -> None:
    """A restored dump or a copied database keeps the store_id: the marker's database and
    schema tell the copy apart (the copy removed the original's file as a crashed run's)."""
    url = str(tmp_path / "shared")
    first = make_store(archive=url)
    first.append_to_stream("alpha", ANY_VERSION, events(10))
    assert first.archive(before_event_id=11).events == 10
    read = reads(first)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "UPDATE {}.store_identity SET store_id = (SELECT store_id FROM {}.store_identity)"
            ).format(sql.Identifier(other), sql.Identifier(schema))
        )
    with EventStore.start(dsn, schema=other, archive=url) as copy:
        copy.append_to_stream("beta", ANY_VERSION, events(5, start=100))
        with pytest.raises(ConfigError, match="is a copy of that store") as refused:
            copy.archive(before_event_id=3)
        assert "nothing was written" in str(refused.value)
    assert reads(first) == read and len(listing(url)) == 2  # its file and its marker


@pytest.mark.parametrize(
    "marker",
    [
        b"[" * 200_000,  # too deep for the JSON decoder
        b'{"eventstore_actors": "archive target", "store_id": 5, "database": 1, "schema": 2}',
        b'{"eventstore_actors": "archive target", "store_id": null, "database": "d", '
        b'"schema": "s"}',
        b'{"store_id": "x", "database": "d", "schema": "s"}',
    ],
)
def test_a_marker_that_is_not_one_is_refused_as_such(
    make_store: Callable[..., EventStore], tmp_path: Path, marker: bytes
) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / MARKER).write_bytes(marker)
    store = make_store(archive=str(target))
    store.append_to_stream("alpha", ANY_VERSION, events(3))
    with pytest.raises(ConfigError, match="not an eventstore-actors marker"):
        store.archive(before_event_id=4)
    assert sorted(p.name for p in target.iterdir()) == [MARKER] and len(reads(store)) == 3


def test_a_target_of_a_dropped_store_of_the_same_name_says_so(
    dsn: str, other: str, tmp_path: Path
) -> None:
    url = str(tmp_path / "target")
    with EventStore.start(dsn, schema=other, archive=url) as old:
        old.append_to_stream("alpha", ANY_VERSION, events(3))
        assert old.archive(before_event_id=4).events == 3
    admin.drop(dsn, other)
    admin.init(dsn, other)
    with EventStore.start(dsn, schema=other, archive=url) as new:
        new.append_to_stream("alpha", ANY_VERSION, events(3))
        with pytest.raises(ConfigError, match="an earlier store of schema"):
            new.archive(before_event_id=4)
