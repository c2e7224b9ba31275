"""The default serializer: JSON, classes registered by name, upcasters for old shapes."""

from __future__ import annotations

import dataclasses
import enum
import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from ..errors import SerializationError
from .fields import ClassDecoders, Convert, FieldError

__all__ = ["JsonSerializer", "Upcaster"]

#: A stored type name's upgrade: decoded JSON object -> (type name, object).
Upcaster = Callable[[dict[str, Any]], tuple[str, dict[str, Any]]]

_NO_UPCASTERS: Mapping[str, Upcaster] = MappingProxyType({})


def _encode_default(value: Any) -> Any:
    """The JSON form of what json cannot write itself; TypeError: none."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise TypeError(f"Decimal {value} has no JSON form")
        return str(value)  # a string keeps the written form: "0.10" stays 0.10
    if isinstance(value, (datetime, date)):
        return value.isoformat()  # an aware datetime keeps its offset, a naive one none
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        raise TypeError("sets have no JSON form; use a list")
    raise TypeError(f"values of type {type(value).__qualname__} have no JSON form")


class JsonSerializer:
    """JSON, with dataclasses written as their fields and rebuilt from `types` on read.

    `types`: classes to rebuild, by `module.qualname` (an iterable) or by stable names of
    your choosing (a mapping name -> class; events of those classes are stored under the
    name). `upcasters`: stored type name -> function(object) -> (type name, object),
    applied until none matches, before the class is rebuilt. Dataclass fields are rebuilt
    from their annotations (Decimal, UUID, datetime, date, Enum, nested dataclasses, lists,
    dicts, tuples, X | None), compiled once per class here.
    """

    def __init__(
        self,
        types: Iterable[type] | Mapping[str, type] = (),
        upcasters: Mapping[str, Upcaster] = _NO_UPCASTERS,
    ) -> None:
        self._names: dict[type, str] = {}
        classes: dict[str, type] = {}
        pairs = types.items() if isinstance(types, Mapping) else _qualified(types)
        for name, cls in pairs:
            if not isinstance(name, str) or not name:
                raise TypeError(f"JsonSerializer type names must be non-empty str, got {name!r}")
            if not isinstance(cls, type):
                raise TypeError(f"JsonSerializer types must be classes, got {cls!r}")
            if cls in self._names and self._names[cls] != name:
                raise TypeError(
                    f"{cls.__qualname__} is registered as both {self._names[cls]!r} and "
                    f"{name!r}; map the old name with an upcaster instead"
                )
            self._names[cls] = name
            classes[name] = cls
        if not isinstance(upcasters, Mapping):
            raise TypeError("JsonSerializer upcasters must be a mapping of type name -> function")
        for name, fn in upcasters.items():
            if not isinstance(name, str) or not callable(fn):
                raise TypeError(f"JsonSerializer upcasters: {name!r} must map to a function")
        decoders = ClassDecoders()
        builders = {name: decoders.for_class(cls) for name, cls in classes.items()}
        #: One lookup per read: the stored type name -> what rebuilds it (none: plain JSON).
        self._readers: dict[str | None, Callable[[Any], Any]] = {
            name: _rebuilder(name, build) for name, build in builders.items()
        }
        for name in upcasters:
            self._readers[name] = _upcasting(name, dict(upcasters), builders)
        self._encoder = json.JSONEncoder(
            default=_encode_default, allow_nan=False, ensure_ascii=False, separators=(",", ":")
        )
        self._chunks = _one_shot(self._encoder)
        # A cached decoder on str: json.loads(bytes) pays for encoding detection every call.
        decoder = json.JSONDecoder()
        self._decode = decoder.decode
        #: The decoder's scanner: what `decode` calls once the document has no whitespace
        #: around it (the serializer writes none); see `fast_json`.
        self._scan: Callable[[str, int], tuple[Any, int]] = decoder.scan_once  # type: ignore[attr-defined]

    def type_name_of(self, value: Any) -> str | None:
        """The name `value`'s class is registered under; None: not registered."""
        return self._names.get(type(value))

    def serialize(self, term: Any) -> bytes:
        """`term` as UTF-8 JSON; SerializationError for values JSON cannot hold."""
        if self._chunks is not None:
            try:
                return "".join(self._chunks(term, 0)).encode("utf-8")
            except Exception:  # the full encode below raises what it is, or succeeds
                pass
        try:
            return self._encoder.encode(term).encode("utf-8")
        except (TypeError, ValueError, RecursionError) as exc:
            raise SerializationError(f"cannot serialize {type(term).__qualname__}: {exc}") from exc

    def deserialize(self, data: bytes, type: str | None = None) -> Any:
        """The value stored as `data`, rebuilt as the class registered under `type` (after
        its upcasters); a plain dict when `type` is not registered."""
        value = self._loads(data)
        read = self._readers.get(type)
        return value if read is None else read(value)

    def _loads(self, data: bytes) -> Any:
        """The JSON value stored as `data` (no class rebuilt); SerializationError when it is
        not UTF-8 JSON."""
        try:
            return self._decode(str(data, "utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise SerializationError(f"stored data is not valid JSON: {exc}") from exc


#: The parts of a stock JsonSerializer's `deserialize`, for a loop over many rows to inline:
#: the scanner (text, 0) -> (value, end), the stored type name -> rebuilder table, and
#: `_loads` (the full decode with its errors, for any document the bare scan does not take).
FastJson = tuple[
    Callable[[str, int], tuple[Any, int]],
    Mapping[str | None, Callable[[Any], Any]],
    Callable[[bytes], Any],
]


def fast_json(serializer: object) -> FastJson | None:
    """The inlinable parts of `serializer` when it is a JsonSerializer whose `deserialize` is
    this one (a subclass may override it: None, so that its own is called).

    `deserialize` is most of the cost of a read, and for a 200-byte event its own overhead
    (two calls, the whitespace skipping of `JSONDecoder.decode` twice) is about a third of
    the decoding: `storage.reader.decode` scans each document directly and falls back to
    `_loads` for anything else (whitespace around it, or invalid: the same value or error).
    """
    if (
        not isinstance(serializer, JsonSerializer)
        or type(serializer).deserialize is not JsonSerializer.deserialize
    ):
        return None
    return serializer._scan, serializer._readers, serializer._loads


def _one_shot(encoder: json.JSONEncoder) -> Callable[[Any, int], Sequence[str]] | None:
    """The C encoder `encoder.encode` builds anew on every call, built once (None without
    the C accelerator): a third of the cost of encoding a 200-byte event.

    Without the circular-reference check (its markers would outlive a failed call): a cycle
    then ends in RecursionError, and `serialize` falls back to `encode`, which names it.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    chunks: Callable[[Any, int], Sequence[str]] = make(
        None,
        encoder.default,
        json.encoder.encode_basestring,  # type: ignore[attr-defined]
        None,
        encoder.key_separator,
        encoder.item_separator,
        encoder.sort_keys,
        encoder.skipkeys,
        encoder.allow_nan,
    )
    return chunks


def _qualified(types: Iterable[type]) -> Iterable[tuple[str, type]]:
    for cls in types:
        if not isinstance(cls, type):
            raise TypeError(f"JsonSerializer types must be classes, got {cls!r}")
        yield f"{cls.__module__}.{cls.__qualname__}", cls


def _rebuilder(name: str, build: Convert) -> Callable[[Any], Any]:
    def read(value: Any) -> Any:
        try:
            return build(value)
        except FieldError as exc:
            raise SerializationError(f"cannot rebuild {name}: {exc}") from None
        except Exception as exc:  # the class's own __init__/__post_init__ refused
            raise SerializationError(f"cannot rebuild {name}: {type(exc).__name__}: {exc}") from exc

    return read


def _upcasting(
    stored: str, upcasters: dict[str, Upcaster], builders: dict[str, Convert]
) -> Callable[[Any], Any]:
    """Each upcaster runs at most once per event: one that keeps its name (a change of
    shape) ends the chain; coming back to an earlier name is a cycle."""

    def read(value: Any) -> Any:
        name, seen = stored, [stored]
        while (upcast := upcasters.get(name)) is not None:
            try:
                result = upcast(value)
                new_name, value = result
            except Exception as exc:
                raise SerializationError(
                    f"upcaster for {name} failed: {type(exc).__name__}: {exc}"
                ) from exc
            if not isinstance(new_name, str) or not new_name:
                raise SerializationError(
                    f"upcaster for {name} must return (type name, object), "
                    f"got a {type(new_name).__name__} name"
                )
            if new_name == name:
                break
            if new_name in seen:
                raise SerializationError(f"upcasters loop: {' -> '.join([*seen, new_name])}")
            seen.append(new_name)
            name = new_name
        build = builders.get(name)
        if build is None:
            return value
        try:
            return build(value)
        except FieldError as exc:
            raise SerializationError(f"cannot rebuild {name} (stored as {stored}): {exc}") from None
        except Exception as exc:
            raise SerializationError(
                f"cannot rebuild {name} (stored as {stored}): {type(exc).__name__}: {exc}"
            ) from exc

    return read
