"""The command line's answers: one line, the next command to run with the user's own --dsn and
--schema, a non-zero exit on failure; `--version`; `create`/`migrate` say when nothing was done.
"""

from __future__ import annotations

import shlex
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from support.cli import cli

from eventstore_actors import __version__, admin
from eventstore_actors.storage.migrations import SCHEMA_VERSION

ROOT = Path(__file__).resolve().parents[2]
V1_SQL = (ROOT / "sql" / "schema" / "v1.sql").read_text(encoding="utf-8")


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for raw in ("Traceback", "psycopg", "UndefinedColumn", "FATAL"):
        assert raw not in lines[0], lines[0]
    return lines[0]


def typed(dsn: str) -> str:
    """How a hint shows the --dsn the user typed."""
    return shlex.quote(dsn)


@pytest.fixture
def v1_schema(dsn: str) -> Iterator[str]:
    """An empty store made by release 1's own schema file."""
    name = f"c_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
        with conn.transaction():
            conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(name)))
            conn.execute(V1_SQL)
    try:
        yield name
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def fresh_schema(dsn: str) -> Iterator[str]:
    """A schema name nothing uses yet, dropped after the test."""
    name = f"c_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        admin.drop(dsn, name)


def test_version_prints_the_version() -> None:
    result = cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"eventstore-actors {__version__}"


def test_status_on_a_version_1_store_names_migrate_with_the_users_arguments(
    dsn: str, v1_schema: str
) -> None:
    line = one_line_error(cli("status", "--dsn", dsn, "--schema", v1_schema))
    assert "schema version 1" in line
    assert f"`eventstore-actors migrate --dsn {typed(dsn)} --schema {v1_schema}`" in line


def test_status_on_a_missing_database_names_create_with_the_users_arguments(dsn: str) -> None:
    missing = f"nosuch_{uuid.uuid4().hex[:8]}"
    user_dsn = psycopg.conninfo.make_conninfo(dsn, dbname=missing)
    line = one_line_error(cli("status", "--dsn", user_dsn, "--schema", "s1"))
    assert f"database {missing!r} does not exist" in line
    assert f"`eventstore-actors create --dsn {typed(user_dsn)} --schema s1`" in line


def test_hints_name_the_dsn_as_the_user_typed_it(dsn: str, v1_schema: str) -> None:
    # init on a release-1 store: the library's hint names no DSN at all
    line = one_line_error(cli("init", "--dsn", dsn, "--schema", v1_schema))
    assert f"`eventstore-actors migrate --dsn {typed(dsn)} --schema {v1_schema}`" in line

    # reset of an empty schema: the library's hint names the DSN it resolved, not the typed one
    empty = f"c_{uuid.uuid4().hex[:12]}"
    line = one_line_error(cli("reset", "--yes", "--dsn", dsn, "--schema", empty))
    assert f"`eventstore-actors init --dsn {typed(dsn)} --schema {empty}`" in line


def test_a_hint_hides_the_password_and_says_so(dsn: str, v1_schema: str) -> None:
    secret = "hint-s3cret"
    with_password = psycopg.conninfo.make_conninfo(dsn, password=secret)  # trust: ignored
    line = one_line_error(cli("create", "--dsn", with_password, "--schema", v1_schema))
    assert secret not in line
    hidden = typed(with_password.replace(secret, "***"))
    assert f"`eventstore-actors migrate --dsn {hidden} --schema {v1_schema}`" in line
    assert "(your password in place of ***)" in line


def test_a_hint_names_no_dsn_when_the_user_gave_none(dsn: str, v1_schema: str) -> None:
    line = one_line_error(cli("status", "--schema", v1_schema, env={"EVENTSTORE_DSN": dsn}))
    assert f"`eventstore-actors migrate --schema {v1_schema}`" in line


def test_create_says_when_there_was_nothing_to_do(dsn: str, fresh_schema: str) -> None:
    first = cli("create", "--dsn", dsn, "--schema", fresh_schema)
    assert first.returncode == 0, first.stderr
    assert "nothing to do" not in first.stdout
    again = cli("create", "--dsn", dsn, "--schema", fresh_schema)
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stdout
    assert f"`eventstore-actors status --dsn {typed(dsn)} --schema {fresh_schema}`" in again.stdout


def test_migrate_says_what_it_did_and_when_there_was_nothing_to_do(
    dsn: str, v1_schema: str
) -> None:
    first = cli("migrate", "--dsn", dsn, "--schema", v1_schema)
    assert first.returncode == 0, first.stderr
    assert f"upgraded from version 1, now at version {SCHEMA_VERSION}" in first.stdout
    again = cli("migrate", "--dsn", dsn, "--schema", v1_schema)
    assert again.returncode == 0, again.stderr
    assert f"nothing to do: schema {v1_schema} is already at version {SCHEMA_VERSION}" in (
        again.stdout
    )
    assert f"`eventstore-actors status --dsn {typed(dsn)} --schema {v1_schema}`" in again.stdout
