"""Forgets honoured by every process before `forget_subject` returns: key-cache leases and
eviction acks.

Why: a process hands out events it decoded earlier (a subscription's unacked batches, a page
being streamed) once it checked that their subject's key is still in its cache
(`handout.forgotten_since`). A forget in another process empties that cache when its notice
arrives, and a notice can be late without bound (a frozen or lost listener connection). So:

- A process trusts its key cache for hand-outs only under a lease (`Keyring.lease_until`).
  Its listener renews it every `RENEW` s by notifying itself on a channel of its own: its
  own notice comes after every notice committed before it was sent (PostgreSQL delivers
  them in commit order), and those were handled first, so the cache is current as of the
  send; the lease runs `LEASE` s from then. Connecting evicts the whole cache and starts a
  lease; losing the connection ends it at once. Without a lease, `Keyring.still_open` asks
  the database (a statement per subject: correct, only slower).
- Each such listener holds a shared advisory lock (`lock_key`) on its connection, so
  pg_locks names the sessions whose processes may hold keys; it answers each forget's
  notice, once it evicted, with the forget's token on the forgets channel.
- `forget_subject` listens on that channel before it commits, then waits for an answer from
  every session that holds the lock after the commit, or until `LEASE` (and a margin) after
  the commit: a process that did not answer by then has lost its lease, since it renewed
  it last before the forget committed (else it had handled the notice first).
Reads need none of this: each read statement carries its own forget generation (Keyring).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg

from ..config import Settings
from ..logs import get_logger
from ..storage import keys
from ..storage.connection import connect
from .encryption import Keyring

__all__ = ["LEASE", "RENEW", "Leasing", "Waiter", "listening", "lock_key"]

log = get_logger(__name__)

#: Seconds a process trusts its key cache for hand-outs after its listener last confirmed
#: it current (the longest a forget waits for a process that does not answer).
LEASE = 2.0
#: Seconds between the listener's confirmations (a notice to itself: one round trip).
RENEW = 0.5
#: Added to LEASE by a forget that waits for a process's lease to end: clocks of two
#: processes run at nearly, not exactly, the same rate.
_MARGIN = 0.05 * LEASE + 0.1


def lock_key(schema: str) -> str:
    """The text whose hash is the advisory lock the listeners of `schema`'s stores with
    encryption hold (shared) while connected."""
    return json.dumps(["eventstore_actors: key caches", schema])


@dataclass(frozen=True)
class Leasing:
    """What the listener of a store with encryption does for forgets (see the module)."""

    keyring: Keyring
    lock: str  # advisory lock key text (lock_key)
    probe_channel: str  # its own channel: notices to itself
    forgets_channel: str  # where forgets' tokens are answered

    @classmethod
    def of(cls, settings: Settings, keyring: Keyring, origin: str) -> Leasing:
        tag = hashlib.blake2b(origin.encode(), digest_size=4).hexdigest()
        channel = settings.probe_channel(tag)
        return cls(keyring, lock_key(settings.schema), channel, settings.forgets_channel)


def listening(conn: psycopg.Connection[Any], schema: str) -> set[int]:
    """The backend pids of the sessions holding `schema`'s listener lock now."""
    return keys.listeners(conn, lock_key(schema))


class Waiter:
    """One forget's wait for the listeners' answers, on a connection of its own that listens
    on the forgets channel from before the forget commits (None: none could be opened; the
    forget then waits until the leases ended)."""

    def __init__(self, settings: Settings) -> None:
        self.token = uuid.uuid4().hex
        self._settings = settings
        self._conn: psycopg.Connection[Any] | None = None
        try:
            conn = connect(settings, session=True)
        except Exception:
            return
        try:
            keys.listen(conn, settings.forgets_channel)
        except psycopg.Error:
            conn.close()
            return
        self._conn = conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def wait(self, committed_at: float, sessions: set[int] | None) -> int:
        """Until every one of `sessions` (None: not known) answered this forget's token, or
        until the leases of those that did not ended; how many did not answer (-1: the
        sessions were not known)."""
        deadline = committed_at + LEASE + _MARGIN
        answered: set[int] = set()
        conn = self._conn
        while sessions is None or not sessions <= answered:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if conn is None:
                threading.Event().wait(remaining)
                break
            try:
                for note in conn.notifies(timeout=remaining, stop_after=1):
                    if note.payload == self.token:
                        answered.add(note.pid)
            except psycopg.Error:
                conn = None
        if sessions is None:
            return -1
        missing = len(sessions - answered)
        if missing:
            log.warning(
                "forget_subject: store instances did not confirm the eviction; waited until "
                "their key caches could no longer be trusted",
                instances=missing,
                lease=LEASE,
            )
        return missing
