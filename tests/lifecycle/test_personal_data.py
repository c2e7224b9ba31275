"""Personal data: encryption per data subject and forgetting (crypto-shredding).

API.md part 3, "Personal data". Every test uses the real PostgreSQL; a second store instance
on the same schema stands for another process.
"""

from __future__ import annotations

import base64
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from support.keystore import MemoryKeyStore

from eventstore_actors import (
    ANY_VERSION,
    FORGOTTEN,
    ConfigError,
    DuplicateEventError,
    Encryption,
    EventData,
    Events,
    EventStore,
    EventStoreError,
    KeyStore,
    SerializationError,
    SnapshotData,
    SubjectForgottenError,
    Subscribed,
    admin,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def _encrypted(
    make_store: Callable[..., EventStore], key: bytes = KEY, **options: Any
) -> EventStore:
    return make_store(encryption=Encryption(master_key=key), **options)


def _raw(dsn: str, schema: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        return conn.execute(query, params).fetchall()


def _poll(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


# Encryption ---------------------------------------------------------------------------------


def test_data_with_a_subject_is_stored_encrypted_and_reads_back(
    make_store: Callable[..., EventStore], dsn: str, schema: str
) -> None:
    store = _encrypted(make_store)
    store.append_to_stream(
        "person-1",
        ANY_VERSION,
        [
            EventData({"name": "Alice Secret"}, "Named", subject="alice", metadata={"m": 1}),
            EventData({"plain": "visible"}, "Plain"),
        ],
    )
    stored = _raw(dsn, schema, "SELECT data, subject, metadata FROM events ORDER BY event_id")
    assert b"Alice Secret" not in bytes(stored[0][0])
    assert stored[0][1] == "alice"
    assert b'"m"' in bytes(stored[0][2])  # metadata stays in clear
    assert b"visible" in bytes(stored[1][0]) and stored[1][1] is None
    assert _raw(dsn, schema, "SELECT count(*) FROM data_keys")[0][0] == 1
    events = store.read_stream_forward("person-1")
    assert events[0].data == {"name": "Alice Secret"}
    assert events[0].subject == "alice" and events[0].forgotten is False
    assert events[1].subject is None and events[1].forgotten is False
    # A second store (another process) with the same master key reads it too.
    other = _encrypted(make_store)
    assert other.read_all_streams_forward()[0].data == {"name": "Alice Secret"}


def test_subject_without_encryption_is_a_config_error_before_writing(
    store: EventStore, dsn: str, schema: str
) -> None:
    with pytest.raises(ConfigError):
        store.append_to_stream("s", ANY_VERSION, [EventData({"a": 1}, "A", subject="bob")])
    with pytest.raises(ConfigError):
        store.record_snapshot(SnapshotData("src", 1, "T", {"a": 1}, subject="bob"))
    assert _raw(dsn, schema, "SELECT count(*) FROM events")[0][0] == 0
    assert _raw(dsn, schema, "SELECT count(*) FROM snapshots")[0][0] == 0


def test_store_without_encryption_never_returns_ciphertext(
    make_store: Callable[..., EventStore],
) -> None:
    _encrypted(make_store).append_to_stream(
        "s", ANY_VERSION, [EventData({"a": 1}, "A", subject="carol")]
    )
    plain = make_store()
    with pytest.raises(
        EventStoreError, match=r"runs without encryption \(start it with encryption="
    ):
        plain.read_stream_forward("s")


def test_master_key_of_wrong_length_is_a_config_error_at_start(
    make_store: Callable[..., EventStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="32 bytes"):
        make_store(encryption=Encryption(master_key=b"short"))
    with pytest.raises(ConfigError, match="32 bytes"):
        make_store(encryption=Encryption(master_key=lambda: b"x" * 31))
    monkeypatch.delenv("EVENTSTORE_MASTER_KEY", raising=False)
    with pytest.raises(ConfigError, match="EVENTSTORE_MASTER_KEY"):
        make_store(encryption=Encryption())
    monkeypatch.setenv("EVENTSTORE_MASTER_KEY", "not base64!!")
    with pytest.raises(ConfigError, match="base64"):
        make_store(encryption=Encryption())
    with pytest.raises(ConfigError):
        make_store(encryption="yes")


def test_master_key_from_the_environment(
    make_store: Callable[..., EventStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTSTORE_MASTER_KEY", base64.b64encode(KEY).decode())
    store = make_store(encryption=Encryption())
    store.append_to_stream("s", ANY_VERSION, [EventData({"a": 1}, "A", subject="dan")])
    # The same key given directly reads it: the environment's key was used.
    assert _encrypted(make_store).read_stream_forward("s")[0].data == {"a": 1}


def test_a_master_key_that_cannot_unwrap_raises_on_read(
    make_store: Callable[..., EventStore],
) -> None:
    # Started while no data key was stored (a master key is checked at start against the
    # keys there are: tests/lifecycle/test_master_key_check.py).
    wrong = _encrypted(make_store, OTHER_KEY)
    _encrypted(make_store).append_to_stream(
        "s", ANY_VERSION, [EventData({"secret": "x-secret-x"}, "A", subject="erin")]
    )
    with pytest.raises(EventStoreError) as caught:
        wrong.read_stream_forward("s")
    assert "x-secret-x" not in str(caught.value) and "erin" not in str(caught.value)
    with pytest.raises(EventStoreError):
        wrong.read_all_streams_forward()


def test_key_store_keeps_the_keys_instead_of_the_schema(
    make_store: Callable[..., EventStore], dsn: str, schema: str
) -> None:
    keys = MemoryKeyStore()
    assert isinstance(keys, KeyStore)
    store = make_store(encryption=Encryption(key_store=keys))
    store.append_to_stream("s", ANY_VERSION, [EventData({"a": 1}, "A", subject="fay")])
    assert set(keys.keys) == {"fay"}
    assert _raw(dsn, schema, "SELECT count(*) FROM data_keys")[0][0] == 0
    assert store.read_stream_forward("s")[0].data == {"a": 1}
    assert store.forget_subject("fay") == 1
    assert keys.deleted == ["fay"] and "fay" not in keys.keys
    event = store.read_stream_forward("s")[0]
    assert event.data is FORGOTTEN and event.forgotten


def test_snapshots_with_a_subject(
    make_store: Callable[..., EventStore], dsn: str, schema: str
) -> None:
    store = _encrypted(make_store)
    store.record_snapshot(
        SnapshotData("acct-1", 3, "Account", {"owner": "Gus Private"}, subject="gus")
    )
    assert b"Gus Private" not in bytes(_raw(dsn, schema, "SELECT data FROM snapshots")[0][0])
    snap = store.read_snapshot("acct-1")
    assert snap.data == {"owner": "Gus Private"} and snap.subject == "gus"
    store.forget_subject("gus")
    snap = store.read_snapshot("acct-1")
    assert snap.data is FORGOTTEN and snap.source_version == 3
    with pytest.raises(SubjectForgottenError):
        store.record_snapshot(SnapshotData("acct-1", 4, "Account", {"owner": "x"}, subject="gus"))
    assert _raw(dsn, schema, "SELECT source_version FROM snapshots")[0][0] == 3


def test_a_store_without_encryption_reads_a_subjects_snapshot_as_reads_do(
    make_store: Callable[..., EventStore],
) -> None:
    """The snapshot read takes the reads' own step (encryption.open_stored): never the
    ciphertext, the same hint to start with encryption; forgotten reads as FORGOTTEN."""
    _encrypted(make_store).record_snapshot(
        SnapshotData("acct-2", 1, "Account", {"owner": "Hal Private"}, subject="hal")
    )
    plain = make_store()
    with pytest.raises(SerializationError, match=r"runs without encryption \(start it with"):
        plain.read_snapshot("acct-2")
    plain.forget_subject("hal")
    assert plain.read_snapshot("acct-2").data is FORGOTTEN


# Idempotency ----------------------------------------------------------------------------------


def test_idempotent_retry_of_an_encrypted_event(make_store: Callable[..., EventStore]) -> None:
    store = _encrypted(make_store)
    event_uuid = uuid.uuid4()
    first = store.append_to_stream(
        "s", ANY_VERSION, [EventData({"a": 1}, "A", subject="hal", event_uuid=event_uuid)]
    )
    again = store.append_to_stream(
        "s", ANY_VERSION, [EventData({"a": 1}, "A", subject="hal", event_uuid=event_uuid)]
    )
    assert again == first
    assert len(store.read_stream_forward("s")) == 1
    with pytest.raises(DuplicateEventError):
        store.append_to_stream(
            "s", ANY_VERSION, [EventData({"a": 2}, "A", subject="hal", event_uuid=event_uuid)]
        )
    # A second instance (its own key cache) recognises the retry too.
    other = _encrypted(make_store)
    assert (
        other.append_to_stream(
            "s", ANY_VERSION, [EventData({"a": 1}, "A", subject="hal", event_uuid=event_uuid)]
        )
        == first
    )


# Forgetting -----------------------------------------------------------------------------------


def test_forget_subject_every_read_path(
    make_store: Callable[..., EventStore], dsn: str, schema: str
) -> None:
    store = _encrypted(make_store)
    store.append_to_stream(
        "person-9",
        ANY_VERSION,
        [
            EventData({"n": 1}, "A", subject="ivy"),
            EventData({"n": 2}, "B"),
            EventData({"n": 3}, "C", subject="ivy"),
        ],
    )
    store.append_to_stream("other", ANY_VERSION, [EventData({"n": 4}, "D", subject="jon")])
    before = store.read_all_streams_forward()
    assert store.forget_subject("ivy") == 2
    assert store.is_forgotten("ivy") and not store.is_forgotten("jon")
    assert store.forget_subject("ivy") == 0  # a second call
    assert store.forget_subject("nobody-known") == 0
    assert store.is_forgotten("nobody-known")

    def check(events: list[Any]) -> None:
        assert events
        by_id = {e.event_id: e for e in before}
        for new in events:
            old = by_id[new.event_id]
            assert (new.stream_uuid, new.stream_version, new.event_type) == (
                old.stream_uuid,
                old.stream_version,
                old.event_type,
            )
            if old.subject == "ivy":
                assert new.data is FORGOTTEN and new.forgotten and new.subject == "ivy"
            else:
                assert new.data == old.data and not new.forgotten

    check(store.read_stream_forward("person-9") + store.read_stream_forward("other"))
    check(store.read_stream_backward("person-9"))
    check(store.read_all_streams_forward())
    check(store.read_all_streams_backward())
    check(list(store.stream_forward("person-9", read_batch_size=1)))
    check(list(store.stream_all_forward(read_batch_size=2)))
    # Nothing was rewritten: the ciphertext is still there, the key is gone.
    assert _raw(dsn, schema, "SELECT count(*) FROM events WHERE subject = 'ivy'")[0][0] == 2
    assert _raw(dsn, schema, "SELECT subject FROM data_keys") == [("jon",)]
    # Later writes naming the subject are refused, nothing written.
    with pytest.raises(SubjectForgottenError) as caught:
        store.append_to_stream("person-9", ANY_VERSION, [EventData({"n": 5}, "E", subject="ivy")])
    assert "ivy" not in str(caught.value)
    assert len(store.read_stream_forward("person-9")) == 3
    # Even through another instance that had the key cached, and in a batch of several.
    other = _encrypted(make_store)
    with pytest.raises(SubjectForgottenError):
        other.append_to_stream(
            "person-9",
            ANY_VERSION,
            [EventData({"n": 6}, "E"), EventData({"n": 7}, "E", subject="ivy")],
        )
    assert len(store.read_stream_forward("person-9")) == 3


def test_forget_evicts_another_instance_before_returning(
    make_store: Callable[..., EventStore],
) -> None:
    first = _encrypted(make_store)
    second = _encrypted(make_store)  # stands for another process
    first.append_to_stream("s", ANY_VERSION, [EventData({"a": 1}, "A", subject="kim")])
    assert second.read_stream_forward("s")[0].data == {"a": 1}
    keyring = second.settings.serializer.keyring  # type: ignore[attr-defined]
    assert keyring.cached("kim")
    assert first.forget_subject("kim") == 1
    # No wait: the very next read of the other instance already yields FORGOTTEN.
    event = second.read_stream_forward("s")[0]
    assert event.data is FORGOTTEN and event.forgotten
    assert not keyring.cached("kim")
    # The forgetting instance's own cache is empty synchronously.
    assert not first.settings.serializer.keyring.cached("kim")  # type: ignore[attr-defined]


def test_forget_notification_empties_other_caches_without_a_read(
    make_store: Callable[..., EventStore],
) -> None:
    first = _encrypted(make_store)
    second = _encrypted(make_store)
    second.append_to_stream("s", ANY_VERSION, [EventData({"a": 1}, "A", subject="lee")])
    keyring = second.settings.serializer.keyring  # type: ignore[attr-defined]
    assert keyring.cached("lee")
    first.forget_subject("lee")
    assert _poll(lambda: not keyring.cached("lee"))


def test_subscriptions_live_and_catching_up_yield_forgotten(
    make_store: Callable[..., EventStore],
) -> None:
    store = _encrypted(make_store)
    other = _encrypted(make_store)  # another process
    store.append_to_stream("s", ANY_VERSION, [EventData({"a": 1}, "A", subject="max")])
    store.forget_subject("max")
    received: queue.Queue[Any] = queue.Queue()

    class Subscriber:
        def tell(self, message: Any) -> None:
            received.put(message)

    sub = store.subscribe_to_all_streams("proj", Subscriber(), start_from="origin")

    def next_events() -> list[Any]:
        message = received.get(timeout=10)
        while not isinstance(message, Events):
            assert isinstance(message, Subscribed)
            message = received.get(timeout=10)
        store.ack(sub, message.events[-1])
        return list(message.events)

    [caught_up] = next_events()
    assert caught_up.data is FORGOTTEN and caught_up.forgotten and caught_up.event_id == 1
    store.append_to_stream("s", ANY_VERSION, [EventData({"b": 2}, "B", subject="ned")])
    [live] = next_events()
    assert live.data == {"b": 2} and not live.forgotten
    other.forget_subject("ned")
    store.append_to_stream("s", ANY_VERSION, [EventData({"d": 4}, "D")])
    [plain] = next_events()
    assert plain.data == {"d": 4}
    # A second subscription catching up later sees both forgotten, in place.
    sub2 = other.subscribe_to_all_streams("proj2", Subscriber(), start_from="origin")
    seen: list[Any] = []
    while len(seen) < 3:
        message = received.get(timeout=10)
        if isinstance(message, Events):
            seen.extend(message.events)
            other.ack(sub2, message.events[-1])
    assert [e.forgotten for e in seen] == [True, True, False]
    assert [e.event_id for e in seen] == [1, 2, 3]


def test_nothing_about_a_subject_in_logs_or_messages(
    make_store: Callable[..., EventStore], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="eventstore_actors")
    secret_subject = "subject-PII-olga@example.com"
    store = _encrypted(make_store)
    store.append_to_stream(
        "s", ANY_VERSION, [EventData({"card": "4111-PAYLOAD"}, "A", subject=secret_subject)]
    )
    store.read_stream_forward("s")
    store.forget_subject(secret_subject)
    store.read_all_streams_forward()
    errors: list[str] = []
    for call in (
        lambda: store.append_to_stream(
            "s", ANY_VERSION, [EventData({"card": "4111-PAYLOAD"}, "A", subject=secret_subject)]
        ),
        lambda: store.record_snapshot(SnapshotData("x", 1, "T", {"a": 1}, subject=secret_subject)),
        lambda: _encrypted(make_store, OTHER_KEY).append_to_stream(
            "t", ANY_VERSION, [EventData({"a": 1}, "A", subject="other-subject-PII")]
        ),
    ):
        try:
            call()
        except EventStoreError as exc:
            errors.append(str(exc))
    assert len(errors) == 2
    text = caplog.text + "\n".join(errors)
    for secret in (secret_subject, "4111-PAYLOAD", base64.b64encode(KEY).decode(), KEY.hex()):
        assert secret not in text


def test_forget_bad_input(make_store: Callable[..., EventStore]) -> None:
    store = _encrypted(make_store)
    for bad in (None, "", 12, b"x"):
        with pytest.raises((TypeError, ValueError)):
            store.forget_subject(bad)  # type: ignore[arg-type]
        with pytest.raises((TypeError, ValueError)):
            store.is_forgotten(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        store.forget_subject("x" * 2000)
    with pytest.raises((TypeError, ValueError)):
        store.append_to_stream("s", ANY_VERSION, [EventData({"a": 1}, "A", subject="")])


def test_concurrent_appends_and_forget_never_leave_a_readable_event(
    make_store: Callable[..., EventStore],
) -> None:
    """An append racing with forget either commits before it (counted, then forgotten) or
    raises SubjectForgottenError: never an event of a forgotten subject written after."""
    store = _encrypted(make_store)
    store.append_to_stream("s", ANY_VERSION, [EventData({"i": 0}, "A", subject="pat")])
    written: list[int] = []
    stop = threading.Event()

    def appender() -> None:
        i = 1
        while not stop.is_set():
            try:
                store.append_to_stream("s", ANY_VERSION, [EventData({"i": i}, "A", subject="pat")])
                written.append(i)
            except SubjectForgottenError:
                return
            i += 1

    thread = threading.Thread(target=appender)
    thread.start()
    assert _poll(lambda: len(written) >= 3)
    count = store.forget_subject("pat")
    thread.join(timeout=10)
    stop.set()
    events = store.read_stream_forward("s")
    assert count == len(events) == len(written) + 1
    assert all(e.forgotten for e in events)


# Master key rotation --------------------------------------------------------------------------


def test_rotate_master_key_rewraps_keys_without_touching_events(
    make_store: Callable[..., EventStore], dsn: str, schema: str
) -> None:
    store = _encrypted(make_store)
    for subject in ("quin", "rob"):
        store.append_to_stream(
            "s", ANY_VERSION, [EventData({"who": subject}, "A", subject=subject)]
        )
    events_before = _raw(dsn, schema, "SELECT event_id, data FROM events ORDER BY event_id")
    keys_before = _raw(dsn, schema, "SELECT subject, wrapped_key FROM data_keys ORDER BY subject")
    with pytest.raises(ConfigError):
        admin.rotate_master_key(dsn, schema, old=KEY, new=b"short")
    with pytest.raises(EventStoreError):
        admin.rotate_master_key(dsn, schema, old=OTHER_KEY, new=OTHER_KEY)
    assert (
        _raw(dsn, schema, "SELECT subject, wrapped_key FROM data_keys ORDER BY subject")
        == keys_before
    )
    assert admin.rotate_master_key(dsn, schema, old=KEY, new=OTHER_KEY) == 2
    assert _raw(dsn, schema, "SELECT event_id, data FROM events ORDER BY event_id") == events_before
    keys_after = _raw(dsn, schema, "SELECT subject, wrapped_key FROM data_keys ORDER BY subject")
    assert [k[0] for k in keys_after] == ["quin", "rob"]
    assert all(a[1] != b[1] for a, b in zip(keys_before, keys_after, strict=True))
    rotated = _encrypted(make_store, OTHER_KEY)
    assert [e.data for e in rotated.read_stream_forward("s")] == [{"who": "quin"}, {"who": "rob"}]
    with pytest.raises(EventStoreError):
        _encrypted(make_store, KEY).read_stream_forward("s")


def test_cli_rotates_the_master_key_from_the_environment(
    make_store: Callable[..., EventStore],
    dsn: str,
    schema: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from eventstore_actors.cli import main

    _encrypted(make_store).append_to_stream(
        "s", ANY_VERSION, [EventData({"a": 1}, "A", subject="sam")]
    )
    monkeypatch.setenv("EVENTSTORE_MASTER_KEY", base64.b64encode(KEY).decode())
    monkeypatch.delenv("EVENTSTORE_NEW_MASTER_KEY", raising=False)
    assert main(["rotate-master-key", "--dsn", dsn, "--schema", schema]) == 1
    assert "EVENTSTORE_NEW_MASTER_KEY" in capsys.readouterr().err
    monkeypatch.setenv("EVENTSTORE_NEW_MASTER_KEY", base64.b64encode(OTHER_KEY).decode())
    assert main(["rotate-master-key", "--dsn", dsn, "--schema", schema]) == 0
    out, err = capsys.readouterr()
    assert "1 data key(s) re-wrapped" in out
    assert base64.b64encode(KEY).decode() not in out + err
    # Again: nothing left to re-wrap (the key is already wrapped by the new one).
    assert main(["rotate-master-key", "--dsn", dsn, "--schema", schema]) == 0
    assert "0 data key(s)" in capsys.readouterr().out
    assert _encrypted(make_store, OTHER_KEY).read_stream_forward("s")[0].data == {"a": 1}


def test_status_counts_forgotten_subjects(
    make_store: Callable[..., EventStore], dsn: str, schema: str
) -> None:
    import json

    from eventstore_actors.status import status

    store = _encrypted(make_store)
    store.forget_subject("tom")
    store.forget_subject("uma")
    assert json.loads(status(dsn, schema, as_json=True))["forgotten_subjects"] == 2
    assert "2 forgotten data subjects" in status(dsn, schema)


async def _aio_forget(dsn: str, schema: str) -> tuple[int, bool, Any]:
    from eventstore_actors.aio import AsyncEventStore

    store = await AsyncEventStore.start(dsn, schema=schema, encryption=Encryption(master_key=KEY))
    try:
        await store.append_to_stream("s", ANY_VERSION, [EventData({"a": 1}, "A", subject="val")])
        count = await store.forget_subject("val")
        return count, await store.is_forgotten("val"), (await store.read_stream_forward("s"))[0]
    finally:
        await store.stop()


def test_asyncio_api(dsn: str, schema: str) -> None:
    import asyncio

    count, forgotten, event = asyncio.run(_aio_forget(dsn, schema))
    assert count == 1 and forgotten and event.data is FORGOTTEN and event.forgotten


def test_eventsourcing_module_never_returns_ciphertext(
    make_store: Callable[..., EventStore], dsn: str, schema: str
) -> None:
    from eventsourcing.persistence import ProgrammingError

    from eventstore_actors.eventsourcing import (
        EventStoreApplicationRecorder,
        EventStoreDatastore,
    )

    _encrypted(make_store).append_to_stream(
        "s", ANY_VERSION, [EventData({"a": 1}, "A", subject="wes"), EventData({"b": 2}, "B")]
    )
    datastore = EventStoreDatastore(dsn, schema, uuid_ids=False)
    try:
        recorder = EventStoreApplicationRecorder(datastore)
        with pytest.raises(ProgrammingError):
            recorder.select_notifications(1, 10)
        [plain] = recorder.select_notifications(2, 10)
        assert plain.state == b'{"b":2}'
    finally:
        datastore.store.stop()
        datastore.pool.close()


def test_appends_in_the_callers_transaction(
    make_store: Callable[..., EventStore], dsn: str, schema: str
) -> None:
    store = _encrypted(make_store)
    with psycopg.connect(dsn) as conn:
        store.append_to_stream(
            "s", ANY_VERSION, [EventData({"a": 1}, "A", subject="xia")], conn=conn
        )
        conn.commit()
        assert store.read_stream_forward("s")[0].data == {"a": 1}
        store.forget_subject("xia")
        with pytest.raises(SubjectForgottenError):
            store.append_to_stream(
                "s", ANY_VERSION, [EventData({"a": 2}, "A", subject="xia")], conn=conn
            )
        # The caller's transaction is still usable, nothing of the refused append in it.
        store.append_to_stream("s", ANY_VERSION, [EventData({"b": 3}, "B")], conn=conn)
        conn.commit()
    events = store.read_stream_forward("s")
    assert [e.forgotten for e in events] == [True, False]


def _forget_without_notice(dsn: str, schema: str, subject: str) -> None:
    """What another process's forget does in the database, its notification not arrived yet."""
    with psycopg.connect(dsn) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        conn.execute("SELECT 1 FROM event_counter WHERE id = 1 FOR UPDATE")
        conn.execute("DELETE FROM data_keys WHERE subject = %s", (subject,))
        conn.execute("INSERT INTO forgotten_subjects (subject) VALUES (%s)", (subject,))


@pytest.mark.parametrize("batch", [1, 3, 100])
def test_the_database_refuses_a_forgotten_subject_whatever_the_cache(
    make_store: Callable[..., EventStore], dsn: str, schema: str, batch: int
) -> None:
    """A store whose cache still holds the key (the forget's notification not yet there)
    writes nothing either: the trigger refuses it, on each append path (one statement,
    the group function with caller-given UUIDs, COPY for large batches, conn=)."""
    store = _encrypted(make_store)
    store.append_to_stream("s", ANY_VERSION, [EventData({"a": 0}, "A", subject="yan")])
    store.record_snapshot(SnapshotData("src", 1, "T", {"a": 0}, subject="yan"))
    keyring = store.settings.serializer.keyring  # type: ignore[attr-defined]
    _forget_without_notice(dsn, schema, "yan")
    assert keyring.cached("yan")
    events = [EventData({"a": i}, "A", subject="yan") for i in range(batch)]
    with pytest.raises(SubjectForgottenError):
        store.append_to_stream("s", ANY_VERSION, events)
    given = [EventData({"a": 1}, "A", subject="yan", event_uuid=uuid.uuid4())]
    with pytest.raises(SubjectForgottenError):
        store.append_to_stream("s", ANY_VERSION, given)
    with psycopg.connect(dsn) as conn, pytest.raises(SubjectForgottenError):
        store.append_to_stream("s", ANY_VERSION, events, conn=conn)
    with pytest.raises(SubjectForgottenError):
        store.record_snapshot(SnapshotData("src", 2, "T", {"a": 2}, subject="yan"))
    assert len(store.read_stream_forward("s")) == 1
    assert store.read_snapshot("src").source_version == 1
    # Reads do not trust the cache either.
    assert store.read_stream_forward("s")[0].data is FORGOTTEN


def test_forgetting_counts_archived_events_and_archived_reads_are_forgotten(
    make_store: Callable[..., EventStore], tmp_path: Path
) -> None:
    """forget_subject counts the subject's events in PostgreSQL and in archive files (each
    once), and reads of the archived range return them FORGOTTEN at their old positions."""
    store = _encrypted(make_store, archive=str(tmp_path))
    store.append_to_stream(
        "person-a",
        ANY_VERSION,
        [EventData({"n": n}, "Named", subject="alice") for n in range(3)]
        + [EventData({"n": 9}, "Plain")],
    )
    assert store.archive(before_event_id=4).events == 3
    store.append_to_stream("person-a", 4, [EventData({"n": 4}, "Named", subject="alice")])
    assert [e.data for e in store.read_stream_forward("person-a")][:3] == [
        {"n": 0},
        {"n": 1},
        {"n": 2},
    ]
    other = _encrypted(make_store)  # another instance, its key cached by a read
    assert [e.data for e in other.read_all_streams_forward()][:1] == [{"n": 0}]
    keyring = other.settings.serializer.keyring  # type: ignore[attr-defined]
    stale = dict(keyring.cache)
    assert "alice" in stale
    assert store.forget_subject("alice") == 4
    assert store.forget_subject("alice") == 0
    # A cache that still holds the key (its notification not handled yet) opens nothing:
    # archived rows carry no flag, it is read with them.
    keyring.cache.update(stale)
    assert all(e.forgotten for e in other.read_all_streams_forward() if e.subject)
    events = store.read_stream_forward("person-a")
    assert [e.stream_version for e in events] == [1, 2, 3, 4, 5]
    assert [e.forgotten for e in events] == [True, True, True, False, True]
    assert all(e.data is FORGOTTEN for e in events if e.forgotten)
    assert events[3].data == {"n": 9}
