"""Event UUIDs assigned by the store: time-ordered (the UUIDv7 layout of RFC 9562).

A 48-bit Unix time in milliseconds, then the version (7), 12 random bits, the variant and 62
random bits. UUIDs made in the same millisecond are in random order among themselves, which
is enough: new index entries land near the right edge of the unique index on event_uuid
instead of on random pages of it (see the README's measurement).
"""

from __future__ import annotations

import os
import time
import uuid

__all__ = ["new_uuids"]

_VERSION = 0x7 << 76
_VARIANT = 0b10 << 62
_RAND_A = 0xFFF
_RAND_B = (1 << 62) - 1
_new = object.__new__
_set = object.__setattr__
_UNKNOWN = uuid.SafeUUID.unknown


def new_uuids(count: int) -> list[uuid.UUID]:
    """`count` fresh time-ordered UUIDs (80 random bits from os.urandom per millisecond)."""
    head = ((time.time_ns() // 1_000_000) << 80) | _VERSION | _VARIANT
    random = os.urandom(10 * count)
    from_bytes = int.from_bytes
    out = []
    for start in range(0, 10 * count, 10):
        bits = from_bytes(random[start : start + 10])
        value = head | ((bits >> 64) & _RAND_A) << 64 | (bits & _RAND_B)
        # uuid.UUID(int=...) validates and converts; these values are valid by construction.
        made = _new(uuid.UUID)
        _set(made, "int", value)
        _set(made, "is_safe", _UNKNOWN)
        out.append(made)
    return out
