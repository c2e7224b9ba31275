"""The console's edges found by an adversarial probe: caching of pages whose path holds
"static", blank tokens, out-of-range tail positions, the command on the IPv6 loopback.

Against the real PostgreSQL, through Starlette's TestClient (the app in process) and the
`eventstore-actors console` command, as test_console.py does.
"""

from __future__ import annotations

import signal
import socket
from typing import Any

import httpx
import pytest
from support import wait_until
from support.console import console_command, free_port, seed

pytest.importorskip("starlette", reason="the console needs the 'console' extra")

import warnings

from starlette.applications import Starlette
from starlette.routing import Mount

with warnings.catch_warnings():  # newer Starlette would rather have httpx2: same API
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from eventstore_actors import ConfigError, EventData, EventStore, EventStoreError
from eventstore_actors.console import app

TOKEN = "s3cret-token"


def test_only_the_static_mount_may_be_cached(store: EventStore) -> None:
    """A stream whose name holds "/static/" is a page with the stream's data like any other:
    `no-store`, whatever its path looks like (it was left cacheable)."""
    store.append_to_stream("customer/static/42", 0, [EventData({"email": "ann@example.com"})])
    outer = Starlette(routes=[Mount("/ops", app(store))])
    for web, base in ((TestClient(app(store)), ""), (TestClient(outer), "/ops")):
        for path in (
            "/streams/customer/static/42",
            "/streams/customer%2Fstatic%2F42",
            "/api/streams/customer%2Fstatic%2F42",
            "/api/streams/customer/static/42",
        ):
            answer = web.get(base + path)
            assert answer.status_code == 200, (base, path, answer.text)
            assert "ann@example.com" in answer.text
            assert answer.headers.get("cache-control") == "no-store", (base, path)
        missing = web.get(base + "/streams/static/nothing")  # an error page: not cached either
        assert missing.status_code == 404
        assert missing.headers.get("cache-control") == "no-store"
        css = web.get(base + "/static/console.css")
        assert css.status_code == 200 and "cache-control" not in css.headers


def test_a_blank_token_is_refused_and_the_form_field_is_stripped(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token of spaces was accepted, and a form field of the same spaces passed the check
    (the header was stripped, the form field was not)."""
    monkeypatch.delenv("EVENTSTORE_CONSOLE_TOKEN", raising=False)
    for blank in ("   ", "\t\n", " "):
        with pytest.raises(ConfigError, match="token"):
            app(store, allow_writes=True, token=blank)
    monkeypatch.setenv("EVENTSTORE_CONSOLE_TOKEN", "  ")
    with pytest.raises(ConfigError, match="EVENTSTORE_CONSOLE_TOKEN"):
        app(store, allow_writes=True)
    monkeypatch.delenv("EVENTSTORE_CONSOLE_TOKEN")
    seed(store)
    web = TestClient(app(store, allow_writes=True, token=TOKEN))
    blank = web.post("/api/parked/replay", data={"subscription": "proj", "token": "   "})
    assert blank.status_code == 401  # no token given, not a wrong one
    assert len(store.parked_events("proj")) == 1
    padded = web.post("/api/parked/replay", data={"subscription": "proj", "token": f" {TOKEN}\n"})
    assert padded.status_code == 200 and padded.json()["replayed"] == 1
    # A configured token with whitespace around it is the token without it.
    spaced = TestClient(app(store, allow_writes=True, token=f"  {TOKEN} "))
    header = {"Authorization": f"Bearer {TOKEN}"}
    assert (
        spaced.post("/api/parked/replay", data={"subscription": "proj"}, headers=header).status_code
        == 200
    )


def test_the_command_refuses_a_blank_token_before_serving(dsn: str, schema: str) -> None:
    refused = console_command(
        dsn, schema, free_port(), "--allow-writes", EVENTSTORE_CONSOLE_TOKEN="   "
    )
    try:
        _, err = refused.communicate(timeout=60)
    finally:
        if refused.poll() is None:  # it served: the bug
            refused.kill()
            refused.communicate()
    assert refused.returncode == 1, err
    assert "blank" in err and "EVENTSTORE_CONSOLE_TOKEN" in err
    assert "http://" not in err and "Traceback" not in err  # never served


MAX_BIGINT = 2**63 - 1


def test_a_tail_position_out_of_range_is_refused_before_the_stream_starts(
    store: EventStore,
) -> None:
    """Last-Event-ID (or ?after=) 2**63 - 1 answered 200, then broke the stream with a
    ValueError (and EventSource reconnected for ever with the same id); /api/tail said 400."""
    store.append_to_stream("s", 0, [EventData({"n": 1})])
    web = TestClient(app(store))
    for too_large in (MAX_BIGINT, MAX_BIGINT + 1, 10**30):
        for answer in (
            web.get(
                "/api/tail/events", params={"wait": 0.2}, headers={"Last-Event-ID": str(too_large)}
            ),
            web.get("/api/tail/events", params={"after": too_large, "wait": 0.2}),
            web.get("/api/tail", params={"after": too_large}),
        ):
            assert answer.status_code == 400, (too_large, answer.text)
            assert "at most" in answer.json()["error"]
    last = web.get(
        "/api/tail/events", params={"wait": 0.2}, headers={"Last-Event-ID": str(MAX_BIGINT - 1)}
    )
    assert last.status_code == 200 and "id: " not in last.text  # nothing after it, no error
    assert web.get("/api/tail", params={"after": MAX_BIGINT - 1}).json()["events"] == []


@pytest.mark.parametrize("error", [EventStoreError("the read failed"), ValueError("bad value")])
def test_a_tail_that_fails_once_started_ends_cleanly(
    store: EventStore, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    from eventstore_actors.integrations.console import data

    store.append_to_stream("s", 0, [EventData({"n": 1})])
    read = data.tail
    calls = []

    def failing(*args: Any) -> Any:
        calls.append(args)
        if len(calls) > 1:
            raise error
        return read(*args)

    monkeypatch.setattr(data, "tail", failing)
    answer = TestClient(app(store)).get("/api/tail/events", params={"after": 0, "wait": 5})
    assert answer.status_code == 200  # it had started; it ends at once, saying why
    assert answer.text.rstrip().splitlines()[-1] == f": the tail failed: {error}"
    assert "id: 1\n" in answer.text and len(calls) == 2


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_the_host_of_a_host_header() -> None:
    from eventstore_actors.integrations.console.hosts import host_of

    assert host_of("[::1]:8765") == "[::1]" and host_of("[::1]") == "[::1]"
    assert host_of("LocalHost:80") == "localhost" and host_of("127.0.0.1") == "127.0.0.1"
    for malformed in ("", "[::1", "[::1]x", "[::1]:80x", "::1", "a:b:c", ":80"):
        assert host_of(malformed) is None, malformed


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
def test_the_command_serves_on_the_ipv6_loopback(dsn: str, schema: str) -> None:
    """`--host ::1` answered every request 400: the host check saw `[::1]`, allowed `::1`."""
    port = free_port()
    proc = console_command(dsn, schema, port, "--host", "::1")
    base = f"http://[::1]:{port}"
    try:

        def overview() -> httpx.Response | None:
            try:
                return httpx.get(f"{base}/api/overview", timeout=2)
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()
                return None

        answer = wait_until(overview, timeout=30, interval=0.1, what="the console on ::1")
        assert answer.status_code == 200, answer.text
        assert answer.json()["schema"] == schema
        for host in ("localhost", "127.0.0.1"):  # this machine, named otherwise: served
            named = httpx.get(f"{base}/api/overview", headers={"Host": f"{host}:{port}"})
            assert named.status_code == 200, host
        for host in ("evil.example", f"evil.example:{port}", "[::2]", "[::1"):  # DNS rebinding
            refused = httpx.get(f"{base}/api/overview", headers={"Host": host}, timeout=5)
            assert refused.status_code == 400, host
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert f"eventstore-actors console: http://[::1]:{port}/ " in err
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
