"""truncate_stream and forget_subject in a store with archive files (API.md part 3, "Retention
and truncation", "Personal data", "Archiving to Parquet"): what they hide or forget in the
files is counted from the files before their change is committed, so a file that cannot be
read raises StoreUnavailableError and changes nothing, and a retry once it is back does the
work and counts it; forget_subject counts the subject's events that reads returned, archived
or not: not those of a hard-deleted stream, nor those hidden by retention. Real PostgreSQL,
real Parquet files."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support import events
from support.keystore import MemoryKeyStore
from support.storage_sql import sql

from eventstore_actors import (
    ANY_VERSION,
    FORGOTTEN,
    Encryption,
    EventData,
    EventStore,
    EventStoreError,
    StoreUnavailableError,
)
from eventstore_actors.lifecycle import forgetting

if TYPE_CHECKING:
    from eventstore_actors.lifecycle.archive.groups import Archived
    from eventstore_actors.storage.archive import ArchivedFile

pytest.importorskip("pyarrow.parquet")

MakeStore = Callable[..., EventStore]
KEY = bytes(range(32))
#: A subject that must appear in no message and no log line.
SECRET = "subject-PII-dave@example.com"


def named(subject: str, *numbers: int) -> list[EventData]:
    return [EventData({"n": n}, "Named", subject=subject) for n in numbers]


@contextmanager
def unreadable(files: list[str]) -> Iterator[None]:
    """The archive files moved away (a storage outage), and back after the block."""
    for f in files:
        os.rename(f, f + ".away")
    try:
        yield
    finally:
        for f in files:
            os.rename(f + ".away", f)


@contextmanager
def scavenger_held(dsn: str, schema: str) -> Iterator[None]:
    """The store's scavenger lock held by another session: hidden rows stay stored."""
    with sql(dsn, schema) as conn:
        key = f"eventstore_actors.scavenger.{schema}"
        conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (key,))
        yield


def versions(store: EventStore, stream: str) -> list[int]:
    return [e.stream_version for e in store.read_stream_forward(stream)]


# A file that cannot be read -----------------------------------------------------------------
def test_truncate_with_an_unreadable_archive_file_changes_nothing(
    make_store: MakeStore, tmp_path: Path
) -> None:
    store = make_store(archive=str(tmp_path))
    store.append_to_stream("a", 0, events(5))  # 1-5
    store.append_to_stream("t", 0, events(5, start=6))  # 6-10
    store.link_to_stream("l", 0, [1, 2, 9])
    files = store.archive(before_event_id=8).files  # t's versions 1-2 and l's first two links

    with unreadable(files):
        for stream in ("t", "l"):
            with pytest.raises(StoreUnavailableError, match=r"archive file .* cannot be read"):
                store.truncate_stream(stream, 3)
            assert store.stream_info(stream).first_version == 1

    assert versions(store, "t") == [1, 2, 3, 4, 5]
    assert store.truncate_stream("t", 3) == 2  # both archived
    assert store.stream_info("t").first_version == 3
    assert versions(store, "t") == [3, 4, 5]
    assert store.truncate_stream("t", 3) == 0
    assert store.truncate_stream("l", 3) == 2  # links to archived events
    assert [e.event_id for e in store.read_stream_forward("l")] == [9]


def test_forget_with_an_unreadable_archive_file_forgets_nothing(
    make_store: MakeStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="eventstore_actors")
    key_store = MemoryKeyStore()
    store = make_store(encryption=Encryption(key_store=key_store), archive=str(tmp_path))
    store.append_to_stream("s", 0, named(SECRET, 0, 1, 2) + events(1))  # 1-4
    files = store.archive(before_event_id=3).files  # 1-2
    store.append_to_stream("s", 4, named(SECRET, 9))  # 5

    with unreadable(files):
        with pytest.raises(StoreUnavailableError, match=r"archive file .* cannot be read") as exc:
            store.forget_subject(SECRET)
        assert isinstance(exc.value, EventStoreError)
        assert "nothing was forgotten" in str(exc.value)
        assert SECRET not in str(exc.value)
        assert not store.is_forgotten(SECRET)
        assert key_store.deleted == []

    assert [e.data for e in store.read_stream_forward("s") if e.subject] == [
        {"n": 0},
        {"n": 1},
        {"n": 2},
        {"n": 9},
    ]
    assert store.forget_subject(SECRET) == 4
    assert store.is_forgotten(SECRET)
    assert key_store.deleted == [SECRET]
    assert store.forget_subject(SECRET) == 0
    assert [e.data is FORGOTTEN for e in store.read_stream_forward("s")] == [
        True,
        True,
        True,
        False,
        True,
    ]
    assert SECRET not in caplog.text


@pytest.mark.parametrize("readable", [True, False])
def test_a_file_archived_while_forget_reads_the_files_is_read_under_the_lock(
    make_store: MakeStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, readable: bool
) -> None:
    """The files are read before the forget's transaction; one listed in between (an archive
    by another process) is read inside it, before the commit: counted once, and when it
    cannot be read nothing is forgotten."""
    key_store = MemoryKeyStore()
    store = make_store(encryption=Encryption(key_store=key_store), archive=str(tmp_path))
    store.append_to_stream("s", 0, named("eve", 1, 2))  # 1-2
    store.archive(before_event_id=3)
    store.append_to_stream("s", 2, named("eve", 3, 4) + events(1))  # 3-5
    read = forgetting._Archived.read
    seen: list[int] = []
    late: list[str] = []

    def archived_meanwhile(self: forgetting._Archived, files: list[ArchivedFile]) -> list[Archived]:
        seen.append(len(files))
        if len(seen) == 1:  # before the transaction: another process archives 3-4 now
            late.extend(store.archive(before_event_id=5).files)
            if not readable:
                os.rename(late[0], late[0] + ".away")
        return read(self, files)

    monkeypatch.setattr(forgetting._Archived, "read", archived_meanwhile)
    if readable:
        assert store.forget_subject("eve") == 4
        assert seen == [1, 2]
        assert key_store.deleted == ["eve"]
        return
    with pytest.raises(StoreUnavailableError, match=r"nothing was forgotten"):
        store.forget_subject("eve")
    assert seen == [1, 2]
    assert not store.is_forgotten("eve")
    assert key_store.deleted == []
    os.rename(late[0] + ".away", late[0])
    assert store.forget_subject("eve") == 4


# What forget_subject counts -------------------------------------------------------------------
def test_forget_counts_no_archived_event_of_a_hard_deleted_stream(
    make_store: MakeStore, tmp_path: Path
) -> None:
    store = make_store(
        encryption=Encryption(master_key=KEY), archive=str(tmp_path), enable_hard_deletes=True
    )
    store.append_to_stream("keep", 0, named("alice", 1, 2))  # 1-2
    store.append_to_stream("gone", 0, named("alice", 3, 4, 5, 6))  # 3-6
    store.append_to_stream("other", 0, events(1))  # 7
    assert store.archive(before_event_id=7).events == 6
    store.delete_stream("gone", ANY_VERSION, hard=True)
    store.append_to_stream("gone", 0, named("alice", 8))  # created again: 8
    readable = [e for e in store.read_all_streams_forward() if e.subject == "alice"]
    assert [e.event_id for e in readable] == [1, 2, 8]

    assert store.forget_subject("alice") == 3


def test_forget_counts_no_event_hidden_by_retention_archived_or_not_yet_deleted(
    make_store: MakeStore, dsn: str, schema: str, tmp_path: Path
) -> None:
    store = make_store(encryption=Encryption(master_key=KEY), archive=str(tmp_path))
    store.append_to_stream("p", 0, named("alice", 1, 2, 3, 4))  # 1-4
    store.append_to_stream("q", 0, named("alice", 5, 6, 7, 8))  # 5-8
    store.append_to_stream("other", 0, events(1))  # 9
    assert store.archive(before_event_id=7).events == 6  # p, and q's versions 1-2
    with scavenger_held(dsn, schema):
        assert store.truncate_stream("q", 4) == 3  # 5-6 archived, 7 still in PostgreSQL
        store.set_stream_retention("p", max_count=3)  # 1, archived
        with sql(dsn, schema) as conn:
            assert conn.execute("SELECT count(*) FROM events WHERE event_id = 7").fetchone() == (1,)
        readable = [e for e in store.read_all_streams_forward() if e.subject == "alice"]
        assert [e.event_id for e in readable] == [2, 3, 4, 8]

        assert store.forget_subject("alice") == 4
