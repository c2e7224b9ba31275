"""Databases on a server: creating the store's database when it is missing.

Used by `admin.create` and by the embedded server; the connection is to a maintenance
database (``postgres``), in autocommit mode (``CREATE DATABASE`` cannot run in a transaction).
"""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg
from psycopg import sql

__all__ = ["ensure_database"]


def ensure_database(conn: psycopg.Connection[Any], dbname: str) -> bool:
    """Create `dbname` unless it exists; whether this call created it. Safe against a
    concurrent caller creating it first (then False)."""
    if conn.execute(sql.SQL("SELECT 1 FROM pg_database WHERE datname = %s"), (dbname,)).fetchone():
        return False
    # Another process may create it between the look-up and the CREATE.
    with contextlib.suppress(psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        return True
    return False
