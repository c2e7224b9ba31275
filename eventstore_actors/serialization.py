"""How event and snapshot data becomes bytes and back.

Nothing is ever imported or executed by name: a stored type name only selects a class the
application registered itself.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

from .errors import SerializationError

__all__ = ["JsonSerializer", "Serializer"]


@runtime_checkable
class Serializer(Protocol):
    """Turns terms into bytes for storage and back; `type` is the stored event/source type."""

    def serialize(self, term: Any) -> bytes: ...

    def deserialize(self, data: bytes, type: str | None = None) -> Any: ...


def _encode_default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, (set, frozenset)):
        raise TypeError("sets have no JSON form; use a list")
    raise TypeError(f"values of type {type(value).__qualname__} have no JSON form")


class JsonSerializer:
    """JSON, with dataclasses written as their fields and rebuilt from `types` on read."""

    def __init__(self, types: Iterable[type] = ()) -> None:
        self._types: dict[str, type] = {}
        for cls in types:
            if not isinstance(cls, type):
                raise TypeError(f"JsonSerializer types must be classes, got {cls!r}")
            self._types[f"{cls.__module__}.{cls.__qualname__}"] = cls
        self._encoder = json.JSONEncoder(
            default=_encode_default, allow_nan=False, ensure_ascii=False, separators=(",", ":")
        )
        # A cached decoder on str: json.loads(bytes) pays for encoding detection every call.
        self._decode = json.JSONDecoder().decode

    def serialize(self, term: Any) -> bytes:
        try:
            return self._encoder.encode(term).encode("utf-8")
        except (TypeError, ValueError, RecursionError) as exc:
            raise SerializationError(f"cannot serialize {type(term).__qualname__}: {exc}") from exc

    def deserialize(self, data: bytes, type: str | None = None) -> Any:
        try:
            value = self._decode(str(data, "utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise SerializationError(f"stored data is not valid JSON: {exc}") from exc
        cls = self._types.get(type) if type is not None else None
        if cls is None or not isinstance(value, dict):
            return value
        try:
            return cls(**value)
        except TypeError as exc:
            raise SerializationError(f"cannot rebuild {type} from stored fields: {exc}") from exc
