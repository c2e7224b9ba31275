"""The `state` bytes the `eventsourcing` module hands the library for an event with a data
subject (personal data, encrypted per subject, written through the EventStore API: see
docs/personal-data.md and docs/eventsourcing.md).

The library's state is the bytes it encoded; for an event with a subject that is the event's
data decrypted (the bytes its writer's serializer produced), never ciphertext. Once the
subject is forgotten it is `FORGOTTEN_STATE`, at the event's old position: a JSON object that
the library's default mapper turns into a domain event with ``forgotten=True`` (and its
originator_id and originator_version), so a follower that skips such events keeps running.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable

from eventsourcing.persistence import OperationalError, ProgrammingError
from eventsourcing.utils import resolve_topic

from ..errors import ConfigError, EventStoreError, StoreUnavailableError
from ..lifecycle.encryption import (
    ENV_MASTER_KEY,
    Encryption,
    NoKeyringError,
    keyring_of,
    open_stored,
)
from ..storage.recorders import EventRow

__all__ = ["FORGOTTEN_STATE", "States", "encryption_from"]

#: The state of an event whose subject is forgotten (`RecordedEvent.data` is FORGOTTEN).
FORGOTTEN_STATE = b'{"forgotten":true}'


class States:
    """The library's state bytes of stored rows, decrypted with the store's keyring."""

    def __init__(
        self, serializer: object, is_forgotten: Callable[[str], bool] | None = None
    ) -> None:
        self._keyring = keyring_of(serializer)
        #: Asks the database (rows of the store's reads carry the forget generation, not a
        #: flag: without a keyring to compare it with, a forgotten subject is asked for).
        self._is_forgotten = is_forgotten

    def of(self, row: EventRow) -> bytes:
        _, _, data, subject, forgotten = row
        if subject is None:
            return data
        try:
            plain = open_stored(self._keyring, subject, data, forgotten)
        except NoKeyringError:
            # Rows read with the forget generation do not say whether their subject is
            # forgotten: without a keyring, the store is asked (this error path only).
            asked = self._is_forgotten
            if forgotten is not False and asked is not None and asked(subject):
                return FORGOTTEN_STATE
            raise ProgrammingError(
                "an event's data is encrypted (it has a data subject) and this module runs "
                f"without encryption: set {ENV_MASTER_KEY} (32 bytes, base64)"
            ) from None
        except StoreUnavailableError as exc:
            raise OperationalError(str(exc)) from exc
        except EventStoreError as exc:
            raise ProgrammingError(str(exc)) from exc
        return FORGOTTEN_STATE if plain is None else plain  # None: forgotten


def encryption_from(master_key: str | None, key_store_topic: str | None) -> Encryption | None:
    """The store's encryption from the settings: a `KeyStore` built by the callable (a class,
    a function) named by `key_store_topic` (``module:name``), else the base64 master key;
    None when neither is set."""
    if key_store_topic:
        try:
            make = resolve_topic(key_store_topic)
        except Exception as exc:
            raise ConfigError(f"key store topic {key_store_topic!r} cannot be resolved") from exc
        return Encryption(key_store=make())
    if not master_key:
        return None
    try:
        key = base64.b64decode(master_key.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{ENV_MASTER_KEY} is not valid base64") from None
    return Encryption(master_key=key)
