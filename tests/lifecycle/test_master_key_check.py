"""The master key is checked at start against the schema's data keys (API.md part 3,
"Personal data"; lifecycle/masterkey.py): a key that opens none of them is a ConfigError
before anything is written, in every entry point that takes one."""

from __future__ import annotations

import base64
import socket
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from support.keystore import MemoryKeyStore

from eventstore_actors import (
    ANY_VERSION,
    ConfigError,
    Encryption,
    EventData,
    EventStore,
    EventStoreError,
    admin,
)

KEY = bytes(range(32))
NEW_KEY = bytes(range(100, 132))
WRONG_KEY = bytes(range(50, 82))
#: More keys than either half of the sample the start reads (masterkey.SAMPLE, checked).
MANY = 10


def _raw(dsn: str, schema: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        return conn.execute(query).fetchall()


def _stored(dsn: str, schema: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The data keys and the events, as stored."""
    return (
        _raw(dsn, schema, "SELECT subject, wrapped_key, created_at FROM data_keys ORDER BY 1"),
        _raw(dsn, schema, "SELECT event_id, stream_id, data FROM events ORDER BY 1"),
    )


def _with(make_store: Callable[..., EventStore], key: bytes) -> EventStore:
    return make_store(encryption=Encryption(master_key=key))


def _append(store: EventStore, stream: str, subject: str) -> None:
    store.append_to_stream(stream, ANY_VERSION, [EventData({"of": subject}, "A", subject=subject)])


def _secrets(*keys: bytes) -> list[str]:
    return [text for key in keys for text in (base64.b64encode(key).decode(), key.hex())]


def test_a_wrong_master_key_is_refused_at_start_before_anything_is_written(
    make_store: Callable[..., EventStore],
    dsn: str,
    schema: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    right = _with(make_store, KEY)
    _append(right, "a", "subject-a")
    before = _stored(dsn, schema)
    refused: list[str] = []
    monkeypatch.setenv("EVENTSTORE_MASTER_KEY", base64.b64encode(WRONG_KEY).decode())
    for encryption in (
        Encryption(master_key=WRONG_KEY),
        Encryption(master_key=lambda: WRONG_KEY),
        Encryption(),  # from the environment
    ):
        with pytest.raises(ConfigError, match="master key does not open the data keys") as caught:
            make_store(encryption=encryption)
        refused.append(str(caught.value))
    for message in refused:
        assert schema in message and "nothing was written" in message
        for secret in (*_secrets(WRONG_KEY, KEY), "subject-a"):
            assert secret not in message
    assert _stored(dsn, schema) == before
    # The schema is whole: the right key reads, a rotation re-wraps every key.
    assert _with(make_store, KEY).read_stream_forward("a")[0].data == {"of": "subject-a"}
    assert admin.rotate_master_key(dsn, schema, old=KEY, new=NEW_KEY) == 1
    assert _with(make_store, NEW_KEY).read_stream_forward("a")[0].data == {"of": "subject-a"}
    with pytest.raises(ConfigError, match="master key does not open"):
        _with(make_store, KEY)  # the old key, once every key is re-wrapped
    # A KeyStore has no master key: nothing to check.
    make_store(encryption=Encryption(key_store=MemoryKeyStore()))


def test_the_right_master_key_starts_and_reads(
    make_store: Callable[..., EventStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = _with(make_store, KEY)
    for n in range(2 * MANY):
        _append(writer, f"s-{n}", f"subject-{n}")
    monkeypatch.setenv("EVENTSTORE_MASTER_KEY", base64.b64encode(KEY).decode())
    for encryption in (Encryption(master_key=KEY), Encryption()):
        store = make_store(encryption=encryption)
        assert [e.data for e in store.read_all_streams_forward(count=2 * MANY)] == [
            {"of": f"subject-{n}"} for n in range(2 * MANY)
        ]
        _append(store, "later", "subject-later")


def test_an_empty_schema_takes_any_master_key(
    make_store: Callable[..., EventStore], dsn: str, schema: str
) -> None:
    first = _with(make_store, WRONG_KEY)  # no data key yet: nothing to check it against
    _append(first, "a", "subject-a")
    with pytest.raises(ConfigError, match="master key does not open"):
        _with(make_store, KEY)  # the schema's keys are now WRONG_KEY's
    first.forget_subject("subject-a")
    assert _raw(dsn, schema, "SELECT count(*) FROM data_keys") == [(0,)]
    # Only forgotten subjects: no key is left, any master key starts again.
    store = _with(make_store, KEY)
    assert store.read_stream_forward("a")[0].forgotten


def test_keys_left_under_the_old_key_by_a_running_store_do_not_refuse_the_new_key(
    make_store: Callable[..., EventStore], dsn: str, schema: str
) -> None:
    """A store still running with the old key during a rotation creates keys wrapped by it;
    they stay so until the next rotation (docs/personal-data.md). More of them than either
    half of the sample (the first and the last keys by subject: "after-..." sorts first)."""
    old = _with(make_store, KEY)
    for n in range(MANY):
        _append(old, f"before-{n}", f"before-{n}")
    assert admin.rotate_master_key(dsn, schema, old=KEY, new=NEW_KEY) == MANY
    for n in range(MANY):  # still running with the old key
        _append(old, f"after-{n}", f"after-{n}")
    new = _with(make_store, NEW_KEY)  # accepted: the last keys by subject open with it
    assert new.read_stream_forward("before-0")[0].data == {"of": "before-0"}
    with pytest.raises(EventStoreError):  # left under the old key until the next rotation
        new.read_stream_forward("after-0")
    with pytest.raises(ConfigError, match="master key does not open"):
        _with(make_store, WRONG_KEY)  # a third key is still refused
    assert admin.rotate_master_key(dsn, schema, old=KEY, new=NEW_KEY) == MANY
    assert [e.data for e in _with(make_store, NEW_KEY).read_all_streams_forward()] == [
        {"of": f"{when}-{n}"} for when in ("before", "after") for n in range(MANY)
    ]
    from eventstore_actors.lifecycle.masterkey import SAMPLE

    assert SAMPLE < MANY  # the sample's first were all left under KEY, its last all rotated


def test_rotating_from_a_wrong_old_key_is_refused_and_changes_nothing(
    make_store: Callable[..., EventStore], dsn: str, schema: str
) -> None:
    _append(_with(make_store, KEY), "a", "subject-a")
    before = _stored(dsn, schema)
    with pytest.raises(ConfigError, match="neither the old nor the new master key") as caught:
        admin.rotate_master_key(dsn, schema, old=WRONG_KEY, new=NEW_KEY)
    for secret in (*_secrets(WRONG_KEY, NEW_KEY, KEY), "subject-a"):
        assert secret not in str(caught.value)
    assert _stored(dsn, schema) == before


def test_the_eventsourcing_module_refuses_a_wrong_master_key(
    make_store: Callable[..., EventStore], store_env: dict[str, str], schema: str
) -> None:
    pytest.importorskip("eventsourcing")
    from eventsourcing.utils import Environment

    from eventstore_actors import eventsourcing as module

    _append(_with(make_store, KEY), "a", "subject-a")
    env = {**store_env, "EVENTSTORE_SCHEMA": schema, "ORIGINATOR_ID_TYPE": "text"}
    wrong = {**env, "EVENTSTORE_MASTER_KEY": base64.b64encode(WRONG_KEY).decode()}
    with pytest.raises(ConfigError, match="master key does not open"):
        module.Factory(Environment(env=wrong)).close()
    right = module.Factory(
        Environment(env={**env, "EVENTSTORE_MASTER_KEY": base64.b64encode(KEY).decode()})
    )
    try:
        assert b"subject-a" in right.application_recorder().select_events("a")[0].state
    finally:
        right.close()


def test_the_console_command_refuses_a_wrong_master_key(
    make_store: Callable[..., EventStore],
    dsn: str,
    schema: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("uvicorn")
    from eventstore_actors.cli import main

    _append(_with(make_store, KEY), "a", "subject-a")
    monkeypatch.setenv("EVENTSTORE_MASTER_KEY", base64.b64encode(WRONG_KEY).decode())
    with socket.socket() as taken:  # were the store started, serving would fail at once
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert main(["console", "--dsn", dsn, "--schema", schema, "--port", port]) == 1
    err = capsys.readouterr().err
    assert "master key does not open the data keys" in err
    for secret in _secrets(WRONG_KEY, KEY):
        assert secret not in err
