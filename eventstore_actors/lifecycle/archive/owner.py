"""Whose archive a target is: a target directory (or fsspec URL) belongs to one store.

Archive files are named after their event_id ranges, and an archive removes the files it
does not list past its last range (what a crashed archive left): two schemas, or two
databases, archiving to one target would replace and remove each other's files. So the
first archive into a target writes a marker file there naming the store (its store_id from
schema version 7, its database and its schema), and an archive into a target whose marker
names another store is refused (ConfigError) before anything is written. All three must
match: a copy of a store (a restored dump, a copied database) shares its store_id, and is
told apart by its names (a copy under the very same names on another server is not: it must
not be given its original's target).

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
        """The owner a marker names, or None when it is not a marker (not JSON, too deep,
        not an object, a field missing or not a string)."""
        try:
            found = json.loads(data)
        except (ValueError, RecursionError):
            return None
        if not isinstance(found, dict) or found.get("eventstore_actors") != "archive target":
            return None
        fields = [found.get(key) for key in ("store_id", "database", "schema")]
        strings = [value for value in fields if isinstance(value, str) and value]
        return Owner(*strings) if len(strings) == 3 else None


def claim(target: Target, owner: Owner, listed: set[str]) -> None:
    """Make sure `target` is `owner`'s and writable (`Target.check_writable`, after the
    marker is read), writing its marker on first use, or raise ConfigError naming the store
    it belongs to; `listed`: the URLs in this schema's manifest."""
    found = _marker(target)
    if found is not None and found != owner:
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
        if found != owner:
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
    """Why `target`, whose marker names `found`, is not `owner`'s."""
    shown, mine = _shown(target), f"schema {owner.schema!r} of database {owner.database!r}"
    if found is None:
        return (
            f"archive target {shown} belongs to another store; give {mine} its own target; "
            "nothing was written"
        )
    theirs = f"schema {found.schema!r} of database {found.database!r}"
    if found.store_id == owner.store_id:  # the same identity under other names
        return (
            f"archive target {shown} belongs to {theirs}, whose identity this store shares "
            f"(store {found.store_id}): {mine} is a copy of that store (a restored dump, a "
            "copied database), which must archive to a target of its own, or that store "
            f"renamed. If it was renamed, remove {MARKER} from the target: a target is taken "
            "again when every archive file in it is listed by this schema; nothing was written"
        )
    if (found.database, found.schema) == (owner.database, owner.schema):
        return (
            f"archive target {shown} belongs to an earlier store of {theirs} (store "
            f"{found.store_id}; this one is {owner.store_id}): the schema was created anew "
            "since, and its manifest lists none of those files; give it a new target; "
            "nothing was written"
        )
    return (
        f"archive target {shown} belongs to {theirs} (store {found.store_id}): a target holds "
        f"the archive of one store, give {mine} its own; nothing was written"
    )


def _why(exc: BaseException) -> str:
    return str(getattr(exc, "strerror", None) or type(exc).__name__)


def _shown(target: Target) -> str:
    return redact_url(repr(target.url), target.url)
