"""Archive target URLs with credentials (found by an adversarial probe): fsspec takes
user:password@ for ftp, sftp, smb, webdav, http..., and such a URL went into ArchiveResult.files,
the manifest, `eventstore-actors status` and the errors of other processes' reads. It is
refused before anything is created or written, and a URL recorded with a password (before
the refusal) is shown without it. Real PostgreSQL, real Parquet files (pyarrow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from support import events

from eventstore_actors import ANY_VERSION, ConfigError, EventStore, StoreUnavailableError
from eventstore_actors.config import Settings, redact_url

pytest.importorskip("pyarrow.parquet")
fsspec = pytest.importorskip("fsspec")

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "ARCHPW-s3cret"


def targets(schema: str) -> list[str]:
    """Archive targets carrying PASSWORD, in each place fsspec would take it from."""
    return [
        f"memory://user:{PASSWORD}@{schema}/arch",
        f"memory://:{PASSWORD}@{schema}/arch",
        f"ftp://user:{PASSWORD}@127.0.0.1:1/arch",
        f"simplecache::ftp://user:{PASSWORD}@127.0.0.1:1/arch",
        f"webdav+http://user:{PASSWORD.replace('-', '%2D')}@127.0.0.1:1/arch",
        f"memory://{schema}/arch?password={PASSWORD}",
        f"http://127.0.0.1:1/arch?X-Amz-Signature={PASSWORD}&X-Amz-Expires=60",
    ]


def cli(dsn: str, schema: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventstore_actors.cli", *args, "--dsn", dsn, "--schema", schema],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def event_ids(dsn: str, schema: str, table: str = "events") -> list[int]:
    column = "event_id" if table == "events" else "first_event_id"
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            sql.SQL("SELECT {} FROM {}.{} ORDER BY 1").format(
                sql.Identifier(column), sql.Identifier(schema), sql.Identifier(table)
            )
        ).fetchall()
    return [int(r[0]) for r in rows]


def test_a_target_with_a_password_is_refused_before_anything_changes(
    make_store: Callable[..., EventStore], dsn: str, schema: str
) -> None:
    store = make_store()
    store.append_to_stream("s", ANY_VERSION, events(5))
    memory = fsspec.filesystem("memory")
    before = {*memory.store, *memory.pseudo_dirs}
    for target in targets(schema):
        with pytest.raises(ConfigError, match="password") as refused:
            store.archive(before_event_id=3, target=target)
        assert PASSWORD not in str(refused.value), target
        assert "FSSPEC_" in str(refused.value)  # where the password goes instead
        with pytest.raises(ConfigError, match="password") as refused:
            make_store(archive=target)
        assert PASSWORD not in str(refused.value)
        with pytest.raises(ConfigError, match="password"):
            Settings(dsn=dsn, schema=schema, archive=target)
    done = cli(dsn, schema, "archive", "--before", "3", "--target", targets(schema)[0])
    assert done.returncode == 1 and "password" in done.stderr, done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    assert event_ids(dsn, schema) == [1, 2, 3, 4, 5]  # nothing moved
    assert event_ids(dsn, schema, "archive_files") == []  # nothing recorded
    assert {*memory.store, *memory.pseudo_dirs} == before  # nothing created
    # A user name alone is no secret, nor a query without one.
    Settings(dsn=dsn, archive="sftp://archiver@127.0.0.1/arch")
    Settings(dsn=dsn, archive="s3://bucket/arch?versionId=1")
    result = store.archive(before_event_id=3, target=f"memory://{schema}/plain")
    assert result.events == 2 and result.files[0].startswith(f"memory://{schema}/plain/")


def test_a_url_recorded_with_a_password_is_shown_without_it(
    make_store: Callable[..., EventStore], dsn: str, schema: str
) -> None:
    """As a release before the refusal recorded it: status, its JSON and a read's error
    name the file without the password (the read's error quoted it twice, the backend's
    own message holding the path with it)."""
    store = make_store()
    store.append_to_stream("s", ANY_VERSION, events(5))
    store.archive(before_event_id=3, target=f"memory://{schema}/arch")
    leaky = f"memory://user:{PASSWORD}@{schema}/gone/events-1-2.parquet"
    with psycopg.connect(dsn) as conn:
        conn.execute(
            sql.SQL("UPDATE {}.archive_files SET url = %s").format(sql.Identifier(schema)),
            [leaky],
        )
    text = cli(dsn, schema, "status")
    assert text.returncode == 0, text.stderr
    assert f"memory://user:***@{schema}/gone/events-1-2.parquet" in text.stdout
    shown = json.loads(cli(dsn, schema, "status", "--json").stdout)
    assert shown["archived"][0]["url"] == f"memory://user:***@{schema}/gone/events-1-2.parquet"
    with pytest.raises(StoreUnavailableError, match="cannot be read") as unreadable:
        store.read_stream_forward("s")
    assert PASSWORD not in str(unreadable.value)
    assert "memory://user:***@" in str(unreadable.value)


def test_redact_url() -> None:
    assert redact_url(f"ftp://u:{PASSWORD}@h/x") == "ftp://u:***@h/x"
    assert redact_url(f"a::sftp://u:{PASSWORD}@h/x b") == "a::sftp://u:***@h/x b"
    assert redact_url(f"s3://b/x?token={PASSWORD}&v=1") == "s3://b/x?token=***&v=1"
    assert redact_url("sftp://u@h/x?v=1") == "sftp://u@h/x?v=1"
    # A backend's own message names the path with the password, without the scheme.
    assert redact_url(f"no /u:{PASSWORD}@b/x", f"memory://u:{PASSWORD}@b/x") == "no /u:***@b/x"
    # Settings refuses such an archive URL; its repr would hide one anyway.
    from eventstore_actors.config import _shown

    assert _shown("archive", f"ftp://u:{PASSWORD}@h/x") == "'ftp://u:***@h/x'"
