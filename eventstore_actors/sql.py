"""The SQL statements, kept as files under ``sql/`` and read once."""

from __future__ import annotations

from functools import cache
from pathlib import Path

__all__ = ["statement"]

_CANDIDATES = (
    Path(__file__).parent / "_sql",  # installed wheel: force-included copy of sql/
    Path(__file__).parent.parent / "sql",  # source checkout or editable install
)


@cache
def _root() -> Path:
    for path in _CANDIDATES:
        if (path / "schema").is_dir():
            return path
    raise RuntimeError(f"SQL files not found in {', '.join(map(str, _CANDIDATES))}")


@cache
def statement(name: str) -> str:
    """The text of ``sql/<name>.sql``, e.g. ``statement("append/lock_counter")``."""
    return (_root() / f"{name}.sql").read_text(encoding="utf-8")
