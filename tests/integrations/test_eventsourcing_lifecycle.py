"""The `eventsourcing` module and the data lifecycle (issue 20, API.md part 3): events with a
data subject read back decrypted, then as FORGOTTEN_STATE at their old positions once the
subject is forgotten; archived events read back from the Parquet files in their places, by
the notification log and by aggregates. Real PostgreSQL, real Parquet files."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

pytest.importorskip("eventsourcing")

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, DomainEvent, event
from eventsourcing.persistence import (
    JSONTranscoder,
    Mapper,
    ProgrammingError,
    StoredEvent,
)
from eventsourcing.utils import Environment, get_topic

from eventstore_actors import ANY_VERSION, FORGOTTEN, Encryption, EventData, EventStore
from eventstore_actors import eventsourcing as module

KEY = bytes(range(32))


@dataclass(frozen=True)
class Registered(DomainEvent):
    """A domain event of the application that the EventStore API wrote (with a subject)."""

    name: str


TOPIC = get_topic(Registered)


@pytest.fixture
def factory_of(store_env: dict[str, str], schema: str) -> Iterator[Callable[..., module.Factory]]:
    built: list[module.Factory] = []

    def make(**env: str) -> module.Factory:
        factory = module.Factory(Environment(env={**store_env, "EVENTSTORE_SCHEMA": schema, **env}))
        built.append(factory)
        return factory

    try:
        yield make
    finally:
        for factory in built:
            factory.close()


def _with_key(factory_of: Callable[..., module.Factory]) -> module.Factory:
    return factory_of(EVENTSTORE_MASTER_KEY=base64.b64encode(KEY).decode())


def _registered(name: str, subject: str | None) -> EventData:
    return EventData({"name": name, "timestamp": "2026-01-01"}, TOPIC, subject=subject)


# Personal data ------------------------------------------------------------------------------


def test_events_with_a_subject_read_decrypted_then_forgotten_in_place(
    make_store: Callable[..., EventStore], factory_of: Callable[..., module.Factory]
) -> None:
    store = make_store(encryption=Encryption(master_key=KEY))
    person, other = uuid4(), uuid4()
    store.append_to_stream(str(person), ANY_VERSION, [_registered("Ann", "ann")])
    store.append_to_stream(str(other), ANY_VERSION, [_registered("Bob", None)])
    store.append_to_stream(str(person), ANY_VERSION, [_registered("Ann B.", "ann")])
    recorder = _with_key(factory_of).application_recorder()
    before = recorder.select_notifications(1, 10)
    assert [(n.id, n.originator_id, n.originator_version) for n in before] == [
        (1, person, 1),
        (2, other, 1),
        (3, person, 2),
    ]
    assert [json.loads(n.state)["name"] for n in before] == ["Ann", "Bob", "Ann B."]
    assert [e.state for e in recorder.select_events(person)] == [before[0].state, before[2].state]

    assert store.forget_subject("ann") == 2
    after = recorder.select_notifications(1, 10)
    assert [(n.id, n.originator_id, n.originator_version) for n in after] == [
        (n.id, n.originator_id, n.originator_version) for n in before
    ]
    assert [n.state for n in after] == [
        module.FORGOTTEN_STATE,
        before[1].state,
        module.FORGOTTEN_STATE,
    ]
    assert [e.state for e in recorder.select_events(person)] == [module.FORGOTTEN_STATE] * 2
    assert [e.originator_version for e in recorder.select_events(person, gt=1)] == [2]
    assert store.read_stream_forward(str(person))[0].data is FORGOTTEN

    # The library's own mapper turns it into a domain event marked forgotten: a follower
    # that skips such events keeps running.
    mapper: Mapper[UUID] = Mapper(transcoder=JSONTranscoder())
    forgotten = mapper.to_domain_event(after[0])
    assert isinstance(forgotten, Registered)
    assert vars(forgotten) == {"forgotten": True, "originator_id": person, "originator_version": 1}


def test_without_the_master_key_only_forgotten_events_read(
    make_store: Callable[..., EventStore], factory_of: Callable[..., module.Factory]
) -> None:
    """Without EVENTSTORE_MASTER_KEY the module cannot decrypt: never ciphertext, a clear
    error; a forgotten subject's events need no key and read as FORGOTTEN_STATE."""
    store = make_store(encryption=Encryption(master_key=KEY))
    store.append_to_stream("s", ANY_VERSION, [_registered("Cy", "cy"), _registered("Di", "di")])
    recorder = factory_of(ORIGINATOR_ID_TYPE="text").application_recorder()
    with pytest.raises(ProgrammingError, match="EVENTSTORE_MASTER_KEY"):
        recorder.select_events("s")
    store.forget_subject("cy")
    [gone] = recorder.select_notifications(1, 1)
    assert gone.state == module.FORGOTTEN_STATE
    with pytest.raises(ProgrammingError):
        recorder.select_notifications(2, 1)


class SharedKeys:
    """A KeyStore (a KMS stand-in) whose keys every instance shares."""

    keys: dict[str, bytes] = {}

    def get(self, subject: str) -> bytes | None:
        return self.keys.get(subject)

    def create(self, subject: str) -> bytes:
        return self.keys.setdefault(subject, os.urandom(32))

    def delete(self, subject: str) -> None:
        self.keys.pop(subject, None)


def test_a_key_store_named_by_topic_decrypts(
    make_store: Callable[..., EventStore], factory_of: Callable[..., module.Factory]
) -> None:
    store = make_store(encryption=Encryption(key_store=SharedKeys()))
    store.append_to_stream("s", ANY_VERSION, [_registered("Flo", "flo")])
    factory = factory_of(
        ORIGINATOR_ID_TYPE="text", EVENTSTORE_KEY_STORE_TOPIC=get_topic(SharedKeys)
    )
    recorder = factory.application_recorder()
    assert json.loads(recorder.select_events("s")[0].state)["name"] == "Flo"
    store.forget_subject("flo")
    assert recorder.select_events("s")[0].state == module.FORGOTTEN_STATE


def test_a_wrong_master_key_setting_is_refused(
    factory_of: Callable[..., module.Factory],
) -> None:
    from eventstore_actors import ConfigError

    with pytest.raises(ConfigError, match="base64"):
        factory_of(EVENTSTORE_MASTER_KEY="not base64!")
    with pytest.raises(ConfigError, match="32 bytes"):
        factory_of(EVENTSTORE_MASTER_KEY=base64.b64encode(b"short").decode())
    with pytest.raises(ConfigError, match="cannot be resolved"):
        factory_of(EVENTSTORE_KEY_STORE_TOPIC="no_such_module:KeyStore")


# Archives -----------------------------------------------------------------------------------


def _fill(recorder: Any, a: UUID, b: UUID, c: UUID) -> None:
    """Aggregate `a` from version 1, `b` from version 0 (an offset), interleaved; `c` only
    early (archived whole)."""
    for i in range(6):
        recorder.insert_events([StoredEvent(a, i + 1, "ta", b"a%d" % i)])
        recorder.insert_events([StoredEvent(b, i, "tb", b"b%d" % i)])
        if i < 2:
            recorder.insert_events([StoredEvent(c, i + 1, "tc", b"c%d" % i)])


def _reads(recorder: Any, a: UUID, b: UUID, c: UUID) -> dict[str, Any]:
    out: dict[str, Any] = {
        "all": recorder.select_notifications(1, 100),
        "mid": recorder.select_notifications(3, 5),
        "stop": recorder.select_notifications(None, 100, stop=9),
        "after": recorder.select_notifications(4, 3, inclusive_of_start=False),
        "typed": recorder.select_notifications(1, 100, topics=["tb", "tc"]),
        "max": recorder.max_notification_id(),
    }
    for name, key in (("a", a), ("b", b), ("c", c)):
        out[name] = recorder.select_events(key)
        out[name + ">2"] = recorder.select_events(key, gt=2)
        out[name + "<=3"] = recorder.select_events(key, lte=3)
        out[name + "1..4"] = recorder.select_events(key, gt=1, lte=4)
        out[name + "desc"] = recorder.select_events(key, desc=True)
        out[name + "desc2"] = recorder.select_events(key, desc=True, limit=2)
        out[name + "desc<=2"] = recorder.select_events(key, desc=True, lte=2, limit=5)
        out[name + "lim3"] = recorder.select_events(key, limit=3)
    return out


@pytest.mark.parametrize("before", [4, 9, 15, 100])
def test_archived_events_read_back_in_order(
    factory_of: Callable[..., module.Factory], tmp_path: Path, before: int
) -> None:
    pytest.importorskip("pyarrow.parquet")
    factory = factory_of()
    recorder = factory.application_recorder()
    a, b, c = uuid4(), uuid4(), uuid4()
    _fill(recorder, a, b, c)
    expected = _reads(recorder, a, b, c)
    assert len(expected["all"]) == 14 and expected["b"][0].originator_version == 0
    moved = factory.datastore.store.archive(before_event_id=before, target=str(tmp_path))
    assert moved.events == min(before - 1, 14)
    assert _reads(recorder, a, b, c) == expected
    # Another process (no cached offsets, no cached manifest) reads the same.
    assert _reads(factory_of().application_recorder(), a, b, c) == expected
    # Appends carry on after the archived versions, also where the offset is looked up anew.
    factory_of().application_recorder().insert_events([StoredEvent(b, 6, "tb", b"b6")])
    recorder.insert_events([StoredEvent(c, 3, "tc", b"c2")])
    assert [e.originator_version for e in recorder.select_events(b)] == list(range(7))
    assert [e.originator_version for e in recorder.select_events(c)] == [1, 2, 3]


def test_archived_events_hidden_by_retention_stay_hidden(
    factory_of: Callable[..., module.Factory], tmp_path: Path
) -> None:
    pytest.importorskip("pyarrow.parquet")
    factory = factory_of()
    recorder = factory.application_recorder()
    a, b = uuid4(), uuid4()
    recorder.insert_events([StoredEvent(a, v, "t", b"a%d" % v) for v in range(1, 7)])
    recorder.insert_events([StoredEvent(b, 0, "t", b"b0"), StoredEvent(b, 1, "t", b"b1")])
    store = factory.datastore.store
    store.archive(before_event_id=6, target=str(tmp_path))
    store.truncate_stream(str(a), 3)
    assert [e.originator_version for e in recorder.select_events(a)] == [3, 4, 5, 6]
    assert recorder.select_events(a, lte=2) == []
    assert [e.state for e in recorder.select_events(a, desc=True, gt=2)] == [
        b"a6",
        b"a5",
        b"a4",
        b"a3",
    ]
    assert [n.id for n in recorder.select_notifications(1, 10)] == [3, 4, 5, 6, 7, 8]
    assert [e.originator_version for e in recorder.select_events(b)] == [0, 1]


def test_an_application_reads_archived_aggregates_and_notifications(
    factory_of: Callable[..., module.Factory],
    store_env: dict[str, str],
    schema: str,
    tmp_path: Path,
) -> None:
    pytest.importorskip("pyarrow.parquet")
    env = {**store_env, "EVENTSTORE_SCHEMA": schema, "PERSISTENCE_MODULE": module.__name__}
    with Bank(env=env) as bank:
        account = bank.open("Ann")
        for amount in (10, 20, 30):
            bank.credit(account, amount)
        other = bank.open("Bob")
        log = [n.id for n in bank.notification_log.select(start=1, limit=10)]
        bank.factory.datastore.store.archive(before_event_id=4, target=str(tmp_path))  # type: ignore[attr-defined]
    with Bank(env=env) as again:
        assert again.repository.get(account).balance == 60
        assert again.repository.get(account, version=2).balance == 10
        assert again.repository.get(other).owner == "Bob"
        assert [n.id for n in again.notification_log.select(start=1, limit=10)] == log
        again.credit(account, 5)
        assert again.repository.get(account).balance == 65


def test_forgotten_archived_events_read_as_forgotten(
    make_store: Callable[..., EventStore],
    factory_of: Callable[..., module.Factory],
    tmp_path: Path,
) -> None:
    pytest.importorskip("pyarrow.parquet")
    store = make_store(encryption=Encryption(master_key=KEY))
    person = uuid4()
    store.append_to_stream(str(person), ANY_VERSION, [_registered("Eve", "eve")] * 2)
    store.append_to_stream(str(person), ANY_VERSION, [_registered("Eve", None)])
    store.archive(before_event_id=3, target=str(tmp_path))
    recorder = _with_key(factory_of).application_recorder()
    assert [json.loads(e.state)["name"] for e in recorder.select_events(person)] == ["Eve"] * 3
    assert store.forget_subject("eve") == 2
    states = [n.state for n in recorder.select_notifications(1, 10)]
    assert states[:2] == [module.FORGOTTEN_STATE] * 2 and states[2] != module.FORGOTTEN_STATE
    assert [e.state for e in recorder.select_events(person, lte=2)] == [module.FORGOTTEN_STATE] * 2


class Account(Aggregate):
    @event("Opened")
    def __init__(self, owner: str) -> None:
        self.owner, self.balance = owner, 0

    @event("Credited")
    def credit(self, amount: int) -> None:
        self.balance += amount


class Bank(Application[UUID]):
    def open(self, owner: str) -> UUID:
        account = Account(owner)
        self.save(account)
        return account.id

    def credit(self, account_id: UUID, amount: int) -> None:
        account = self.repository.get(account_id)
        account.credit(amount)
        self.save(account)
