"""A store's master key, checked at start against the schema's data keys.

Why: a store started with a master key that did not wrap the schema's data keys read none of
them, but it wrapped the keys of new subjects with it, so `data_keys` mixed keys of two
master keys: the stores with the right key could not read those subjects, and no rotation
could finish any more (each key must open with its `old` or its `new`). So `EventStore.start`
refuses such a key (ConfigError) before anything is written: the entry points that take a
master key (the eventsourcing module's EVENTSTORE_MASTER_KEY, the console command) start a
store and are checked with it.

Why a sample, and one key of it: one statement reads the first and the last few keys by
subject (two probes of the primary key: a start costs the same with a million subjects), and
the master key passes when it unwraps one of them. Not all: while a rotation runs, a store
still running with the old key creates keys wrapped by it, left so until the next rotation
(docs/personal-data.md), so a store started with the new key may meet some of those; the
rest, created before the rotation, are wrapped by the new key. An empty table takes any
key. With an application's KeyStore there is no master key, nothing to check.
"""

from __future__ import annotations

from typing import Any

import psycopg

from ..errors import ConfigError
from ..storage import keys
from .encryption import Keyring

__all__ = ["SAMPLE", "check_master_key"]

#: The first and the last this many data keys (by subject) are tried.
SAMPLE = 8


def check_master_key(conn: psycopg.Connection[Any], schema: str, keyring: Keyring) -> None:
    """ConfigError unless the keyring's master key unwraps one of the sampled data keys of
    `schema` (or none is stored, or the keyring uses a KeyStore). The message names neither a
    key nor any data."""
    if keyring.key_store is not None:
        return
    sample = keys.sample_wrapped(conn, schema, SAMPLE)
    if sample and not any(keyring.unwraps(wrapped) for wrapped in sample):
        raise ConfigError(
            f"the master key does not open the data keys of schema {schema!r} (another master "
            "key wrapped them): start with that key (Encryption(master_key=...) or "
            "EVENTSTORE_MASTER_KEY), or rotate them to this one with admin.rotate_master_key; "
            "nothing was written"
        )
