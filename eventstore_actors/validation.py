"""Argument checks shared by the facade: bad input fails here, before anything is written."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from typing import Any

from .errors import InvalidStartFromError
from .events import ExpectedVersion
from .streams import SORT_FIELDS

__all__ = [
    "MAX_BIGINT",
    "MAX_NAME_BYTES",
    "check_backward_start",
    "check_count",
    "check_event_types",
    "check_event_uuid",
    "check_expected_version",
    "check_name",
    "check_optional_name",
    "check_optional_text",
    "check_position",
    "check_sort",
    "check_start_from",
    "check_stream_prefix",
    "check_text",
]

#: Most UTF-8 bytes in a name: stream_uuid, subscription_name, source_uuid, source_type,
#: event_type, correlation_id, causation_id. Generous, and safe for the unique indexes: a
#: btree row holds at most about 2,700 bytes, and the subscriptions index holds two names.
MAX_NAME_BYTES = 1024

#: The largest integer PostgreSQL's bigint holds: positions, versions, counts and event_ids
#: beyond it are a ValueError before anything is sent.
MAX_BIGINT = 2**63 - 1


def check_text(value: Any, name: str) -> str:
    """A non-empty str PostgreSQL text can hold: valid UTF-8, no NUL characters."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__qualname__}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    _check_storable(value, name)
    return value


def _check_storable(value: str, name: str) -> None:
    if "\x00" in value:
        raise ValueError(f"{name} must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{name} is not valid Unicode text (lone surrogate)") from None


def check_name(value: Any, name: str) -> str:
    """A non-empty storable str of at most MAX_NAME_BYTES in UTF-8 (indexes cap row size)."""
    check_text(value, name)
    _check_length(value, name)
    return str(value)


def check_optional_name(value: Any, name: str) -> str | None:
    """None, or a storable str of at most MAX_NAME_BYTES in UTF-8."""
    if check_optional_text(value, name) is None:
        return None
    _check_length(value, name)
    return str(value)


def _check_length(value: str, name: str) -> None:
    # Characters are at most 4 bytes: only long values need encoding to be measured.
    if len(value) * 4 <= MAX_NAME_BYTES:
        return
    size = len(value.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        raise ValueError(
            f"{name} is too long: {size} bytes in UTF-8, at most {MAX_NAME_BYTES} allowed"
        )


def check_optional_text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str or None, got {type(value).__qualname__}")
    _check_storable(value, name)
    return value


def check_position(value: Any, name: str) -> int:
    """An int >= 0 (bools are refused)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__qualname__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    if value > MAX_BIGINT:
        raise ValueError(f"{name} is too large: {value} (at most {MAX_BIGINT}, a bigint)")
    return value


def check_count(value: Any, name: str) -> int:
    """An int >= 1 (bools are refused); a negative one is told the same rule, >= 1."""
    if isinstance(value, int) and not isinstance(value, bool) and value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return check_position(value, name)


def check_backward_start(value: Any, name: str) -> int:
    """A backward read's start: -1 (from the last event) or an int >= 0."""
    if isinstance(value, int) and not isinstance(value, bool) and value == -1:
        return -1
    try:
        return check_position(value, name)
    except ValueError:
        raise ValueError(f"{name} must be -1 (from the last event) or >= 0, got {value}") from None


def check_event_types(value: Any) -> tuple[str, ...] | None:
    """None (every type) or a non-empty collection of event type names (not a bare str)."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Collection):
        raise TypeError(
            f"event_types must be a collection of str or None, got {type(value).__qualname__}"
        )
    types = tuple(check_name(t, "event_types item") for t in value)
    if not types:
        raise ValueError("event_types must not be empty (None means every type)")
    return types


def check_stream_prefix(value: Any) -> str | None:
    """None (every stream) or a non-empty name: matched literally, wildcards and all."""
    return None if value is None else check_name(value, "stream_prefix")


def check_sort(sort_by: Any, sort_dir: Any) -> tuple[str, bool]:
    """(sort field, descending?) for paginate_streams."""
    if not isinstance(sort_by, str) or sort_by not in SORT_FIELDS:
        raise ValueError(f"sort_by must be one of {', '.join(SORT_FIELDS)}, got {sort_by!r}")
    if not isinstance(sort_dir, str) or sort_dir not in ("asc", "desc"):
        raise ValueError(f"sort_dir must be 'asc' or 'desc', got {sort_dir!r}")
    return sort_by, sort_dir == "desc"


def check_start_from(value: Any) -> str | int:
    """ "origin", "current" or an int position >= 0 (InvalidStartFromError otherwise; a
    position beyond bigint: ValueError)."""
    if value in ("origin", "current") and isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return check_position(value, "start_from")
    raise InvalidStartFromError(
        f"start_from must be 'origin', 'current' or an int >= 0, got {value!r}"
    )


def check_expected_version(value: Any, name: str = "expected_version") -> int | ExpectedVersion:
    """An int >= 0 or one of ANY_VERSION, NO_STREAM, STREAM_EXISTS."""
    if isinstance(value, ExpectedVersion):
        return value
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(
            f"{name} must be an int >= 0 or ANY_VERSION, NO_STREAM or STREAM_EXISTS, "
            f"got {type(value).__qualname__}"
        )
    return check_position(value, name)


def check_event_uuid(value: Any) -> uuid.UUID | None:
    """None (the store assigns one) or a uuid.UUID other than the nil UUID."""
    if value is None:
        return None
    if not isinstance(value, uuid.UUID):
        raise TypeError(f"event_uuid must be a uuid.UUID or None, got {type(value).__qualname__}")
    if value.int == 0:
        raise ValueError("event_uuid must not be the nil UUID")
    return value
