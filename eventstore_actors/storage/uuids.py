"""Event UUIDs assigned by the store: time-ordered (the UUIDv7 layout of RFC 9562).

A 48-bit Unix time in milliseconds, then the version (7), 12 random bits, the variant and 62
random bits. UUIDs made in the same millisecond are in random order among themselves, which
is enough: new index entries land near the right edge of the unique index on event_uuid
instead of on random pages of it (see the measurement in docs/streams.md).
"""

from __future__ import annotations

import os
import random as _random
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


#: A generator of the store's own, seeded from the OS at import and again in every forked
#: child (so two processes never share a sequence). Not the random module's shared one: an
#: application that calls random.seed(0) in two processes would make both produce the same
#: UUIDs. Unlike os.urandom it never releases the GIL: with many appending threads each
#: release costs a wait for the GIL (up to the 5 ms switch interval) on the append path.
#: Uniqueness, not secrecy, is what these bits are for (the unique index on event_uuid is
#: the backstop).
_generator = _random.Random(os.urandom(32))
_bits = _generator.getrandbits


def _reseed() -> None:
    _generator.seed(os.urandom(32))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed)


def new_uuids(count: int) -> list[uuid.UUID]:
    """`count` fresh time-ordered UUIDs (80 random bits each)."""
    head = ((time.time_ns() // 1_000_000) << 80) | _VERSION | _VARIANT
    bits_of = _bits
    out = []
    for _ in range(count):
        bits = bits_of(80)
        value = head | ((bits >> 64) & _RAND_A) << 64 | (bits & _RAND_B)
        # uuid.UUID(int=...) validates and converts; these values are valid by construction.
        made = _new(uuid.UUID)
        _set(made, "int", value)
        _set(made, "is_safe", _UNKNOWN)
        out.append(made)
    return out
