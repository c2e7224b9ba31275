"""Rebuilding dataclasses from decoded JSON by their field annotations.

Annotations are resolved once per class (typing.get_type_hints) and compiled into a decoder:
a function from the decoded JSON object to an instance. Fields whose JSON form is already
their value (str, int, float, bool, Any, lists and dicts of those...) get no converter at
all, so a class of plain fields costs one `cls(**value)`. Error messages name the field path
and the expected type, never the stored value (they reach logs).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import types
import typing
import uuid
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["ClassDecoders", "Convert", "FieldError"]

#: A converter: decoded JSON value -> the annotated type; raises FieldError on a bad shape.
Convert = Callable[[Any], Any]


class FieldError(Exception):
    """A stored value does not have the shape its annotation asks for; `path` says where."""

    def __init__(self, reason: str, path: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.path = path

    def under(self, step: str) -> FieldError:
        """The same error one level up (step: ".field" or "[index]")."""
        return FieldError(self.reason, step + self.path)

    def __str__(self) -> str:
        where = self.path.lstrip(".")
        return f"field {where}: {self.reason}" if where else self.reason


def _shape(expected: str, value: Any) -> FieldError:
    return FieldError(f"expected {expected}, got {type(value).__name__}")


def _decimal(value: Any) -> Decimal:
    if type(value) is str:
        try:
            return Decimal(value)
        except InvalidOperation:
            raise FieldError("expected a decimal number in a string") from None
    if type(value) is int:
        return Decimal(value)
    if type(value) is float:
        return Decimal(repr(value))
    raise _shape("a decimal number as a string", value)


def _uuid(value: Any) -> uuid.UUID:
    if type(value) is not str:
        raise _shape("a UUID string", value)
    try:
        return uuid.UUID(value)
    except ValueError:
        raise FieldError("expected a UUID string") from None


def _datetime(value: Any) -> datetime:
    if type(value) is not str:
        raise _shape("an ISO 8601 datetime string", value)
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise FieldError("expected an ISO 8601 datetime string") from None


def _date(value: Any) -> date:
    if type(value) is not str:
        raise _shape("an ISO 8601 date string", value)
    try:
        # A datetime is a date: one stored in a date field keeps its time.
        return date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value)
    except ValueError:
        raise FieldError("expected an ISO 8601 date string") from None


_SCALARS: dict[Any, Convert] = {
    Decimal: _decimal,
    uuid.UUID: _uuid,
    datetime: _datetime,
    date: _date,
}

_LISTS = (list, collections.abc.Sequence, collections.abc.MutableSequence)
_DICTS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)


def _enum(cls: type[enum.Enum]) -> Convert:
    members: dict[Any, Any] = {}
    for member in cls:
        try:
            members[member.value] = member
        except TypeError:  # an unhashable value: only found by calling the class
            pass

    def convert(value: Any) -> Any:
        try:
            return members[value]
        except (KeyError, TypeError):
            pass
        try:
            return cls(value)
        except (ValueError, TypeError):
            raise FieldError(f"not a value of {cls.__qualname__}") from None

    return convert


def _optional(convert: Convert) -> Convert:
    return lambda value: None if value is None else convert(value)


def _list(item: Convert, make: type = list) -> Convert:
    def convert(value: Any) -> Any:
        if type(value) is not list:
            raise _shape("an array", value)
        out: list[Any] = []
        try:
            for v in value:
                out.append(item(v))
        except FieldError as exc:
            raise exc.under(f"[{len(out)}]") from None
        return out if make is list else make(out)

    return convert


def _tuple(items: tuple[Convert | None, ...]) -> Convert:
    def convert(value: Any) -> Any:
        if type(value) is not list or len(value) != len(items):
            raise _shape(f"an array of {len(items)}", value)
        out = []
        for i, (c, v) in enumerate(zip(items, value, strict=True)):
            try:
                out.append(v if c is None else c(v))
            except FieldError as exc:
                raise exc.under(f"[{i}]") from None
        return tuple(out)

    return convert


def _dict(item: Convert) -> Convert:
    def convert(value: Any) -> Any:
        if type(value) is not dict:
            raise _shape("an object", value)
        out: dict[str, Any] = {}
        key = None
        try:
            for key, v in value.items():
                out[key] = item(v)
        except FieldError as exc:
            raise exc.under(f"[{key!r}]") from None
        return out

    return convert


class ClassDecoders:
    """Compiled decoders by class; one instance per serializer (classes of nested fields
    included, each compiled once)."""

    def __init__(self) -> None:
        self._decoders: dict[type, Convert] = {}

    def for_class(self, cls: type) -> Convert:
        """The decoder of `cls`: a dataclass from its fields, any other class `cls(**obj)`."""
        decoder = self._decoders.get(cls)
        if decoder is None:
            # A placeholder first: a class may refer to itself (trees, linked items).
            compiled: list[Convert] = []
            self._decoders[cls] = lambda value: compiled[0](value)
            try:
                decoder = self._compile(cls)
            except BaseException:
                del self._decoders[cls]
                raise
            compiled.append(decoder)
            self._decoders[cls] = decoder
        return decoder

    def _compile(self, cls: type) -> Convert:
        if not dataclasses.is_dataclass(cls):
            return _plain_class(cls)
        try:
            hints = typing.get_type_hints(cls)
        except Exception as exc:
            raise TypeError(
                f"JsonSerializer cannot resolve the field annotations of {cls.__qualname__} "
                f"({type(exc).__name__}: {exc}); the classes they name must be importable "
                "from its module"
            ) from None
        converters: list[tuple[str, Convert]] = []
        skipped: list[str] = []
        for f in dataclasses.fields(cls):
            if not f.init:
                skipped.append(f.name)  # written, but __init__ does not take it
                continue
            try:
                convert = self.converter(hints.get(f.name, Any))
            except TypeError as exc:
                raise TypeError(f"{cls.__qualname__}.{f.name}: {exc}") from None
            if convert is not None:
                converters.append((f.name, convert))
        if not converters and not skipped:
            return _plain_class(cls)
        return _field_class(cls, tuple(converters), frozenset(skipped))

    def converter(self, hint: Any) -> Convert | None:
        """The converter of one annotation; None: the JSON value is already right."""
        supertype = getattr(hint, "__supertype__", None)  # typing.NewType
        if supertype is not None:
            return self.converter(supertype)
        try:
            scalar = _SCALARS.get(hint)
        except TypeError:  # an unhashable annotation
            return None
        if scalar is not None:
            return scalar
        if isinstance(hint, type):
            if issubclass(hint, enum.Enum):
                return _enum(hint)
            if dataclasses.is_dataclass(hint):
                return self.for_class(hint)
            if hint is tuple:
                return _list(lambda v: v, tuple)
            return None
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if origin is typing.Union or origin is types.UnionType:
            return self._union(hint, args)
        if origin in _LISTS and args:
            item = self.converter(args[0])
            return None if item is None else _list(item)
        if origin in _DICTS and len(args) == 2:
            item = self.converter(args[1])
            return None if item is None else _dict(item)
        if origin is tuple and args:
            if len(args) == 2 and args[1] is Ellipsis:
                item = self.converter(args[0])
                return _list(item if item is not None else (lambda v: v), tuple)
            return _tuple(tuple(self.converter(a) for a in args))
        return None  # Any, Literal, TypeVars, sets...: taken as stored

    def _union(self, hint: Any, args: tuple[Any, ...]) -> Convert | None:
        members = [a for a in args if a is not type(None)]
        optional = len(members) < len(args)
        converters = [self.converter(a) for a in members]
        if all(c is None for c in converters):
            return None
        if len(members) > 1:
            raise TypeError(
                f"cannot tell the members of {hint} apart in JSON: use one type (or X | None)"
            )
        [convert] = converters
        assert convert is not None
        return _optional(convert) if optional else convert


def _plain_class(cls: type) -> Convert:
    def decode(value: Any) -> Any:
        if type(value) is not dict:
            raise _shape("an object", value)
        return cls(**value)

    return decode


def _field_class(
    cls: type, converters: tuple[tuple[str, Convert], ...], skipped: frozenset[str]
) -> Convert:
    def decode(value: Any) -> Any:
        if type(value) is not dict:
            raise _shape("an object", value)
        if skipped:
            value = {k: v for k, v in value.items() if k not in skipped}
        # Converted in place: the object was just decoded (or returned by an upcaster).
        for name, convert in converters:
            if name in value:
                try:
                    value[name] = convert(value[name])
                except FieldError as exc:
                    raise exc.under(f".{name}") from None
        return cls(**value)

    return decode
