"""A KeyStore as an application's KMS would be, in memory: the tests' stand-in for the
application's own key service (not a mock of the database: keys stay in PostgreSQL's
place only when no KeyStore is given)."""

from __future__ import annotations

import os

__all__ = ["MemoryKeyStore"]


class MemoryKeyStore:
    """Data keys by subject (one instance may be shared by two store instances); `deleted`
    lists the subjects whose key a forget deleted."""

    def __init__(self) -> None:
        self.keys: dict[str, bytes] = {}
        self.deleted: list[str] = []

    def get(self, subject: str) -> bytes | None:
        return self.keys.get(subject)

    def create(self, subject: str) -> bytes:
        return self.keys.setdefault(subject, os.urandom(32))

    def delete(self, subject: str) -> None:
        self.deleted.append(subject)
        self.keys.pop(subject, None)
