"""One-line hints naming the exact command that fixes a setup problem, DSN included (redacted).

A new user who sees "schema 'x' is not initialised" also needs to know *which* database the
store looked in, and a missing database should point at `eventstore-actors create`, not end
in a bare FATAL from the server.
"""

from __future__ import annotations

import re
import shlex

import psycopg.conninfo

from .config import redact

__all__ = ["command", "missing_database", "not_initialised"]

#: The server's message for a database that does not exist (English server messages).
_MISSING_DB_RE = re.compile(r'database "([^"]+)" does not exist')


def _has_password(dsn: str) -> bool:
    try:
        return bool(psycopg.conninfo.conninfo_to_dict(dsn).get("password"))
    except psycopg.ProgrammingError:
        return False


def command(name: str, dsn: str, schema: str = "public") -> str:
    """`eventstore-actors NAME --dsn '...' [--schema S]`, the password shown as ***."""
    parts = ["eventstore-actors", name, "--dsn", shlex.quote(redact(dsn))]
    if schema != "public":
        parts += ["--schema", schema]
    return " ".join(parts)


def _run(name: str, dsn: str, schema: str) -> str:
    note = " (your password in place of ***)" if _has_password(dsn) else ""
    return f"run `{command(name, dsn, schema)}`{note}"


def not_initialised(schema: str, dsn: str) -> str:
    """What to tell a user whose schema holds no store, and where the store looked."""
    return (
        f"schema {schema!r} is not initialised: {_run('init', dsn, schema)} "
        "(or admin.init(dsn, schema))"
    )


def missing_database(message: str, dsn: str, schema: str = "public") -> str | None:
    """The hint for a connection refused because its database does not exist, else None."""
    found = _MISSING_DB_RE.search(message)
    if found is None:
        return None
    return (
        f"database {found.group(1)!r} does not exist: to create it and the store's tables, "
        f"{_run('create', dsn, schema)}"
    )
