"""The events every workload writes: about 200 bytes of JSON data and 50 of metadata."""

from __future__ import annotations

import json
from typing import Any

from eventstore_actors import EventData

__all__ = [
    "EVENT_TYPE",
    "api_events",
    "data_dict",
    "encode",
    "metadata_dict",
    "raw_events",
]

EVENT_TYPE = "bench.AccountDeposited"
_NOTE = "benchmark event payload " * 4


def data_dict(seq: int) -> dict[str, Any]:
    """About 200 bytes once encoded as JSON."""
    return {
        "account": f"account-{seq % 10_000:06d}",
        "amount": 1000 + seq % 997,
        "currency": "EUR",
        "seq": seq,
        "note": _NOTE[: 96 - len(str(seq))],
        "tags": ["bench", "deposit"],
    }


def metadata_dict(seq: int) -> dict[str, Any]:
    """About 50 bytes once encoded as JSON."""
    return {"user": "bench", "trace": f"{seq:016x}", "v": 1}


def encode(value: Any) -> bytes:
    """JSON as the store's default serializer writes it (compact, UTF-8)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def api_events(count: int, start: int = 0) -> list[EventData]:
    """`count` events for the public API, built before any clock starts."""
    return [
        EventData(data=data_dict(i), event_type=EVENT_TYPE, metadata=metadata_dict(i))
        for i in range(start, start + count)
    ]


def raw_events(count: int, start: int = 0) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The same events for the raw baseline: (data, metadata) pairs it serializes itself."""
    return [(data_dict(i), metadata_dict(i)) for i in range(start, start + count)]
