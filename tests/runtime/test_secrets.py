"""A DSN's password never leaves the package: not in a repr or str, an error, a log line
(structlog or the standard logging module), nor in any output of the command line."""

from __future__ import annotations

import logging
import subprocess
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from support import QueueSubscriber, events, kill_backends, process_backends, wait_until
from support.cli import cli

from eventstore_actors import (
    ConfigError,
    EventStore,
    EventStoreError,
    StoreUnavailableError,
    admin,
)
from eventstore_actors.config import Settings, redact, resolve_dsn, scrub

ROOT = Path(__file__).resolve().parents[2]
SECRET = "Sup3r-s3cret"
#: A password with characters a URI must percent-encode.
ODD_SECRET = "p@ss w0rd/%"


def with_password(dsn: str, password: str = SECRET, **extra: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, password=password, **extra)


def uri(host: str = "127.0.0.1", port: int = 1, dbname: str = "test") -> str:
    return f"postgresql://postgres:{SECRET}@{host}:{port}/{dbname}?connect_timeout=2"


def bad_dsns() -> dict[str, str]:
    """DSNs with a password that the package cannot use, each failing differently."""
    return {
        "unreachable-uri": uri(),
        "unreachable-keyvalue": f"host=127.0.0.1 port=1 password={SECRET} connect_timeout=2",
        "quoted-keyvalue": f"host=127.0.0.1 port=1 password='{SECRET} x' connect_timeout=2",
        "unparseable-uri": f"postgresql://postgres:{SECRET}@127.0.0.1:1/test?bogus",
        "bad-query-key": f"postgresql://postgres:{SECRET}@127.0.0.1/test?nosuchoption=1",
        "unparseable-keyvalue": f"host=127.0.0.1 password={SECRET} trailing-garbage",
        "mysql": f"mysql://app:{SECRET}@db.example/bank",
        "percent-encoded": f"postgresql://postgres:{quote(ODD_SECRET, safe='')}@127.0.0.1:1/test",
    }


def assert_clean(text: str) -> None:
    for secret in (SECRET, ODD_SECRET, quote(ODD_SECRET, safe="")):
        assert secret not in text, text


# --- repr and str -------------------------------------------------------------------------


def test_settings_repr_and_str_hide_the_password() -> None:
    for dsn in (uri(), with_password("host=db dbname=x"), resolve_dsn(uri(), password=SECRET)):
        settings = Settings(dsn=dsn)
        assert_clean(repr(settings))
        assert_clean(str(settings))
        assert "password=***" in repr(settings)
        assert settings.dsn == dsn  # the store itself still has it


def test_store_settings_repr_hides_the_password(dsn: str, schema: str) -> None:
    with EventStore.start(with_password(dsn), schema=schema) as store:
        assert_clean(repr(store.settings))
        assert_clean(repr(store))
    with EventStore.start(dsn, schema=schema, password=SECRET) as store:
        assert_clean(repr(store.settings))


def test_redact_and_scrub() -> None:
    for name, dsn in bad_dsns().items():
        assert_clean(redact(dsn)), name
        assert_clean(scrub(f"error about {dsn} and password={SECRET}", dsn)), name


#: The forms a DSN with a password takes: the tests' server may be a unix socket (the embedded
#: server: key/value with host=/path), and a password may hide inside another parameter.
SOCKET = "host=/tmp/eventstore-actors-x/pgdata port=5432 user=postgres dbname=eventstore"
DSN_FORMS = {
    "uri-userinfo": f"postgresql://postgres:{SECRET}@127.0.0.1:5432/test",
    "uri-query": f"postgresql://postgres@127.0.0.1:5432/test?password={SECRET}",
    "uri-socket": f"postgresql://postgres:{SECRET}@/eventstore?host=/tmp/x",
    "uri-socket-query": f"postgresql:///eventstore?host=/tmp/x&password={SECRET}",
    "uri-multi-host": f"postgres://u:{SECRET}@h1:5432,h2:5433/db?target_session_attrs=any",
    "uri-percent-encoded": f"postgresql://u:{quote(ODD_SECRET, safe='')}@h/db",
    "keyvalue": f"host=h user=u password={SECRET} dbname=d",
    "keyvalue-quoted": f"host=h password='{ODD_SECRET}' dbname=d",
    "keyvalue-socket": f"{SOCKET} password={SECRET}",
    "keyvalue-sslpassword": f"host=h sslpassword={SECRET}",
    # a URI query appended to a key/value DSN: libpq reads it as part of the dbname
    "keyvalue-with-uri-query": f"{SOCKET}?password={SECRET}",
    "uri-as-dbname": f"dbname='postgresql://u:{SECRET}@h/db'",
    "password-in-options": f"host=h options='-c password={SECRET}'",
}


@pytest.mark.parametrize("form", sorted(DSN_FORMS))
def test_no_password_in_a_repr_whatever_the_dsn_form(form: str) -> None:
    dsn = DSN_FORMS[form]
    assert_clean(redact(dsn))
    assert_clean(scrub(f"could not connect with {dsn}", dsn))
    settings = Settings(dsn=dsn, session_dsn=dsn, replica_dsn=dsn)
    assert_clean(repr(settings))
    assert_clean(str(settings))


# --- errors -------------------------------------------------------------------------------


def error_of(call: Callable[[], object]) -> BaseException:
    try:
        call()
    except (EventStoreError, ValueError, TypeError) as exc:
        return exc
    raise AssertionError("no error")


def whole_text(exc: BaseException) -> str:
    """The message, its args, and every chained exception's."""
    parts = []
    seen: BaseException | None = exc
    while seen is not None:
        parts += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


@pytest.mark.parametrize("name", list(bad_dsns()))
def test_start_and_admin_errors_hide_the_password(name: str) -> None:
    dsn = bad_dsns()[name]
    calls: list[Callable[[], object]] = [
        lambda: EventStore.start(dsn),
        lambda: EventStore.start(dsn, call_timeout=5),
        lambda: admin.create(dsn, "x"),
        lambda: admin.init(dsn, "x"),
        lambda: admin.drop(dsn, "x"),
        lambda: admin.reset(dsn, "x"),
        lambda: admin.migrate(dsn, "x"),
    ]
    for call in calls:
        exc = error_of(call)
        assert isinstance(exc, ConfigError), repr(exc)
        assert_clean(whole_text(exc))


@pytest.mark.parametrize("name", [*bad_dsns(), "broken-percent", "broken-percent-query"])
def test_status_report_errors_hide_the_password(name: str) -> None:
    """`status.report` built its Settings from the DSN as given: one libpq cannot parse
    raised psycopg's ProgrammingError quoting the password ("invalid percent-encoded
    token")."""
    from eventstore_actors import status

    dsn = {
        **bad_dsns(),
        "broken-percent": f"postgresql://postgres:{SECRET}%zz@127.0.0.1/test",
        "broken-percent-query": f"postgresql://postgres@127.0.0.1/test?password={SECRET}%zz",
    }[name]
    for call in (lambda: status.report(dsn, "x"), lambda: status.status(dsn, "x", as_json=True)):
        exc = error_of(call)
        assert isinstance(exc, (ConfigError, StoreUnavailableError)), repr(exc)
        if name.startswith(("broken", "unparseable", "mysql", "bad-query")):
            assert isinstance(exc, ConfigError), repr(exc)  # as EventStore.start says
        assert_clean(whole_text(exc))


def test_missing_database_and_uninitialised_schema_errors_hide_the_password(dsn: str) -> None:
    missing = with_password(dsn, dbname=f"nodb_{uuid.uuid4().hex[:8]}")
    not_a_store = f"t_{uuid.uuid4().hex[:12]}"
    for call in (
        lambda: EventStore.start(missing),
        lambda: admin.init(missing),
        lambda: EventStore.start(with_password(dsn), schema=not_a_store),
        lambda: admin.reset(with_password(dsn), not_a_store),
    ):
        exc = error_of(call)
        assert isinstance(exc, ConfigError)
        assert "***" in str(exc)  # the hint shows the DSN, redacted
        assert_clean(whole_text(exc))


def test_connect_failures_hide_the_password() -> None:
    from eventstore_actors.storage.connection import connect

    for dsn in (uri(), with_password("host=127.0.0.1 port=1 connect_timeout=2")):
        with pytest.raises(StoreUnavailableError) as info:
            connect(Settings(dsn=dsn))
        assert_clean(whole_text(info.value))


# --- logs ---------------------------------------------------------------------------------


def test_logs_hide_the_password(dsn: str, schema: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret_dsn = with_password(dsn)
    with pytest.raises(ConfigError):
        EventStore.start(secret_dsn, schema="no_such_schema_here")
    with pytest.raises(ConfigError):
        EventStore.start(uri())
    store = EventStore.start(secret_dsn, schema=schema)
    try:
        subscriber = QueueSubscriber()
        sub = store.subscribe_to_all_streams("watch", subscriber)
        subscriber.subscribed()
        store.append_to_stream("s", 0, events(2))
        subscriber.collect(sub, 2)
        # Connection losses and reconnects are logged with the connection's details.
        assert kill_backends(dsn, process_backends(dsn)) > 0
        wait_until(lambda: _append_works(store), what="the store to reconnect")
    finally:
        store.stop()
    admin.reset(secret_dsn, schema)
    assert caplog.records, "expected some log entries"
    for record in caplog.records:
        assert_clean(record.getMessage())
        assert_clean(repr(record.args))
        assert_clean(repr(getattr(record, "eventstore", None)))


def _append_works(store: EventStore) -> bool:
    try:
        store.append_to_stream(f"s-{uuid.uuid4().hex}", 0, events(1))
    except StoreUnavailableError:
        return False
    return True


# --- the command line ---------------------------------------------------------------------


COMMANDS = ["create", "init", "drop", "reset", "migrate", "demo", "status", "bench"]


@pytest.mark.timeout(300)
def test_cli_output_never_shows_the_password(dsn: str) -> None:
    missing_db = with_password(dsn, dbname=f"nodb_{uuid.uuid4().hex[:8]}")
    not_a_store = ["--dsn", with_password(dsn), "--schema", f"t_{uuid.uuid4().hex[:12]}"]
    bad = bad_dsns()
    runs: list[tuple[str, ...]] = [("init", "--dsn", value) for value in bad.values()]
    for command in COMMANDS:
        yes = ("--yes",) if command in ("drop", "reset", "demo") else ()
        for value in (bad["unparseable-uri"], missing_db):
            if command in ("bench", "create", "demo") and value == missing_db:
                continue  # they create the database (and the bench would then run for minutes)
            runs.append((command, "--dsn", value, *yes))
        runs.append((command, "-v", "--dsn", uri(), *yes))  # -v: with the traceback
    for command in ("reset", "migrate", "status"):
        runs.append((command, *not_a_store, *(("--yes",) if command == "reset" else ())))
    # The DSN in the environment, and typed where no DSN is expected.
    runs.append(("init", "--schema", "x", "ENV"))
    runs.append(("init", uri()))
    runs.append(("drop", "--dsn", uri()))  # refused without --yes: the refusal names the DSN

    def run(args: tuple[str, ...]) -> tuple[tuple[str, ...], subprocess.CompletedProcess[str]]:
        if args[-1] == "ENV":
            return args, cli(*args[:-1], env={"EVENTSTORE_DSN": uri()})
        return args, cli(*args)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, runs))
    for args, result in results:
        output = result.stdout + result.stderr
        assert_clean(output)
        assert result.returncode != 0, (args, output)
        assert "Traceback" not in output or "-v" in args, (args, output)
    assert any("does not exist" in r.stderr for _, r in results)  # the missing-database hint
    assert any("not initialised" in r.stderr for _, r in results)
