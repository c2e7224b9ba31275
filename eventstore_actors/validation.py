"""Argument checks shared by the facade: bad input fails here, before anything is written."""

from __future__ import annotations

from typing import Any

__all__ = ["check_count", "check_optional_text", "check_position", "check_text"]


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
    if value >= 2**63:
        raise ValueError(f"{name} is too large: {value}")
    return value


def check_count(value: Any, name: str) -> int:
    """An int >= 1."""
    check_position(value, name)
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)
