"""Schema versions and the migrations between them.

A store is created by ``schema/v1.sql`` followed by every migration in order, and an older
store is upgraded by the migrations it lacks: one path, so a fresh store and an upgraded one
are the same. Each run is one transaction under the schema's migration lock, and reads the
installed version again once it holds the lock, so concurrent runs wait for each other and
the later ones find nothing left to do.
"""

from __future__ import annotations

from ..sql import statement

__all__ = ["BASE_VERSION", "SCHEMA_VERSION", "pending", "script"]

#: The version ``schema/v1.sql`` creates.
BASE_VERSION = 1
#: The schema version this release writes and expects.
SCHEMA_VERSION = 7


def pending(installed: int | None) -> list[int]:
    """The versions to apply, in order, to a store at `installed` (None: no store yet)."""
    start = BASE_VERSION if installed is None else installed + 1
    return list(range(start, SCHEMA_VERSION + 1))


def script(version: int) -> str:
    """The SQL that brings a store to `version` from the version before it."""
    if version == BASE_VERSION:
        return statement(f"schema/v{BASE_VERSION}")
    return statement(f"migrations/v{version}")
