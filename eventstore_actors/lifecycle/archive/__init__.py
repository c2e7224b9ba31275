"""Archiving to Parquet (tiered storage): the oldest events moved out of PostgreSQL into
Apache Parquet files, and read back transparently.

`writer` moves events (crash-safe steps), `reader` is the overlay through which every read
of `storage.reader` takes archived ranges from the files (registered here, on import), the
manifest's SQL is in `storage.archive`. pyarrow (and fsspec for remote URLs) is the optional
extra `eventstore-actors[archive]`, imported only when files are written or read.
"""

from __future__ import annotations

from ...storage import archive as _hook
from .reader import ArchiveReader
from .result import ArchiveResult
from .writer import archive

__all__ = ["ArchiveResult", "archive"]

_hook.register(ArchiveReader())
