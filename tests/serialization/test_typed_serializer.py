"""Serializer v2 (API.md part 2, "Serialization"): stable type names, upcasters, dataclass
fields rebuilt from their annotations (Decimal, UUID, datetime, date, Enum, nested
dataclasses, lists, dicts, X | None), and events that cannot be rebuilt raising
SerializationError naming the event on every read path.
"""

from __future__ import annotations

import enum
import math
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, NewType, Optional

import pytest
from support import QueueSubscriber

from eventstore_actors import (
    EventData,
    EventStore,
    JsonSerializer,
    RecordedEvent,
    SerializationError,
    SnapshotData,
    StreamNotFoundError,
)
from eventstore_actors.serialization import EventDecodeError

REPO = Path(__file__).resolve().parents[2]


class Currency(enum.Enum):
    EUR = "EUR"
    USD = "USD"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Kind(enum.Enum):
    A = 1
    B = "b"


@dataclass(frozen=True)
class MoneyDeposited:
    account_id: uuid.UUID
    amount: Decimal
    currency: Currency
    at: datetime


@dataclass(frozen=True)
class Line:
    amount: Decimal
    day: date | None = None


@dataclass(frozen=True)
class Statement:
    account_id: uuid.UUID
    lines: list[Line]
    by_day: dict[str, Line]
    closing: Optional[Decimal]  # noqa: UP045 (the typing spelling must work too)
    note: str | None = None
    priority: Priority = Priority.LOW
    tags: tuple[str, ...] = ()
    pair: tuple[int, Decimal] = (0, Decimal(0))


@dataclass
class Tree:
    name: str
    children: list[Tree] = field(default_factory=list)


@dataclass
class Plain:
    n: int
    s: str
    xs: list[int]
    d: dict[str, Any]


AccountId = NewType("AccountId", uuid.UUID)


@dataclass
class WithExtras:
    account: AccountId
    total: Decimal = Decimal(0)
    computed: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.computed = 42


@dataclass
class Positive:
    amount: Decimal

    def __post_init__(self) -> None:
        if self.amount <= 0:
            raise ValueError("amount must be positive")


def trip(value: Any, serializer: JsonSerializer | None = None, name: str = "T") -> Any:
    s = serializer or JsonSerializer({name: type(value)})
    return s.deserialize(s.serialize(value), name)


def statement() -> Statement:
    return Statement(
        account_id=uuid.uuid4(),
        lines=[Line(Decimal("0.10"), date(2024, 2, 29)), Line(Decimal("-1E+3"))],
        by_day={"2024-02-29": Line(Decimal("12.3400"))},
        closing=Decimal("99.990"),
        note=None,
        priority=Priority.HIGH,
        tags=("a", "b"),
        pair=(7, Decimal("7.70")),
    )


# --- each annotated type round-trips exactly ---------------------------------------------------


@pytest.mark.parametrize(
    "written", ["0.10", "0", "-0", "1E+3", "-12.3400", "3.14159265358979323846264338327950288"]
)
def test_decimal_keeps_its_written_form(written: str) -> None:
    back = trip(Line(Decimal(written)))
    assert type(back) is Line
    assert type(back.amount) is Decimal
    assert str(back.amount) == written
    assert back.amount.as_tuple() == Decimal(written).as_tuple()


def test_decimal_is_stored_as_a_json_string() -> None:
    assert JsonSerializer().serialize(Line(Decimal("0.10"))) == b'{"amount":"0.10","day":null}'


@pytest.mark.parametrize(
    "at",
    [
        datetime(2024, 3, 1, 12, 30, 15, 123456, tzinfo=UTC),
        datetime(2024, 3, 1, 12, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        datetime(2024, 3, 1, 12, 30, tzinfo=timezone(timedelta(hours=-8))),
    ],
)
def test_aware_datetime_keeps_its_utc_offset(at: datetime) -> None:
    event = MoneyDeposited(uuid.uuid4(), Decimal("1.00"), Currency.EUR, at)
    back = trip(event)
    assert back == event
    assert back.at.utcoffset() == at.utcoffset()
    assert back.at.microsecond == at.microsecond


def test_naive_datetime_stays_naive() -> None:
    at = datetime(2024, 3, 1, 12, 30, 0, 5)
    back = trip(MoneyDeposited(uuid.uuid4(), Decimal(1), Currency.EUR, at))
    assert back.at == at
    assert back.at.tzinfo is None


def test_uuid_date_and_enums_round_trip() -> None:
    account = uuid.uuid4()
    back = trip(MoneyDeposited(account, Decimal(5), Currency.USD, datetime(2024, 1, 1)))
    assert type(back.account_id) is uuid.UUID and back.account_id == account
    assert back.currency is Currency.USD
    line = trip(Line(Decimal(1), date(2024, 2, 29)))
    assert type(line.day) is date and line.day == date(2024, 2, 29)


def test_enums_are_stored_by_value() -> None:
    @dataclass
    class Flags:
        priority: Priority
        kind: Kind
        other: Kind

    s = JsonSerializer({"F": Flags})
    data = s.serialize(Flags(Priority.HIGH, Kind.A, Kind.B))
    assert data == b'{"priority":2,"kind":1,"other":"b"}'
    back = s.deserialize(data, "F")
    assert back.priority is Priority.HIGH and back.kind is Kind.A and back.other is Kind.B


def test_nested_lists_dicts_optionals_and_tuples_round_trip() -> None:
    value = statement()
    back = trip(value)
    assert back == value
    assert all(type(line) is Line for line in back.lines)
    assert type(back.by_day["2024-02-29"]) is Line
    assert str(back.by_day["2024-02-29"].amount) == "12.3400"
    assert str(back.closing) == "99.990"
    assert back.tags == ("a", "b") and type(back.tags) is tuple
    assert back.pair == (7, Decimal("7.70")) and str(back.pair[1]) == "7.70"


def test_optional_fields_read_back_none() -> None:
    value = Statement(uuid.uuid4(), [], {}, closing=None)
    back = trip(value)
    assert back == value
    assert back.closing is None and back.note is None


def test_nested_dataclasses_are_rebuilt_without_being_registered() -> None:
    s = JsonSerializer({"Statement": Statement})  # Line is not registered
    back = s.deserialize(s.serialize(statement()), "Statement")
    assert type(back.lines[0]) is Line
    # ... and Line alone, unregistered, is still a dict (part 1).
    assert s.deserialize(s.serialize(Line(Decimal(1))), "Line") == {"amount": "1", "day": None}


def test_recursive_dataclass_round_trips() -> None:
    tree = Tree("root", [Tree("a", [Tree("a1")]), Tree("b")])
    back = trip(tree)
    assert back == tree
    assert type(back.children[0].children[0]) is Tree


def test_plain_fields_are_taken_as_stored() -> None:
    value = Plain(1, "x", [1, 2], {"k": [1, {"z": None}]})
    assert trip(value) == value


def test_newtype_and_init_false_fields() -> None:
    account = AccountId(uuid.uuid4())
    back = trip(WithExtras(account, Decimal("2.50")))
    assert back.account == account and type(back.account) is uuid.UUID
    assert str(back.total) == "2.50"
    assert back.computed == 42  # written, but rebuilt by __post_init__, not passed to __init__


def test_decimal_field_accepts_numbers_written_before_v2() -> None:
    # Events stored as JSON numbers (a float field changed to Decimal) still read.
    s = JsonSerializer({"Line": Line})
    assert s.deserialize(b'{"amount": 3}', "Line").amount == Decimal(3)
    assert str(s.deserialize(b'{"amount": 0.1}', "Line").amount) == "0.1"


def test_decimal_uuid_datetime_in_plain_data_read_back_as_strings() -> None:
    # Without annotations there is nothing to rebuild from: the JSON value comes back.
    s = JsonSerializer()
    account = uuid.uuid4()
    data = s.serialize({"amount": Decimal("0.10"), "id": account, "day": date(2024, 1, 2)})
    assert s.deserialize(data, "builtins.dict") == {
        "amount": "0.10",
        "id": str(account),
        "day": "2024-01-02",
    }


# --- wrong shapes, failing constructors, bad registrations --------------------------------------


@pytest.mark.parametrize(
    ("stored", "where"),
    [
        (b'{"amount": [1]}', "amount"),
        (b'{"amount": "ten"}', "amount"),
        (b'{"amount": true}', "amount"),
        (b'{"amount": "1", "day": 20240101}', "day"),
        (b'{"amount": "1", "day": "yesterday"}', "day"),
        (b"[1, 2]", ""),
        (b'"text"', ""),
    ],
)
def test_a_field_of_the_wrong_shape_raises(stored: bytes, where: str) -> None:
    with pytest.raises(SerializationError, match="cannot rebuild Line") as info:
        JsonSerializer({"Line": Line}).deserialize(stored, "Line")
    assert where in str(info.value)


def test_wrong_shapes_deep_inside_name_the_path() -> None:
    s = JsonSerializer({"Statement": Statement})
    good = s.serialize(statement())
    for bad, path in [
        (good.replace(b'"0.10"', b'"x"'), "lines[0].amount"),
        (good.replace(b'"12.3400"', b"[]"), "by_day['2024-02-29'].amount"),
        (good.replace(b'"priority":2', b'"priority":9'), "priority"),
        (good.replace(b'"2024-02-29"}', b'"nope"}'), "lines[0].day"),
    ]:
        with pytest.raises(SerializationError) as info:
            s.deserialize(bad, "Statement")
        assert path in str(info.value), (path, str(info.value))
        assert '"x"' not in str(info.value)  # stored values stay out of messages


def test_a_failing_constructor_raises() -> None:
    s = JsonSerializer({"Positive": Positive, "MoneyDeposited": MoneyDeposited})
    with pytest.raises(SerializationError, match="amount must be positive"):
        s.deserialize(b'{"amount": "-1"}', "Positive")
    with pytest.raises(SerializationError, match="missing"):
        s.deserialize(b'{"amount": "1"}', "MoneyDeposited")
    with pytest.raises(SerializationError, match="unexpected keyword"):
        s.deserialize(b'{"amount": "1", "extra": 1}', "Positive")


def test_a_class_cannot_be_registered_under_two_names() -> None:
    with pytest.raises(TypeError, match="upcaster"):
        JsonSerializer({"Old": Line, "New": Line})


@pytest.mark.parametrize(
    "types",
    [{"": Line}, {1: Line}, {"X": "not a class"}, ["not a class"]],
    ids=["empty-name", "int-name", "mapping-non-class", "iterable-non-class"],
)
def test_bad_registrations_raise_type_error(types: Any) -> None:
    with pytest.raises(TypeError):
        JsonSerializer(types)


def test_bad_upcasters_raise_type_error() -> None:
    with pytest.raises(TypeError):
        JsonSerializer(upcasters={"A": "not callable"})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        JsonSerializer(upcasters=[("A", lambda o: ("B", o))])  # type: ignore[arg-type]


def test_unresolvable_annotations_fail_at_construction() -> None:
    @dataclass
    class Local:
        x: Missing  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(TypeError, match="Local"):
        JsonSerializer({"Local": Local})


def test_ambiguous_unions_fail_at_construction() -> None:
    @dataclass
    class Either:
        x: Decimal | int

    with pytest.raises(TypeError, match=r"Either\.x"):
        JsonSerializer({"Either": Either})


@pytest.mark.parametrize(
    "term",
    [
        {1, 2},
        {"nested": frozenset()},
        object(),
        math.nan,
        Decimal("NaN"),
        Decimal("sNaN"),
        Decimal("Infinity"),
        Line(Decimal("-Infinity")),
        Tree("t", [{"x"}]),  # type: ignore[list-item]
    ],
    ids=["set", "frozenset", "object", "nan", "decimal-nan", "decimal-snan", "inf", "line", "tree"],
)
def test_values_json_cannot_hold_raise_before_anything_is_written(
    store: EventStore, term: Any
) -> None:
    with pytest.raises(SerializationError):
        JsonSerializer().serialize(term)
    with pytest.raises(SerializationError):
        store.append_to_stream("s", 0, [EventData(data=term, event_type="T")])
    with pytest.raises(SerializationError):
        store.append_to_stream("s", 0, [EventData(data={"ok": 1}, metadata={"bad": term})])
    with pytest.raises(StreamNotFoundError):
        store.read_stream_forward("s")


# --- stable names -------------------------------------------------------------------------------


def test_type_name_of() -> None:
    by_name = JsonSerializer({"bank.MoneyDeposited": MoneyDeposited})
    sample = MoneyDeposited(uuid.uuid4(), Decimal(1), Currency.EUR, datetime(2024, 1, 1))
    assert by_name.type_name_of(sample) == "bank.MoneyDeposited"
    assert by_name.type_name_of(Line(Decimal(1))) is None
    assert by_name.type_name_of({"a": 1}) is None
    by_class = JsonSerializer([MoneyDeposited])
    assert by_class.type_name_of(sample) == f"{__name__}.MoneyDeposited"


def test_a_mapping_stores_events_under_the_stable_name(
    make_store: Callable[..., EventStore],
) -> None:
    serializer = JsonSerializer({"MoneyDeposited": MoneyDeposited})
    store = make_store(serializer=serializer)
    sent = MoneyDeposited(uuid.uuid4(), Decimal("0.10"), Currency.EUR, datetime.now(UTC))
    store.append_to_stream(
        "acc",
        0,
        [EventData(data=sent), EventData(data=sent, event_type="explicit"), EventData(data={})],
    )
    events = store.read_stream_forward("acc")
    assert [e.event_type for e in events] == ["MoneyDeposited", "explicit", "builtins.dict"]
    assert events[0].data == sent and str(events[0].data.amount) == "0.10"
    assert events[1].data == {
        "account_id": str(sent.account_id),
        "amount": "0.10",
        "currency": "EUR",
        "at": sent.at.isoformat(),
    }
    # Filters and the all-streams log see the stable name too.
    assert store.read_all_streams_forward(event_types=["MoneyDeposited"]) == events[:1]


def test_a_class_moved_to_another_module_is_rebuilt_by_name(
    make_store: Callable[..., EventStore], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = make_store(serializer=JsonSerializer({"bank.Deposited": Line}))
    before.append_to_stream("acc", 0, [EventData(data=Line(Decimal("1.10"), date(2024, 5, 1)))])

    module = f"moved_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent(
            """
            from dataclasses import dataclass
            from datetime import date
            from decimal import Decimal

            @dataclass(frozen=True)
            class Deposited:
                amount: Decimal
                day: date | None = None
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    moved = __import__(module).Deposited
    assert moved.__module__ != Line.__module__

    after = make_store(serializer=JsonSerializer({"bank.Deposited": moved}))
    [event] = after.read_stream_forward("acc")
    assert event.event_type == "bank.Deposited"
    assert type(event.data) is moved
    assert event.data == moved(Decimal("1.10"), date(2024, 5, 1))
    assert str(event.data.amount) == "1.10"


def test_a_class_defined_in_a_script_is_stored_by_its_stable_name(
    make_store: Callable[..., EventStore], dsn: str, schema: str, tmp_path: Path
) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            from dataclasses import dataclass
            from decimal import Decimal
            from eventstore_actors import EventData, EventStore, JsonSerializer

            @dataclass(frozen=True)
            class Line:
                amount: Decimal
                day: None = None

            with EventStore.start(
                sys.argv[1], schema=sys.argv[2], serializer=JsonSerializer({"Line": Line})
            ) as store:
                store.append_to_stream("s", 0, [EventData(data=Line(Decimal("2.50")))])
                assert type(store.read_stream_forward("s")[0].data) is Line
            print("ok")
            """
        )
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, str(script), dsn, schema],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    store = make_store(serializer=JsonSerializer({"Line": Line}))
    [event] = store.read_stream_forward("s")
    assert event.event_type == "Line"  # not "__main__.Line"
    assert event.data == Line(Decimal("2.50"))


class CustomSerializer:
    """A serializer without type_name_of: names stay module.qualname."""

    def __init__(self, name: str | None = None) -> None:
        self.inner = JsonSerializer()
        self.name = name

    def serialize(self, term: Any) -> bytes:
        return self.inner.serialize(term)

    def deserialize(self, data: bytes, type: str | None = None) -> Any:
        return self.inner.deserialize(data, type)


class NamingSerializer(CustomSerializer):
    def type_name_of(self, value: Any) -> str | None:
        return self.name


def test_custom_serializers_with_and_without_type_name_of(
    make_store: Callable[..., EventStore],
) -> None:
    line = Line(Decimal(1))
    for serializer, expected in [
        (CustomSerializer(), f"{__name__}.Line"),
        (NamingSerializer(None), f"{__name__}.Line"),
        (NamingSerializer("named"), "named"),
    ]:
        store = make_store(serializer=serializer)
        stream = f"s-{uuid.uuid4().hex}"
        store.append_to_stream(stream, 0, [EventData(data=line)])
        assert store.read_stream_forward(stream)[0].event_type == expected


# --- upcasters ----------------------------------------------------------------------------------


def test_upcaster_renames_an_event(make_store: Callable[..., EventStore]) -> None:
    old = make_store()
    old.append_to_stream(
        "acc", 0, [EventData(data={"value": "5.00"}, event_type="AccountCredited")]
    )
    serializer = JsonSerializer(
        {"Line": Line},
        upcasters={"AccountCredited": lambda o: ("Line", {"amount": o["value"]})},
    )
    new = make_store(serializer=serializer)
    [event] = new.read_stream_forward("acc")
    assert event.event_type == "AccountCredited"  # what is stored does not change
    assert event.data == Line(Decimal("5.00"))


def test_upcaster_chains_run_until_none_matches() -> None:
    calls: list[str] = []

    def step(name: str, to: str, **extra: Any) -> Callable[[dict[str, Any]], Any]:
        def upcast(obj: dict[str, Any]) -> tuple[str, dict[str, Any]]:
            calls.append(name)
            return to, {**obj, **extra}

        return upcast

    s = JsonSerializer(
        {"Line": Line},
        upcasters={
            "Deposit.v1": step("v1", "Deposit.v2", day="2024-01-01"),
            "Deposit.v2": step("v2", "Deposit.v3"),
            "Deposit.v3": step("v3", "Line"),
        },
    )
    assert s.deserialize(b'{"amount": "1"}', "Deposit.v1") == Line(Decimal(1), date(2024, 1, 1))
    assert calls == ["v1", "v2", "v3"]
    calls.clear()
    assert s.deserialize(b'{"amount": "1"}', "Deposit.v3") == Line(Decimal(1))
    assert calls == ["v3"]


def test_upcaster_under_the_same_name_changes_shape_once() -> None:
    # The case: a field added without a default; old events lack it.
    s = JsonSerializer(
        {"MoneyDeposited": MoneyDeposited},
        upcasters={"MoneyDeposited": lambda o: ("MoneyDeposited", {"currency": "EUR", **o})},
    )
    account = uuid.uuid4()
    old = f'{{"account_id": "{account}", "amount": "1.0", "at": "2024-01-01T00:00:00"}}'
    back = s.deserialize(old.encode(), "MoneyDeposited")
    assert back == MoneyDeposited(account, Decimal("1.0"), Currency.EUR, datetime(2024, 1, 1))
    # New events, already with the field, go through it unchanged.
    new = MoneyDeposited(account, Decimal(2), Currency.USD, datetime(2024, 1, 1))
    assert s.deserialize(s.serialize(new), "MoneyDeposited") == new


def test_upcaster_to_an_unregistered_name_gives_the_upcast_dict() -> None:
    s = JsonSerializer(upcasters={"Old": lambda o: ("New", {"renamed": o["x"]})})
    assert s.deserialize(b'{"x": 1}', "Old") == {"renamed": 1}
    assert s.deserialize(b'{"x": 1}', "New") == {"x": 1}


def test_upcaster_cycles_raise() -> None:
    s = JsonSerializer(upcasters={"A": lambda o: ("B", o), "B": lambda o: ("A", o)})
    with pytest.raises(SerializationError, match="A -> B -> A"):
        s.deserialize(b"{}", "A")


@pytest.mark.parametrize(
    "upcaster",
    [
        lambda o: ("Line", {"amount": o["missing"]}),
        lambda o: {"amount": "1"},
        lambda o: (None, o),
        lambda o: ("", o),
        lambda o: ("Line", [1]),
    ],
    ids=["raises", "not-a-pair", "none-name", "empty-name", "not-an-object"],
)
def test_failing_upcasters_raise(upcaster: Callable[[dict[str, Any]], Any]) -> None:
    s = JsonSerializer({"Line": Line}, upcasters={"Old": upcaster})
    with pytest.raises(SerializationError, match="Old"):
        s.deserialize(b'{"x": 1}', "Old")


# --- in a running store: every read path, snapshots, subscriptions ------------------------------


def test_every_read_path_rebuilds_annotated_types(make_store: Callable[..., EventStore]) -> None:
    serializer = JsonSerializer({"Statement": Statement, "MoneyDeposited": MoneyDeposited})
    store = make_store(serializer=serializer)
    at = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=1)))
    sent = [
        statement(),
        MoneyDeposited(uuid.uuid4(), Decimal("0.10"), Currency.EUR, at),
        {"plain": True},
    ]
    store.append_to_stream("acc", 0, [EventData(data=d, metadata={"m": 1}) for d in sent])
    for events in (
        store.read_stream_forward("acc"),
        store.read_all_streams_forward(),
        list(store.stream_forward("acc", 0, 1)),
        list(store.stream_all_forward(0, 2)),
    ):
        assert [e.data for e in events] == sent
        assert [type(e.data) for e in events] == [Statement, MoneyDeposited, dict]
        assert str(events[1].data.amount) == "0.10"
        assert events[1].data.at.utcoffset() == timedelta(hours=1)


def test_subscribers_receive_rebuilt_classes(make_store: Callable[..., EventStore]) -> None:
    store = make_store(serializer=JsonSerializer({"Line": Line}))
    q = QueueSubscriber()
    store.subscribe_to_all_streams("sub", q)  # type: ignore[arg-type]
    q.subscribed()
    store.append_to_stream("acc", 0, [EventData(data=Line(Decimal("0.10"), date(2024, 1, 1)))])
    [event] = q.batch()
    assert event.data == Line(Decimal("0.10"), date(2024, 1, 1))
    assert str(event.data.amount) == "0.10"


def test_snapshots_round_trip_the_same_types(make_store: Callable[..., EventStore]) -> None:
    store = make_store(serializer=JsonSerializer({"bank.Statement": Statement}))
    state = statement()
    store.record_snapshot(SnapshotData("acc", 3, "bank.Statement", state, {"v": 1}))
    snap = store.read_snapshot("acc")
    assert snap.data == state and type(snap.data) is Statement
    assert str(snap.data.lines[0].amount) == "0.10"
    assert snap.metadata == {"v": 1}


def test_snapshots_use_upcasters_and_name_the_source_when_they_fail(
    make_store: Callable[..., EventStore],
) -> None:
    writer = make_store()
    writer.record_snapshot(SnapshotData("good", 1, "Old", {"value": "1.5"}))
    writer.record_snapshot(SnapshotData("bad", 1, "Positive", {"amount": "-1"}))
    reader = make_store(
        serializer=JsonSerializer(
            {"Line": Line, "Positive": Positive},
            upcasters={"Old": lambda o: ("Line", {"amount": o["value"]})},
        )
    )
    assert reader.read_snapshot("good").data == Line(Decimal("1.5"))
    with pytest.raises(SerializationError, match=r"'bad'.*Positive.*positive"):
        reader.read_snapshot("bad")


class RawBytes:
    """Writes `bytes` data as given: how undecodable bytes get into a store."""

    def serialize(self, term: Any) -> bytes:
        return term if isinstance(term, bytes) else JsonSerializer().serialize(term)

    def deserialize(self, data: bytes, type: str | None = None) -> Any:
        return data


BAD_EVENTS: dict[str, EventData] = {
    "bad-bytes": EventData(data=b'{"amount": ', event_type="Line"),
    "bad-utf8": EventData(data=b"\xff\xfe", event_type="Unregistered"),
    "failing-upcaster": EventData(data={"value": 1}, event_type="Old"),
    "failing-constructor": EventData(data={"amount": "-5"}, event_type="Positive"),
    "missing-field": EventData(data={"amount": "1.0"}, event_type="MoneyDeposited"),
    "wrong-shape": EventData(data={"amount": {"a": 1}}, event_type="Line"),
    "not-an-object": EventData(data=[1, 2], event_type="Line"),
}


@pytest.fixture(params=sorted(BAD_EVENTS))
def bad_store(
    request: Any, make_store: Callable[..., EventStore]
) -> Iterator[tuple[EventStore, str]]:
    """A store whose event 3 (stream "acc", version 3) cannot be rebuilt; 1, 2 and 4 can;
    and that event's type."""
    good = [EventData(data=Line(Decimal(n)), event_type="Line") for n in (1, 2, 4)]
    writer = make_store(serializer=RawBytes())
    writer.append_to_stream("acc", 0, [good[0], good[1], BAD_EVENTS[request.param], good[2]])
    reader = make_store(
        serializer=JsonSerializer(
            {"Line": Line, "Positive": Positive, "MoneyDeposited": MoneyDeposited},
            upcasters={"Old": lambda o: ("Line", {"amount": o["missing"]})},
        )
    )
    event_type = BAD_EVENTS[request.param].event_type
    assert event_type is not None
    yield reader, event_type


def _names_event_3(error: pytest.ExceptionInfo[SerializationError], event_type: str) -> None:
    assert isinstance(error.value, EventDecodeError)
    assert (error.value.event_id, error.value.event_type) == (3, event_type)
    assert error.value.stream_uuid == "acc"
    message = str(error.value)
    assert f"event 3 (type {event_type!r}" in message, message


def test_an_event_that_cannot_be_rebuilt_fails_every_read_naming_it(
    bad_store: tuple[EventStore, str],
) -> None:
    store, event_type = bad_store
    with pytest.raises(SerializationError) as error:
        store.read_stream_forward("acc")
    _names_event_3(error, event_type)
    with pytest.raises(SerializationError) as error:
        store.read_all_streams_forward()
    _names_event_3(error, event_type)

    # Events before it are read (and streamed) as usual; a stream stops at it.
    before = store.read_stream_forward("acc", 0, 2)
    assert [e.data for e in before] == [Line(Decimal(1)), Line(Decimal(2))]
    assert [e.data for e in store.read_all_streams_forward(4)] == [Line(Decimal(4))]
    seen: list[RecordedEvent] = []
    with pytest.raises(SerializationError) as error:
        for event in store.stream_all_forward(0, 1):
            seen.append(event)
    _names_event_3(error, event_type)
    assert [e.event_id for e in seen] == [1, 2]
    seen.clear()
    with pytest.raises(SerializationError) as error:
        for event in store.stream_forward("acc", 0, 2):
            seen.append(event)
    _names_event_3(error, event_type)
    assert [e.stream_version for e in seen] == [1, 2]


def test_a_custom_serializer_failing_on_read_names_the_event(
    make_store: Callable[..., EventStore],
) -> None:
    class Broken(CustomSerializer):
        def deserialize(self, data: bytes, type: str | None = None) -> Any:
            if type == "Boom":
                raise KeyError("envelope")
            return super().deserialize(data, type)

    store = make_store(serializer=Broken())
    store.append_to_stream("s", 0, [EventData(data={}, event_type="Boom")])
    with pytest.raises(SerializationError, match=r"event 1 .*'Boom'.*KeyError"):
        store.read_stream_forward("s")


def test_unregistered_types_still_read_back_as_dicts(make_store: Callable[..., EventStore]) -> None:
    store = make_store(serializer=JsonSerializer({"Line": Line}))
    store.append_to_stream("s", 0, [EventData(data={"amount": [1]}, event_type="Other")])
    assert store.read_stream_forward("s")[0].data == {"amount": [1]}
