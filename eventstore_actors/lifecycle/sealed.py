"""Reads that show what is stored rather than fail: inside `marking_sealed()`, an event whose
encrypted data cannot be decrypted here has `data=SEALED` (the console's pages must not fail
because of one such event). Kept apart from encryption.py, which only asks `marking()`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

__all__ = ["SEALED", "marking", "marking_sealed"]


class _Sealed:
    """The data of an event read inside `marking_sealed()` that could not be decrypted here
    (one instance)."""

    _instance: _Sealed | None = None

    def __new__(cls) -> _Sealed:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "SEALED"

    def __reduce__(self) -> str:
        return "SEALED"


#: What `RecordedEvent.data` holds, for reads inside `marking_sealed()`, when the event's
#: data is encrypted and cannot be decrypted here (no keyring, or a key that does not open
#: it). Never seen by reads outside that block: they raise instead.
SEALED: Any = _Sealed()

_MARKING_SEALED: ContextVar[bool] = ContextVar("eventstore_marking_sealed", default=False)


def marking() -> bool:
    """Whether this thread or task is inside `marking_sealed()`."""
    return _MARKING_SEALED.get()


@contextmanager
def marking_sealed() -> Iterator[None]:
    """Within this block (this thread or task), reads give an event whose encrypted data
    cannot be decrypted here `data=SEALED` instead of raising NoKeyringError (or the
    EventStoreError of a key that does not open it): for tools that show what is stored
    (the console), which must not fail on a page because of one such event. The ciphertext
    is never returned. A row that says its subject is forgotten still reads as FORGOTTEN;
    without a keyring, others do not say it (ask `is_forgotten`)."""
    token = _MARKING_SEALED.set(True)
    try:
        yield
    finally:
        _MARKING_SEALED.reset(token)
