"""Whose archive a target is: a target directory (or fsspec URL) belongs to one store.

Archive files are named after their event_id ranges, and an archive removes the files it
does not list past its last range (what a crashed archive left): two schemas, or two
databases, archiving to one target would replace and remove each other's files. So the
first archive into a target writes a marker file there naming the store (its store_id from
schema version 7, with its database and schema for the messages), and an archive into a
target whose marker names another store is refused (ConfigError) before anything is written.

A target without a marker is taken when it holds no archive file that this schema's manifest
does not list: a new target, or this store's own from before version 7 (adopted). One that
holds other archive files is refused: they may be another store's. Reads never look at the
marker: the manifest says which file holds what.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ...config import redact_url
from ...errors import ConfigError
from .files import Target

__all__ = ["MARKER", "Owner", "claim"]

#: The marker's name in a target.
MARKER = "eventstore-actors-target.json"


@dataclass(frozen=True)
class Owner:
    """The store an archive writes for."""

    store_id: str
    database: str
    schema: str

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "eventstore_actors": "archive target",
                "store_id": self.store_id,
                "database": self.database,
                "schema": self.schema,
            },
            indent=1,
        ).encode()

    @staticmethod
    def from_bytes(data: bytes) -> Owner | None:
        """The owner a marker names, or None when it is not a marker."""
        try:
            found = json.loads(data)
            return Owner(str(found["store_id"]), str(found["database"]), str(found["schema"]))
        except (ValueError, TypeError, KeyError):
            return None


def claim(target: Target, owner: Owner, listed: set[str]) -> None:
    """Make sure `target` is `owner`'s and writable (`Target.check_writable`, after the
    marker is read), writing its marker on first use, or raise ConfigError naming the store
    it belongs to; `listed`: the URLs in this schema's manifest."""
    found = _marker(target)
    if found is not None and found.store_id != owner.store_id:
        raise ConfigError(_foreign(target, owner, found))
    if found is None:
        others = [n for n in _listing(target) if target.url_of(n) not in listed]
        if others:
            raise ConfigError(
                f"archive target {_shown(target)} holds {len(others)} archive files that "
                f"schema {owner.schema!r} does not list (e.g. {others[0]}) and no {MARKER} "
                "naming their store: they may be another store's archive, and a target holds "
                "the archive of one store; give this schema its own target (or, if they were "
                "left by an archive of this schema that did not finish, remove them); "
                "nothing was written"
            )
    target.check_writable()
    if found is None:
        target.create_once(MARKER, owner.to_bytes())
        found = _marker(target)  # read back: ours, or the marker of an archive that came first
        if found is None or found.store_id != owner.store_id:
            raise ConfigError(_foreign(target, owner, found))


def _listing(target: Target) -> list[str]:
    try:
        return target.archive_files()
    except Exception as exc:  # OSError locally; any error of an fsspec backend
        raise ConfigError(
            f"archive target {_shown(target)} cannot be listed: {_why(exc)}"
        ) from None


def _marker(target: Target) -> Owner | None:
    try:
        data = target.read_small(MARKER)
    except Exception as exc:  # OSError locally; any error of an fsspec backend
        raise ConfigError(
            f"archive target {_shown(target)}: its {MARKER} cannot be read: {_why(exc)}"
        ) from None
    if data is None:
        return None
    found = Owner.from_bytes(data)
    if found is None:
        raise ConfigError(
            f"archive target {_shown(target)} holds a {MARKER} that is not an eventstore-actors "
            "marker: nothing was written"
        )
    return found


def _foreign(target: Target, owner: Owner, found: Owner | None) -> str:
    whose = (
        "another store"
        if found is None
        else f"schema {found.schema!r} of database {found.database!r} (store {found.store_id})"
    )
    return (
        f"archive target {_shown(target)} belongs to {whose}: a target holds the archive of "
        f"one store, give schema {owner.schema!r} of database {owner.database!r} its own; "
        "nothing was written"
    )


def _why(exc: BaseException) -> str:
    return str(getattr(exc, "strerror", None) or type(exc).__name__)


def _shown(target: Target) -> str:
    return redact_url(repr(target.url), target.url)
