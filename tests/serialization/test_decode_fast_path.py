"""Reads decode the stock JsonSerializer's documents inline (storage/reader.py `fast_json`):
whatever the bytes stored, a read returns what `deserialize` returns, or fails as it fails."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from eventstore_actors import EventData, EventStore, JsonSerializer, SerializationError
from eventstore_actors.serialization import EventDecodeError


class RawBytes:
    """Writes `bytes` data and metadata as given (how other writers' JSON gets in)."""

    def serialize(self, term: Any) -> bytes:
        if isinstance(term, dict) and "raw" in term:
            return bytes(term["raw"])
        return term if isinstance(term, bytes) else JsonSerializer().serialize(term)

    def deserialize(self, data: bytes, type: str | None = None) -> Any:
        return data


#: Documents the bare scanner does not take on its own (whitespace around them, a bare
#: value, escapes, non-ASCII), and a plain one.
DOCUMENTS = [
    b'{"a":1}',
    b' {"a": 1}',
    b'{"a": 1}  \n',
    b'\n{\n  "a": [1, 2.5, null, true],\n  "b": "\\u00e9t\\u00e9"\n}\n',
    b'"just a string"',
    b"42",
    '{"name":"Zoë ✓"}'.encode(),
]


def test_every_stored_json_document_reads_as_deserialize_returns_it(
    make_store: Callable[..., EventStore],
) -> None:
    writer = make_store(serializer=RawBytes())
    events = [
        EventData(
            data=doc, event_type="Doc", metadata={"raw": doc if doc.startswith(b"{") else b" {} "}
        )
        for doc in DOCUMENTS
    ]
    writer.append_to_stream("docs", 0, events)
    plain = JsonSerializer()
    reader = make_store()
    for read in (reader.read_stream_forward("docs"), reader.read_all_streams_forward()):
        assert [e.data for e in read] == [plain.deserialize(doc, "Doc") for doc in DOCUMENTS]
        assert [e.metadata for e in read] == [
            plain.deserialize(doc if doc.startswith(b"{") else b" {} ", None) for doc in DOCUMENTS
        ]


@pytest.mark.parametrize("bad", [b'{"a": 1} x', b"{} {}", b"", b"   ", b"NaNa", b'{"a":'])
def test_invalid_json_fails_the_read_with_deserialize_s_error(
    make_store: Callable[..., EventStore], bad: bytes
) -> None:
    writer = make_store(serializer=RawBytes())
    writer.append_to_stream("s", 0, [EventData(data={"ok": 1}, event_type="T")])
    writer.append_to_stream("s", 1, [EventData(data=bad, event_type="T")])
    with pytest.raises(SerializationError) as expected:
        JsonSerializer().deserialize(bad, "T")
    reader = make_store()
    with pytest.raises(EventDecodeError) as error:
        reader.read_stream_forward("s")
    assert error.value.event_id == 2
    assert str(expected.value) in str(error.value)
    assert reader.read_stream_forward("s", 0, 1)[0].data == {"ok": 1}


def test_invalid_metadata_fails_the_read(make_store: Callable[..., EventStore]) -> None:
    writer = make_store(serializer=RawBytes())
    writer.append_to_stream(
        "s", 0, [EventData(data={"ok": 1}, event_type="T", metadata={"raw": b"{"})]
    )
    with pytest.raises(EventDecodeError) as error:
        make_store().read_all_streams_forward()
    assert "not valid JSON" in str(error.value)


def test_a_subclass_overriding_deserialize_is_called(make_store: Callable[..., EventStore]) -> None:
    class Tagged(JsonSerializer):
        def deserialize(self, data: bytes, type: str | None = None) -> Any:
            value = super().deserialize(data, type)
            return {"tagged": value} if type is not None else value

    make_store().append_to_stream("s", 0, [EventData(data={"a": 1}, event_type="T")])
    read = make_store(serializer=Tagged()).read_stream_forward("s")
    assert read[0].data == {"tagged": {"a": 1}}
