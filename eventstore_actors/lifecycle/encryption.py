"""Encryption of personal data per data subject (AES-256-GCM), with keys cached per store.

Each subject has a data key of its own, created on first use and stored wrapped by the
master key (AES key wrap, RFC 3394) in the schema's `data_keys` table, or kept by the
application's `KeyStore` (a KMS). Forgetting a subject deletes its key: its events stay where
they are, unreadable (crypto-shredding).

Stored data of an event with a subject: a version byte, a 12-byte nonce, then ciphertext and
tag; the subject is the associated data, so a ciphertext cannot be passed off as another
subject's. The nonce is random, except for events whose caller gave an event_uuid: then it
is derived from the key, the UUID and the plaintext (HMAC-SHA256), so a retried append
encrypts to the very same bytes and the idempotency check (which compares stored bytes)
still tells a retry from another event under that UUID. Equal ciphertexts then reveal only
that a retry repeated the same event.

Nothing here logs or puts a subject, a key or data in an exception message.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..errors import ConfigError, EventStoreError, StoreUnavailableError, SubjectForgottenError
from .sealed import SEALED, marking

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "ENV_MASTER_KEY",
    "Encryption",
    "KeyStore",
    "Keyring",
    "NoKeyringError",
    "SealedSerializer",
    "keyring_of",
    "open_stored",
    "rewrapper",
    "sealing",
]

#: The environment variable read for the master key (base64) when none is given.
ENV_MASTER_KEY = "EVENTSTORE_MASTER_KEY"

_VERSION = b"\x01"
_NONCE = 12
_KEY = 32


@runtime_checkable
class KeyStore(Protocol):
    """Where an application keeps data keys itself (a KMS), instead of the schema's table
    wrapped by a master key. Keys are 32 bytes (AES-256)."""

    def get(self, subject: str) -> bytes | None:
        """The subject's data key, or None when it has none (never had, or deleted)."""
        ...

    def create(self, subject: str) -> bytes:
        """A new data key for the subject, kept from now on (a second call for the same
        subject may return the key it already has)."""
        ...

    def delete(self, subject: str) -> None:
        """Destroy the subject's key for ever (nothing when it has none)."""
        ...


#: Nonces drawn from the OS at once, per thread of a keyring (one system call per block).
_NONCES = 256
_SLICES = [slice(i, i + _NONCE) for i in range(0, _NONCE * _NONCES, _NONCE)]
#: Every keyring of this process: a forked child forgets their drawn nonces (its own must
#: not be its parent's).
_keyrings: weakref.WeakSet[Keyring] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for keyring in list(_keyrings):
        keyring._random = threading.local()


os.register_at_fork(after_in_child=_after_fork_in_child)


@functools.cache
def _invalid_tag() -> type[Exception]:
    from cryptography.exceptions import InvalidTag

    return InvalidTag


def _aesgcm() -> type[AESGCM]:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:  # pragma: no cover - depends on the installation
        raise ConfigError(
            "encryption needs the 'cryptography' package (the extra 'crypto')"
        ) from None
    return AESGCM


class Encryption:
    """Encrypt the data of events and snapshots that name a `subject` (`EventStore.start(...,
    encryption=Encryption(...))`).

    `master_key`: 32 bytes, or a function returning them, or None to read the base64
    environment variable EVENTSTORE_MASTER_KEY; it wraps the data keys stored in the schema.
    `key_store`: keep data keys in the application's KeyStore instead (the master key is
    then not used). Checked at `start` (ConfigError, before anything is written): a master
    key must be 32 bytes and unwrap one of the schema's data keys it samples, the oldest and
    newest few (any key when there is none yet; see lifecycle/masterkey.py). Never shown by
    repr.
    """

    def __init__(
        self,
        master_key: bytes | Callable[[], bytes] | None = None,
        key_store: KeyStore | None = None,
    ) -> None:
        if key_store is not None and not isinstance(key_store, KeyStore):
            raise ConfigError("key_store must have get(subject), create(subject), delete(subject)")
        if not (master_key is None or callable(master_key) or isinstance(master_key, bytes)):
            raise ConfigError("master_key must be bytes, a function returning bytes, or None")
        self._master_key = master_key
        self.key_store = key_store

    def __repr__(self) -> str:
        kind = "key_store" if self.key_store is not None else "master_key"
        return f"Encryption({kind}=...)"

    def master_key(self) -> bytes:
        """The 32-byte master key (ConfigError when it is missing or not 32 bytes)."""
        return resolve_master_key(self._master_key)

    def keyring(self) -> Keyring:
        """A new key cache for one store (ConfigError on a bad master key)."""
        _aesgcm()
        if self.key_store is not None:
            return Keyring(None, self.key_store)
        return Keyring(self.master_key(), None)


def resolve_master_key(given: bytes | Callable[[], bytes] | None) -> bytes:
    """`given` (or the environment's key) as 32 bytes; ConfigError otherwise (the message
    never holds the key)."""
    if given is None:
        text = os.environ.get(ENV_MASTER_KEY)
        if not text:
            raise ConfigError(
                f"no master key: give Encryption(master_key=...) or set {ENV_MASTER_KEY} "
                "(32 bytes, base64)"
            )
        try:
            key = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{ENV_MASTER_KEY} is not valid base64") from None
    elif callable(given):
        try:
            key = given()
        except Exception as exc:
            raise ConfigError(f"the master key function failed: {type(exc).__name__}") from None
    else:
        key = given
    if not isinstance(key, (bytes, bytearray)):
        raise ConfigError("the master key must be bytes")
    if len(key) != _KEY:
        raise ConfigError(f"the master key must be {_KEY} bytes, got {len(key)}")
    return bytes(key)


def wrap_key(master: bytes, key: bytes) -> bytes:
    """`key` wrapped by `master` (AES key wrap)."""
    from cryptography.hazmat.primitives.keywrap import aes_key_wrap

    return aes_key_wrap(master, key)


def unwrap_key(master: bytes, wrapped: bytes) -> bytes:
    """The data key wrapped in `wrapped`; EventStoreError when `master` did not wrap it."""
    from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap

    try:
        return aes_key_unwrap(master, wrapped)
    except (InvalidUnwrap, ValueError):
        raise EventStoreError(
            "cannot unwrap a data key with this master key (a different master key wrapped "
            "it: check EVENTSTORE_MASTER_KEY or rotate with admin.rotate_master_key)"
        ) from None


def rewrapper(old: bytes, new: bytes) -> Callable[[bytes], bytes | None]:
    """For master key rotation: old wrapped key -> wrapped by `new` (None: it already is);
    ConfigError for keys that are not 32 bytes, and for a stored key neither unwraps (a
    wrong `old`: the message says so, never a key)."""
    old, new = resolve_master_key(old), resolve_master_key(new)

    def rewrap(wrapped: bytes) -> bytes | None:
        try:
            return wrap_key(new, unwrap_key(old, wrapped))
        except EventStoreError:
            try:
                unwrap_key(new, wrapped)
            except EventStoreError:
                raise ConfigError(
                    "a data key is wrapped by neither the old nor the new master key: the old "
                    "key must be the one that wrapped them (nothing was re-wrapped)"
                ) from None
            return None

    return rewrap


class _Key:
    """One subject's data key, ready to use: `encrypt` and `decrypt` (its AES-GCM's, bound
    once: the hot paths call them per event) with the associated data `aad` (the subject in
    UTF-8)."""

    __slots__ = ("aad", "decrypt", "encrypt", "key")

    def __init__(self, key: bytes, subject: str) -> None:
        if not isinstance(key, (bytes, bytearray)) or len(key) != _KEY:
            raise EventStoreError(f"a data key must be {_KEY} bytes")
        self.key = bytes(key)
        aead = _aesgcm()(self.key)
        self.encrypt: Callable[[bytes, bytes, bytes], bytes] = aead.encrypt
        self.decrypt: Callable[[bytes, bytes, bytes], bytes] = aead.decrypt
        self.aad = subject.encode("utf-8")


#: Fetches a subject's wrapped key, whether it is forgotten, and the forget generation, all
#: from one snapshot (the store's database).
Fetch = Callable[[str], tuple[bytes | None, bool, int]]
#: Stores a new wrapped key unless one is there; the key stored, whether forgotten, and the
#: forget generation (one snapshot).
Create = Callable[[str, bytes], tuple[bytes | None, bool, int]]
#: Whether a subject is forgotten.
IsForgotten = Callable[[str], bool]
#: What a read row says of its subject (reader.Row's last column): True, forgotten in the
#: row's snapshot; False, not forgotten there; an int (never a bool), the forget generation
#: of the row's snapshot (the subject's state is then the key cache's business). None where a
#: row does not say (its key is then fetched anew).
Flag = bool | int

#: A cache entry of a subject found forgotten (None is "not cached").
_FORGOTTEN: Any = False
#: At most this many older generations kept per cache generation (reads of a replica that
#: lags, long transactions).
_OLDER = 64


class Keyring:
    """One store's data keys: a cache over the schema's table or the application's KeyStore.

    The store attaches its database access (`attach`) once its pool is open. Thread-safe.

    Why a cached key is never used for a subject forgotten before the row was read. The
    forget generation (schema v5, forget_generation) is a random 62-bit value, replaced in
    the very transaction that marks a subject forgotten: a generation names one set of
    forgotten subjects (two forgets draw the same value with a chance of about 2^-52, the
    precision of PostgreSQL's random(), so even a database restored from a backup or
    promoted after a lossy fail-over, whose history diverged, does not repeat one with
    another meaning). Every cache entry (a key, or _FORGOTTEN) was
    fetched from a snapshot whose generation keys/get.sql returns with it, and the cache
    `state` is (generation g, entries of g, older): `older` holds generations whose set of
    forgotten subjects is known to be contained in g's. A read statement returns its
    snapshot's generation r once (an InitPlan). A row uses the cache only when r == g (the
    same forgotten subjects: the subject was not forgotten for the read either) or r is in
    `older` (fewer forgotten subjects: neither). Otherwise the key is fetched again, after
    the read, hence from a snapshot that sees at least the forgets the read saw (the reads'
    servers, replicas included, replay the history of the server keys are fetched from):
    the row may use it, r then goes into `older` of the fetch's generation, and the cache
    holds that generation's entries from then on. Hence once forget_subject has returned,
    every read statement started after that returns a generation no cache entry fetched
    before the forget carries, nor has in `older`: no process opens that subject's events,
    whatever its cache held. Rows whose flag is a bool (statements that still probe
    forgotten_subjects per row: snapshots, parked events, the archive's rows) say it in
    their own snapshot, as before. The cache is also emptied when a forget is notified (any
    process), so that keys of forgotten subjects do not stay in memory.

    With a KeyStore the generation is read (with the forgotten flag) before the KeyStore is
    asked: a forget deletes the key from the KeyStore before it commits, so a key the
    KeyStore still returned belongs to a subject not forgotten at that generation.
    """

    def __init__(self, master: bytes | None, key_store: KeyStore | None) -> None:
        self._master = master
        self.key_store = key_store
        #: (generation, subject -> its key or _FORGOTTEN, older generations); replaced
        #: whole, never mutated but for additions and evictions. Read without the lock by
        #: the decode step's fast path (storage/reader.decode), which falls back to `open`.
        #: -1: no generation yet (the database draws them from 0 to 2^62 - 1).
        self.state: tuple[int, dict[str, Any], set[int]] = (-1, {}, set())
        #: Evictions so far (forgets, here or notified): a key fetched while one happened is
        #: used for its rows but not cached, so that a cached key always means "no forget
        #: evicted this subject since" (what `still_open` relies on).
        self.evictions = 0
        #: Until when (time.monotonic) the cache is known current for hand-outs: every
        #: forget committed before the listener's last confirmation was handled (see
        #: lifecycle/eviction.py). 0.0: not known (no listener yet, or it lost its
        #: connection): `still_open` asks the database.
        self.lease_until = 0.0
        self._lock = threading.Lock()
        self._fetch: Fetch | None = None
        self._create: Create | None = None
        self._is_forgotten: IsForgotten | None = None
        self._random = threading.local()  # random nonces, drawn in bulk per thread
        _keyrings.add(self)

    @property
    def cache(self) -> dict[str, Any]:
        """The entries of the current generation (subject -> key, or _FORGOTTEN)."""
        return self.state[1]

    @property
    def generation(self) -> int:
        """The forget generation the cached entries were fetched at (-1: none yet)."""
        return self.state[0]

    def _nonce(self) -> bytes:
        """A fresh random 96-bit nonce. Drawn from the OS in blocks (one system call per 256
        nonces: it cost a third of an encryption), handed out by an iterator of the thread's
        (one call, no bookkeeping per nonce); a forked child draws its own."""
        local = self._random
        try:
            nonce: bytes = next(local.nonces)
        except (AttributeError, StopIteration):  # first use on this thread, or used up
            local.nonces = map(os.urandom(_NONCE * _NONCES).__getitem__, _SLICES)
            nonce = next(local.nonces)
        return nonce

    def attach(self, fetch: Fetch, create: Create, is_forgotten: IsForgotten) -> None:
        self._fetch, self._create, self._is_forgotten = fetch, create, is_forgotten

    # The cache --------------------------------------------------------------------------------
    def cached(self, subject: str) -> bool:
        """Whether `subject`'s key is in this store's cache (tests, metrics)."""
        return isinstance(self.state[1].get(subject), _Key)

    def evict(self, subject: str | None = None, *, read: bool = False) -> None:
        """Drop `subject`'s key from the cache (None: every key): a forget, here or notified.
        `read`: a row read said the subject is forgotten (an eviction only if a key was
        cached: a catch-up over many such rows does not stop other keys being cached)."""
        with self._lock:
            generation, entries, older = self.state
            if subject is None:
                self.state = (generation, {}, older)
                self.evictions += 1
            elif isinstance(entries.pop(subject, None), _Key) or not read:
                self.evictions += 1

    def _keep(
        self,
        subject: str,
        entry: Any,
        generation: int,
        read_at: int | None = None,
        evictions: int | None = None,
    ) -> None:
        """Cache `entry` (a key, or _FORGOTTEN) fetched at `generation`, after a read at
        generation `read_at` (None: no read): with the entries of that generation (another
        generation's are dropped: the last fetch decides). A key is not cached when an
        eviction happened since `evictions` was read (before its fetch): it may predate a
        forget that evicted the subject meanwhile."""
        with self._lock:
            if evictions is not None and evictions != self.evictions and entry is not _FORGOTTEN:
                return
            current, entries, older = self.state
            if generation != current:
                entries, older = {}, set()
                self.state = (generation, entries, older)
            entries[subject] = entry
            if read_at is not None and read_at != generation and len(older) < _OLDER:
                older.add(read_at)

    # Writing ----------------------------------------------------------------------------------
    def seal(self, subject: str, plain: bytes, event_uuid: uuid.UUID | None = None) -> bytes:
        """`plain` encrypted under `subject`'s key (created on first use);
        SubjectForgottenError when the subject is forgotten. (A cached key is used whatever
        its generation: the database refuses the write of a forgotten subject.)"""
        key = self.state[1].get(subject) or self._for_write(subject)
        if event_uuid is None:
            nonce = self._nonce()
        else:
            mac = hmac.new(key.key, b"nonce" + event_uuid.bytes + plain, hashlib.sha256)
            nonce = mac.digest()[:_NONCE]
        return _VERSION + nonce + key.encrypt(nonce, plain, key.aad)

    def _for_write(self, subject: str) -> _Key:
        fetch, create, _ = self._attached()
        evictions = self.evictions
        wrapped, forgotten, generation = fetch(subject)
        if self.key_store is not None:
            if forgotten:
                self._keep(subject, _FORGOTTEN, generation)
                raise SubjectForgottenError("the data subject of this write is forgotten")
            raw = _kms(self.key_store.get, subject)
            if raw is None:
                raw = _kms(self.key_store.create, subject)
            key = _Key(raw, subject)
        else:
            if wrapped is None and not forgotten:
                assert self._master is not None
                fresh = wrap_key(self._master, os.urandom(_KEY))
                wrapped, forgotten, generation = create(subject, fresh)
            if forgotten or wrapped is None:
                if forgotten:
                    self._keep(subject, _FORGOTTEN, generation)
                raise SubjectForgottenError("the data subject of this write is forgotten")
            key = _Key(self._unwrap(wrapped), subject)
        self._keep(subject, key, generation, evictions=evictions)
        return key

    # Reading ----------------------------------------------------------------------------------
    def open(self, subject: str, sealed: bytes, flag: Flag | None = False) -> bytes | None:
        """The plaintext of `sealed` (stored data of an event of `subject`), or None when the
        subject is forgotten: `flag` (what the row says, see Flag) says so, or its key is
        gone since. EventStoreError when it cannot be decrypted (never the ciphertext)."""
        if flag is True:
            self.evict(subject, read=True)
            return None
        generation, entries, older = self.state
        if flag is False or flag == generation or flag in older:
            key = entries.get(subject)
            if key is None:
                key = self._for_read(subject, None)
        else:  # a read at another generation: fetch anew, after it
            key = self._for_read(subject, flag)
        if key is _FORGOTTEN:
            return None
        if len(sealed) < 1 + _NONCE + 16 or sealed[0] != 1:
            raise EventStoreError("the stored data is not in the encrypted format")
        try:
            decrypted: bytes = key.decrypt(sealed[1 : 1 + _NONCE], sealed[1 + _NONCE :], key.aad)
        except _invalid_tag():
            raise EventStoreError(
                "the stored data cannot be decrypted with its subject's data key"
            ) from None
        return decrypted

    def _for_read(self, subject: str, read_at: int | None) -> Any:
        """The subject's key, fetched (and cached), or _FORGOTTEN; `read_at`: the generation
        of the read the row came from (the fetch comes after it)."""
        fetch, _, _ = self._attached()
        evictions = self.evictions
        wrapped, forgotten, generation = fetch(subject)
        entry: Any
        if forgotten:
            entry = _FORGOTTEN
        elif self.key_store is not None:
            raw = _kms(self.key_store.get, subject)
            if raw is None:
                if fetch(subject)[1]:  # forgotten since
                    return _FORGOTTEN
                raise EventStoreError("the KeyStore has no data key for this event's subject")
            entry = _Key(raw, subject)
        else:
            if wrapped is None:
                raise EventStoreError("no data key is stored for this event's subject")
            entry = _Key(self._unwrap(wrapped), subject)
        self._keep(subject, entry, generation, read_at, evictions)
        return entry

    def lease(self, until: float) -> None:
        """The listener confirmed the cache current: trusted for hand-outs until `until`
        (time.monotonic; 0.0: no longer)."""
        self.lease_until = until

    def still_open(self, subject: str) -> bool:
        """Whether events of `subject` decoded earlier may still be handed out (see
        `forgotten_since`): its key is cached (no forget evicted it since it was cached) and
        the cache is under a lease (every forget committed until shortly before was
        handled: lifecycle/eviction.py), else the subject is not forgotten now (fetched: one
        statement, then cached)."""
        entry = self.state[1].get(subject) if time.monotonic() < self.lease_until else None
        if entry is None:
            entry = self._for_read(subject, None)
        return entry is not _FORGOTTEN

    def _unwrap(self, wrapped: bytes) -> bytes:
        assert self._master is not None
        return unwrap_key(self._master, wrapped)

    def unwraps(self, wrapped: bytes) -> bool:
        """Whether this keyring's master key unwraps `wrapped` (the check at start,
        lifecycle/masterkey.py)."""
        try:
            self._unwrap(wrapped)
        except EventStoreError:
            return False
        return True

    def _attached(self) -> tuple[Fetch, Create, IsForgotten]:
        if self._fetch is None or self._create is None or self._is_forgotten is None:
            raise EventStoreError("the keyring is not attached to a running store")
        return self._fetch, self._create, self._is_forgotten


def _kms(call: Callable[[str], Any], subject: str) -> Any:
    """A call of the application's KeyStore; its failure as an EventStoreError that names
    neither the subject nor the KeyStore's own message (either may hold personal data)."""
    try:
        return call(subject)
    except EventStoreError:
        raise
    except Exception as exc:
        raise EventStoreError(f"the KeyStore failed ({type(exc).__name__})") from None


class SealedSerializer:
    """The store's serializer when it runs with encryption: the application's serializer,
    plus the store's `keyring` that the shared decode step (storage/reader.decode) and the
    writes use for events and snapshots with a subject."""

    def __init__(self, inner: Any, keyring: Keyring) -> None:
        self.inner = inner
        self.keyring = keyring
        self.serialize = inner.serialize
        self.deserialize = inner.deserialize

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"SealedSerializer({self.inner!r})"


class NoKeyringError(EventStoreError):
    """Stored data is encrypted (it has a subject) and the store runs without encryption. Its
    message says how to start a store with encryption; a caller set up another way (the
    eventsourcing module: an environment variable) says its own."""


def open_stored(
    keyring: Keyring | None, subject: str, sealed: bytes, flag: Flag | None = False
) -> bytes | None:
    """The plaintext of stored data of `subject` whose key is not cached (or not at the row's
    forget generation), or None when the subject is forgotten: the row says so (`flag` is
    True: its key leaves the cache) or the key fetched for it does. NoKeyringError without a
    keyring; EventStoreError when it cannot be decrypted (never the ciphertext). Inside
    `marking_sealed()`, SEALED instead of either error."""
    if flag is True:  # else False, or the forget generation of the row's read (see Flag)
        if keyring is not None:
            keyring.evict(subject, read=True)
        return None
    if keyring is None:
        if marking():
            return SEALED  # type: ignore[no-any-return]
        raise NoKeyringError(
            "its data is encrypted and this store runs without encryption (start it with "
            "encryption=Encryption(...))"
        )
    if not marking():
        return keyring.open(subject, sealed, flag)
    try:
        return keyring.open(subject, sealed, flag)
    except StoreUnavailableError:
        raise
    except EventStoreError:  # a key that does not open it: shown as sealed
        return SEALED  # type: ignore[no-any-return]


def keyring_of(serializer: Any) -> Keyring | None:
    """The store's keyring when it runs with encryption (its serializer is sealed)."""
    return serializer.keyring if isinstance(serializer, SealedSerializer) else None


def sealing(serializer: Any, what: str) -> Keyring:
    """The keyring to encrypt `what` (an event, a snapshot) with a subject; ConfigError when
    the store runs without encryption (before anything is written)."""
    keyring = keyring_of(serializer)
    if keyring is None:
        raise ConfigError(
            f"{what} with a subject needs encryption: start the store with "
            "encryption=Encryption(...)"
        )
    return keyring
