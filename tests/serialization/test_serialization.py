"""JsonSerializer, the Serializer protocol, and event_type inference.

The contract: dataclasses serialize as their fields; on read, the stored type name selects a
class registered in `types` by f"{cls.__module__}.{cls.__qualname__}"; an unregistered type
comes back as a plain dict; nothing is imported or executed by name; values JSON cannot hold
raise SerializationError before anything is written.

Part 2 (tests/serialization/test_typed_serializer.py) changes none of the cases here; it adds
stable names, upcasters and typed fields, and one changed rule: stored data of a registered
type that is not a JSON object (or does not fit the class) now raises SerializationError
instead of coming back as the stored value.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from eventstore_actors import (
    EventData,
    EventStore,
    EventStoreError,
    JsonSerializer,
    SerializationError,
    Serializer,
    StreamNotFoundError,
)


@dataclass(frozen=True)
class AccountOpened:
    account_id: str
    balance: int = 0


@dataclass
class MoneyDeposited:
    amount: float
    tags: list[str] = field(default_factory=list)


class Outer:
    @dataclass(frozen=True)
    class Inner:
        x: int


@dataclass
class Wrapper:
    inner: Any


def name_of(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# --- JsonSerializer on its own ----------------------------------------------------------------


@pytest.mark.parametrize(
    "term",
    [
        {"a": 1, "b": [1, 2.5, "three", None, True, False]},
        [],
        {},
        "text ✅ 日本語 \U0001f600",
        "a\x00b",
        0,
        -(2**62),
        1.25,
        None,
        True,
        {"nested": {"deep": [{"x": [[]]}]}},
    ],
)
def test_json_round_trip_of_plain_values(term: Any) -> None:
    s = JsonSerializer()
    data = s.serialize(term)
    assert isinstance(data, bytes)
    assert s.deserialize(data) == term
    assert s.deserialize(data, None) == term


def test_json_output_is_json() -> None:
    data = JsonSerializer().serialize({"text": "✅", "n": 1})
    assert json.loads(data.decode("utf-8")) == {"text": "✅", "n": 1}


def test_dataclass_serializes_as_its_fields() -> None:
    data = JsonSerializer().serialize(AccountOpened("acc-1", 10))
    assert json.loads(data) == {"account_id": "acc-1", "balance": 10}


def test_nested_dataclass_serializes_as_fields() -> None:
    data = JsonSerializer().serialize(Wrapper(inner=[Outer.Inner(1), {"k": Outer.Inner(2)}]))
    assert json.loads(data) == {"inner": [{"x": 1}, {"k": {"x": 2}}]}


def test_registered_type_is_rebuilt() -> None:
    s = JsonSerializer(types=[AccountOpened, MoneyDeposited])
    value = s.deserialize(s.serialize(AccountOpened("acc-1", 10)), name_of(AccountOpened))
    assert value == AccountOpened("acc-1", 10)
    assert type(value) is AccountOpened

    deposit = s.deserialize(s.serialize(MoneyDeposited(2.5, ["x"])), name_of(MoneyDeposited))
    assert deposit == MoneyDeposited(2.5, ["x"])


def test_registered_name_is_module_and_qualname() -> None:
    s = JsonSerializer(types=[Outer.Inner])
    assert name_of(Outer.Inner).endswith(".Outer.Inner")
    assert s.deserialize(b'{"x": 3}', name_of(Outer.Inner)) == Outer.Inner(3)
    # The bare class name or a name without the module does not select it.
    assert s.deserialize(b'{"x": 3}', "Inner") == {"x": 3}
    assert s.deserialize(b'{"x": 3}', "Outer.Inner") == {"x": 3}


def test_types_accepts_any_iterable() -> None:
    s = JsonSerializer(types=(cls for cls in [AccountOpened]))
    assert s.deserialize(b'{"account_id": "a"}', name_of(AccountOpened)) == AccountOpened("a")


def test_unregistered_type_comes_back_as_dict() -> None:
    s = JsonSerializer(types=[MoneyDeposited])
    data = s.serialize(AccountOpened("acc-1", 10))
    assert s.deserialize(data, name_of(AccountOpened)) == {"account_id": "acc-1", "balance": 10}
    assert JsonSerializer().deserialize(data, name_of(AccountOpened)) == {
        "account_id": "acc-1",
        "balance": 10,
    }
    assert type(JsonSerializer().deserialize(data, "anything.At.All")) is dict


def test_nothing_is_imported_or_executed_by_name() -> None:
    # In a fresh interpreter, so that modules imported by other tests do not interfere.
    code = """
import sys
from eventstore_actors import JsonSerializer
s = JsonSerializer()
for name in ["this.Zen", "antigravity.Fly", "os.system", "subprocess.Popen", "builtins.eval",
             "builtins.dict", "collections.OrderedDict", "decimal.Decimal"]:
    value = s.deserialize(b'{"args": "echo pwned"}', name)
    assert value == {"args": "echo pwned"} and type(value) is dict, (name, value)
assert "this" not in sys.modules and "antigravity" not in sys.modules
assert s.deserialize(b'"ls"', "os.system") == "ls"
print("ok")
"""
    repo = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=repo,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def _circular() -> list[Any]:
    c: list[Any] = []
    c.append(c)
    return c


@pytest.mark.parametrize(
    "term",
    [
        math.nan,
        math.inf,
        -math.inf,
        {"x": [1, math.nan]},
        {1, 2},
        frozenset(),
        {"s": {"a"}},
        b"bytes",
        bytearray(b"x"),
        object(),
        complex(1, 1),
        {(1, 2): "tuple key"},
        _circular(),
        MoneyDeposited(math.nan),
        AccountOpened,  # a class, not an instance
    ],
    ids=[
        "nan",
        "inf",
        "-inf",
        "nested-nan",
        "set",
        "frozenset",
        "nested-set",
        "bytes",
        "bytearray",
        "object",
        "complex",
        "tuple-key",
        "circular",
        "dataclass-nan",
        "class",
    ],
)
def test_values_json_cannot_hold_raise_serialization_error(term: Any) -> None:
    with pytest.raises(SerializationError):
        JsonSerializer().serialize(term)


def test_serialization_error_is_an_event_store_error() -> None:
    assert issubclass(SerializationError, EventStoreError)


def test_unreadable_stored_bytes_raise_serialization_error() -> None:
    with pytest.raises(SerializationError):
        JsonSerializer().deserialize(b"{not json")
    with pytest.raises(SerializationError):
        JsonSerializer().deserialize(b"\xff\xfe")


def test_json_serializer_satisfies_the_protocol() -> None:
    s: Serializer = JsonSerializer()
    assert callable(s.serialize)
    assert callable(s.deserialize)


# --- event_type inference -----------------------------------------------------------------------


def test_event_type_inferred_from_dataclass(store: EventStore) -> None:
    store.append_to_stream("s", 0, [EventData(data=AccountOpened("acc-1", 5))])
    [event] = store.read_stream_forward("s")
    assert event.event_type == name_of(AccountOpened)
    assert event.event_type == f"{AccountOpened.__module__}.AccountOpened"
    # No types registered: a plain dict.
    assert event.data == {"account_id": "acc-1", "balance": 5}
    assert type(event.data) is dict


def test_event_type_inferred_for_nested_class(store: EventStore) -> None:
    store.append_to_stream("s", 0, [EventData(data=Outer.Inner(1))])
    assert store.read_stream_forward("s")[0].event_type == f"{Outer.__module__}.Outer.Inner"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"a": 1}, "builtins.dict"),
        ([1], "builtins.list"),
        ("x", "builtins.str"),
        (1, "builtins.int"),
    ],
)
def test_event_type_inferred_for_builtins(store: EventStore, data: Any, expected: str) -> None:
    store.append_to_stream("s", 0, [EventData(data=data)])
    [event] = store.read_stream_forward("s")
    assert event.event_type == expected
    assert event.data == data


def test_explicit_event_type_wins_over_inference(
    make_store: Callable[..., EventStore],
) -> None:
    store = make_store(serializer=JsonSerializer(types=[AccountOpened]))
    store.append_to_stream(
        "s", 0, [EventData(data=AccountOpened("a"), event_type="bank.AccountOpened")]
    )
    [event] = store.read_stream_forward("s")
    assert event.event_type == "bank.AccountOpened"
    # That name is not the registered one, so the data stays a dict.
    assert event.data == {"account_id": "a", "balance": 0}


# --- the serializer in a running store ------------------------------------------------------------


def test_registered_types_are_rebuilt_on_every_read_path(
    make_store: Callable[..., EventStore],
) -> None:
    store = make_store(serializer=JsonSerializer(types=[AccountOpened, MoneyDeposited]))
    sent = [AccountOpened("acc-1", 0), MoneyDeposited(12.5, ["a", "b"]), {"plain": True}]
    store.append_to_stream("acc-1", 0, [EventData(data=d) for d in sent])

    for events in (
        store.read_stream_forward("acc-1"),
        store.read_all_streams_forward(),
        list(store.stream_forward("acc-1", 0, 1)),
        list(store.stream_all_forward(0, 2)),
    ):
        assert [e.data for e in events] == sent
        assert [type(e.data) for e in events] == [AccountOpened, MoneyDeposited, dict]


def test_events_written_untyped_are_rebuilt_by_a_typed_store(
    make_store: Callable[..., EventStore],
) -> None:
    writer = make_store()
    writer.append_to_stream("s", 0, [EventData(data=MoneyDeposited(1.0))])
    reader = make_store(serializer=JsonSerializer(types=[MoneyDeposited]))
    assert reader.read_stream_forward("s")[0].data == MoneyDeposited(1.0)
    assert writer.read_stream_forward("s")[0].data == {"amount": 1.0, "tags": []}


def test_metadata_round_trips_as_mapping(store: EventStore) -> None:
    metadata = {"user": "u@example.com", "nested": {"ip": "10.0.0.1", "tags": [1, 2]}}
    store.append_to_stream("s", 0, [EventData(data=AccountOpened("a"), metadata=metadata)])
    assert dict(store.read_stream_forward("s")[0].metadata or {}) == metadata


def test_unserializable_dataclass_field_writes_nothing(store: EventStore) -> None:
    with pytest.raises(SerializationError):
        store.append_to_stream("s", 0, [EventData(data=MoneyDeposited(math.inf))])
    with pytest.raises(StreamNotFoundError):
        store.read_stream_forward("s")
    assert store.read_all_streams_forward() == []


class RecordingSerializer:
    """A custom serializer: JSON wrapped in an envelope, recording the types it is given."""

    def __init__(self) -> None:
        self.types_seen: list[str | None] = []

    def serialize(self, term: Any) -> bytes:
        try:
            return json.dumps({"envelope": term}, allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise SerializationError(str(exc)) from exc

    def deserialize(self, data: bytes, type: str | None = None) -> Any:
        self.types_seen.append(type)
        return json.loads(data)["envelope"]


def test_custom_serializer_is_used_for_events_and_snapshots(
    make_store: Callable[..., EventStore],
) -> None:
    from eventstore_actors import SnapshotData

    serializer = RecordingSerializer()
    store = make_store(serializer=serializer)
    store.append_to_stream(
        "s", 0, [EventData(data={"n": 1}, event_type="my.Event", metadata={"m": 1})]
    )
    [event] = store.read_stream_forward("s")
    assert event.data == {"n": 1}
    assert event.metadata == {"m": 1}
    assert "my.Event" in serializer.types_seen

    store.record_snapshot(
        SnapshotData(source_uuid="agg", source_version=1, source_type="my.Agg", data=[1, 2])
    )
    assert store.read_snapshot("agg").data == [1, 2]
    assert "my.Agg" in serializer.types_seen

    # Serializer errors surface as SerializationError, nothing written.
    with pytest.raises(SerializationError):
        store.append_to_stream("t", 0, [EventData(data=math.nan, event_type="E")])
    assert len(store.read_all_streams_forward()) == 1
