"""The console (API.md part 3, "The console"): every page and its JSON twin under /api/,
escaping of untrusted event data, the security headers, the token on writes, the command.

Run against the real PostgreSQL through Starlette's TestClient (the app in process); the
browser test (test_console_browser.py) drives a real headless Chromium against uvicorn.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

pytest.importorskip("starlette", reason="the console needs the 'console' extra")

import warnings

from starlette.applications import Starlette
from starlette.routing import Mount

with warnings.catch_warnings():  # newer Starlette would rather have httpx2: same API
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient
from support import wait_until
from support.console import SCRIPT, console_command, free_port, seed

from eventstore_actors import ConfigError, EventData, EventStore
from eventstore_actors.console import app
from eventstore_actors.integrations.console.data import event_json

TOKEN = "s3cret-token"
PAGES = ["/", "/streams", "/streams/order-1", "/streams/%24all", "/tail", "/subscriptions"]
APIS = [
    "/api/overview",
    "/api/streams",
    "/api/streams/order-1",
    "/api/tail",
    "/api/subscriptions",
    "/api/parked?subscription=proj",
]


@pytest.fixture
def seeded(store: EventStore) -> EventStore:
    seed(store)
    return store


def client(store: EventStore, **options: Any) -> TestClient:
    return TestClient(app(store, **options))


def test_every_page_and_json_twin_answers_with_the_security_headers(seeded: EventStore) -> None:
    web = client(seeded)
    for path in [*PAGES, "/parked?subscription=proj"]:
        answer = web.get(path)
        assert answer.status_code == 200, (path, answer.text)
        assert answer.headers["content-type"].startswith("text/html")
        csp = answer.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["cache-control"] == "no-store"
        assert "<script>" not in answer.text  # no inline script on any page
    for path in APIS:
        answer = web.get(path)
        assert answer.status_code == 200, (path, answer.text)
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers["x-content-type-options"] == "nosniff"
    css = web.get("/static/console.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    js = web.get("/static/console.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert "innerHTML" not in js.text  # the tail sets text only


def test_overview_reports_the_store_and_the_instances(seeded: EventStore) -> None:
    found = client(seeded).get("/api/overview").json()
    assert found["schema"] == seeded.settings.schema
    assert isinstance(found["schema_version"], int) and found["schema_version"] >= 3
    assert found["head"] == 3
    assert found["streams"] == 2
    assert found["subscriptions"] == 1
    assert found["events_per_second"] == pytest.approx(3 / 60, abs=0.001)  # all just written
    holder = seeded.subscription_info("proj").holder
    assert holder is not None
    # The store holding "proj" is this process's: one row, marked as the console's own.
    assert found["instances"] == [
        {"instance": holder, "pid": os.getpid(), "this_process": True, "subscriptions": 1}
    ]
    alone = client(seeded).get("/api/overview")  # same store: still one row
    assert len(alone.json()["instances"]) == 1
    page = client(seeded).get("/").text
    assert "head event_id" in page and f"pid {os.getpid()}" in page


def test_events_per_second_counts_only_the_last_minute(store: EventStore) -> None:
    store.append_to_stream("s", 0, [EventData({"n": n}) for n in range(120)])
    found = client(store).get("/api/overview").json()
    assert found["events_per_second"] == 2.0  # 120 events, all within the minute
    assert [(i["pid"], i["this_process"]) for i in found["instances"]] == [(os.getpid(), True)]
    from eventstore_actors.integrations.console.data import _events_per_second

    later = datetime.now(UTC).replace(microsecond=0)
    later = later.fromtimestamp(later.timestamp() + 120, UTC)
    assert _events_per_second(store, 120, later) == 0.0  # two minutes on: none
    # Five appends of 200 (each its own created_at): a minute after the third began, the
    # minute holds the last three.
    starts = [
        store.append_to_stream("s", 120 + 200 * i, [EventData({"n": n}) for n in range(200)])
        for i in range(5)
    ]
    third = store.read_all_streams_forward(starts[2].first_event_id, 1)[0].created_at
    head = starts[-1].last_event_id
    found_rate = _events_per_second(store, head, third + timedelta(seconds=60))
    assert found_rate == pytest.approx(10.0, rel=0.011)  # to within 1 %


def test_streams_search_by_prefix_and_paginate(store: EventStore) -> None:
    from eventstore_actors import StreamAppend

    names = [f"order-{n:03}" for n in range(60)] + ["xorder-1", "customer-1", "Order-cap"]
    store.append_to_streams([StreamAppend(n, 0, [EventData({"s": n})]) for n in names])
    web = client(store)
    everything = web.get("/api/streams").json()
    assert everything["total_entries"] == 63 and everything["total_pages"] == 2
    assert [s["stream_uuid"] for s in everything["streams"]] == names[:50]  # creation order
    assert web.get("/api/streams?page=2").json()["has_next"] is False
    first = web.get("/api/streams", params={"prefix": "order-"}).json()
    assert [s["stream_uuid"] for s in first["streams"]] == names[:50]
    assert first["has_next"] is True
    second = web.get("/api/streams", params={"prefix": "order-", "page": 2}).json()
    assert [s["stream_uuid"] for s in second["streams"]] == names[50:60]  # no xorder, Order
    assert second["has_next"] is False
    page = web.get("/streams", params={"prefix": "order-", "page": 2}).text
    assert "order-059" in page and "xorder-1" not in page and "rel=prev" in page
    assert web.get("/api/streams", params={"page": "x"}).status_code == 400
    assert web.get("/api/streams", params={"page": "0"}).status_code == 400


def test_a_streams_events_newest_first_with_pretty_json_and_its_info(store: EventStore) -> None:
    store.append_to_stream(
        "s", 0, [EventData({"n": n, "nested": {"k": [n]}}, metadata={"m": n}) for n in range(1, 71)]
    )
    web = client(store)
    found = web.get("/api/streams/s").json()
    assert [e["stream_version"] for e in found["events"]] == list(range(70, 20, -1))
    assert found["stream"]["stream_version"] == 70 and found["stream"]["status"] == "created"
    assert found["stream"]["first_version"] == 1  # retention fields are present
    assert "max_count" in found["stream"] and "max_age_seconds" in found["stream"]
    assert found["next_before"] == 20
    older = web.get("/api/streams/s", params={"before": 20}).json()
    assert [e["stream_version"] for e in older["events"]] == list(range(20, 0, -1))
    assert older["next_before"] is None
    page = web.get("/streams/s").text
    assert "&quot;nested&quot;: {\n    &quot;k&quot;: [\n      70" in page  # indented JSON
    assert "retention: max events" in page and "older events" in page
    every = web.get("/api/streams/%24all").json()
    assert every["events"][0]["event_id"] == 70
    missing = web.get("/api/streams/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["error"]
    assert web.get("/streams/nope").status_code == 404


def test_a_deleted_stream_shows_its_info_without_events(store: EventStore) -> None:
    store.append_to_stream("gone", 0, [EventData({"n": 1})])
    store.delete_stream("gone", 1)
    found = client(store).get("/api/streams/gone").json()
    assert found["deleted"] is True and found["stream"]["status"] == "deleted"
    assert "is deleted" in client(store).get("/streams/gone").text


def test_a_forgotten_event_shows_no_data_only_the_mark() -> None:
    event = SimpleNamespace(
        event_id=1,
        stream_uuid="s",
        stream_version=1,
        event_number=1,
        event_type="T",
        event_uuid="u",
        correlation_id=None,
        causation_id=None,
        created_at=datetime.now(UTC),
        subject="alice",
        forgotten=True,
        data={"name": "Alice"},  # what a store would never return: it must not show anyway
        metadata=None,
    )
    shown = event_json(event)  # type: ignore[arg-type]
    assert shown["forgotten"] is True and shown["data"] is None
    from eventstore_actors.integrations.console.html import event_card

    card = event_card("", shown)
    assert "forgotten" in card and "Alice" not in card


def test_event_data_with_markup_is_shown_as_text(seeded: EventStore) -> None:
    web = client(seeded)
    pages = [
        *PAGES,
        "/streams/customer-%3Ci%3E1%3C%2Fi%3E",
        "/streams?prefix=customer-%3Ci",
        "/parked?subscription=proj",
    ]
    for path in pages:
        text = web.get(path).text
        assert "<script>window" not in text, path
        assert "<img src=x" not in text and "<b>" not in text and "<i>1" not in text, path
    stream = web.get("/streams/order-1").text
    assert "&lt;script&gt;window.__pwned = true;&lt;/script&gt;" in stream
    assert "OrderPlaced&lt;b&gt;" in stream
    assert "customer-&lt;i&gt;1&lt;/i&gt;" in web.get("/streams").text
    assert "cannot handle &lt;b&gt;this&lt;/b&gt;" in web.get("/parked?subscription=proj").text
    # The JSON twin holds the data as it is (JSON is not HTML; it is served as JSON).
    events = web.get("/api/streams/order-1").json()["events"]
    assert events[1]["data"]["note"] == SCRIPT


def test_the_tail_streams_new_events_as_server_sent_events(seeded: EventStore) -> None:
    web = client(seeded)
    tail = web.get("/api/tail").json()
    assert [e["event_id"] for e in tail["events"]] == [1, 2, 3] and tail["last_event_id"] == 3
    assert web.get("/api/tail", params={"after": 2}).json()["events"][0]["event_id"] == 3
    seeded.append_to_stream("later", 0, [EventData({"n": 4}, event_type="Later")])
    answer = web.get("/api/tail/events", params={"after": 2, "wait": 0.3})
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert answer.headers["cache-control"] == "no-store"
    ids = re.findall(r"^id: (\d+)$", answer.text, re.M)
    assert ids == ["3", "4"]
    assert '"event_type":"Later"' in answer.text
    # A reconnecting EventSource sends Last-Event-ID: it wins over ?after=.
    again = web.get(
        "/api/tail/events", params={"after": 0, "wait": 0.2}, headers={"Last-Event-ID": "3"}
    )
    assert re.findall(r"^id: (\d+)$", again.text, re.M) == ["4"]
    page = web.get("/tail").text
    assert 'data-after="4"' in page and "/static/console.js" in page
    assert web.get("/api/tail/events", params={"after": -1}).status_code == 400
    assert web.get("/api/tail/events", params={"after": "x"}).status_code == 400
    assert web.get("/api/tail", params={"after": -1}).status_code == 400


def test_odd_and_large_data_is_shown(store: EventStore) -> None:
    from eventstore_actors.integrations.console.html import SHOWN

    store.append_to_stream(
        "odd",
        0,
        [
            EventData({1: "int key", "nested": [None, True, 1.5]}),
            EventData({"big": "<" * (SHOWN * 2)}),
        ],
    )
    web = client(store)
    events = web.get("/api/streams/odd").json()["events"]  # strict JSON
    assert events[1]["data"] == {"1": "int key", "nested": [None, True, 1.5]}
    assert len(events[0]["data"]["big"]) == SHOWN * 2  # the JSON twin has all of it
    page = web.get("/streams/odd").text
    assert "more characters" in page and len(page) < SHOWN * 5 + 20_000
    tail = web.get("/api/tail/events", params={"after": 0, "wait": 0.2}).text
    assert '"1":"int key"' in tail
    # A serializer of the user's may give floats JSON cannot hold: they are shown as text.
    from eventstore_actors.integrations.console.data import _jsonable

    assert _jsonable({"x": float("nan"), "y": [float("inf")]}) == {"x": "NaN", "y": ["Infinity"]}


def test_subscriptions_and_parked_events(seeded: EventStore) -> None:
    web = client(seeded)
    rows = web.get("/api/subscriptions").json()["subscriptions"]
    assert len(rows) == 1
    row = rows[0]
    assert row["subscription_name"] == "proj" and row["stream_uuid"] == "$all"
    assert (row["checkpoint"], row["head"], row["lag"], row["parked"]) == (3, 3, 0, 1)
    assert row["active"] is True and f"pid {os.getpid()}" in row["holder"]
    assert {"lag_seconds", "state", "partition", "last_ack_at"} <= row.keys()
    page = web.get("/subscriptions").text
    assert "proj" in page and "/parked?subscription=proj" in page
    parked = web.get("/api/parked", params={"subscription": "proj"}).json()["parked"]
    assert [(p["event"]["event_id"], p["reason"], p["retries"]) for p in parked] == [
        (1, "cannot handle <b>this</b>", 0)
    ]
    assert web.get("/api/parked", params={"subscription": "nope"}).status_code == 404
    assert "Replay" not in web.get("/parked?subscription=proj").text  # read-only: no form


def test_writes_are_refused_by_a_read_only_console(seeded: EventStore) -> None:
    web = client(seeded, token=TOKEN)  # a token alone does not allow writes
    for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}):
        answer = web.post("/api/parked/replay", data={"subscription": "proj"}, headers=headers)
        assert answer.status_code == 403 and "read-only" in answer.json()["error"]
    form = web.post("/parked/replay", data={"subscription": "proj", "token": TOKEN})
    assert form.status_code == 403
    assert len(seeded.parked_events("proj")) == 1
    assert web.get("/api/parked/replay").status_code == 405


def test_writes_need_the_token_on_every_post(seeded: EventStore) -> None:
    web = client(seeded, allow_writes=True, token=TOKEN)
    missing = web.post("/api/parked/replay", data={"subscription": "proj"})
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    wrong = web.post(
        "/api/parked/replay", data={"subscription": "proj"}, headers={"Authorization": "Bearer x"}
    )
    assert wrong.status_code == 403
    wrong_form = web.post("/parked/replay", data={"subscription": "proj", "token": "x"})
    assert wrong_form.status_code == 403
    assert len(seeded.parked_events("proj")) == 1  # nothing was done
    assert "name=token" in web.get("/parked?subscription=proj").text  # the form is offered
    unknown = web.post(
        "/api/parked/replay",
        data={"subscription": "nope"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert unknown.status_code == 404
    done = web.post(
        "/api/parked/replay",
        data={"subscription": "proj"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert done.status_code == 200 and done.json()["replayed"] == 1
    # The holder delivers it again; unacked, it stays parked until acked.
    by_form = web.post("/parked/replay", data={"subscription": "proj", "token": TOKEN})
    assert by_form.status_code == 200 and "queued again" in by_form.text


def test_writes_without_a_token_are_a_config_error(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EVENTSTORE_CONSOLE_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="token"):
        app(store, allow_writes=True)
    monkeypatch.setenv("EVENTSTORE_CONSOLE_TOKEN", TOKEN)
    web = TestClient(app(store, allow_writes=True))
    answer = web.post(
        "/api/parked/replay",
        json={"subscription": "none"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert answer.status_code == 404  # past the token check (from the environment)


def test_the_console_mounts_under_a_path(seeded: EventStore) -> None:
    outer = Starlette(routes=[Mount("/ops", app(seeded))])
    web = TestClient(outer)
    page = web.get("/ops/streams").text
    assert 'href="/ops/streams/order-1"' in page and 'href="/ops/static/console.css"' in page
    assert web.get("/ops/api/overview").json()["head"] == 3
    assert web.get("/ops/static/console.css").status_code == 200


def test_the_console_command_serves_until_sigterm(dsn: str, schema: str) -> None:
    port = free_port()
    proc = console_command(dsn, schema, port)
    try:

        def overview() -> dict[str, Any] | None:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/api/overview", timeout=2).json()
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()
                return None

        found: Callable[[], Any] = overview
        assert wait_until(found, timeout=30, interval=0.1, what="the console")["schema"] == schema
        # On a loopback address it answers only requests addressed to this machine.
        rebound = httpx.get(
            f"http://127.0.0.1:{port}/api/overview", headers={"Host": "evil.example"}, timeout=5
        )
        assert rebound.status_code == 400
        local = httpx.get(f"http://localhost:{port}/api/overview", timeout=5)
        assert local.status_code == 200
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        # SIGTERM stops it like Ctrl-C (as every command): 130, the store stopped first.
        assert proc.returncode == 130, err
        assert f"http://127.0.0.1:{port}/" in err and "read-only" in err
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    refused = console_command(dsn, schema, port, "--allow-writes")
    _, stderr = refused.communicate(timeout=60)
    assert refused.returncode == 1 and "EVENTSTORE_CONSOLE_TOKEN" in stderr


def test_forgetting_parked_events_needs_the_token_too(seeded: EventStore) -> None:
    read_only = client(seeded, token=TOKEN)
    refused = read_only.post(
        "/api/parked/forget",
        data={"subscription": "proj"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert refused.status_code == 403
    web = client(seeded, allow_writes=True, token=TOKEN)
    assert web.post("/api/parked/forget", data={"subscription": "proj"}).status_code == 401
    wrong = web.post("/parked/forget", data={"subscription": "proj", "token": "x"})
    assert wrong.status_code == 403
    assert len(seeded.parked_events("proj")) == 1  # nothing was done
    assert "/parked/forget" in web.get("/parked?subscription=proj").text  # the form is offered
    by_form = web.post("/parked/forget", data={"subscription": "proj", "token": TOKEN})
    assert by_form.status_code == 200 and "for good" in by_form.text
    assert seeded.parked_events("proj") == []
    again = web.post(
        "/api/parked/forget",
        data={"subscription": "proj"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert again.status_code == 200 and again.json()["forgotten"] == 0


def _personal(sealed: EventStore) -> None:
    """Through a store with encryption: event 1 of subject p1 (parked by `proj`), event 2
    plain, event 3 of subject p2, then forgotten."""
    from support import QueueSubscriber

    sealed.append_to_stream("person-1", 0, [EventData({"name": "Ann"}, "P", subject="p1")])
    sealed.append_to_stream("plain", 0, [EventData({"x": 1}, event_type="Plain")])
    sealed.append_to_stream("person-2", 0, [EventData({"name": "Bob"}, "P", subject="p2")])
    sealed.forget_subject("p2")
    subscriber = QueueSubscriber()
    sub = sealed.subscribe_to_all_streams("proj", subscriber)
    subscriber.subscribed()
    sub.nack(subscriber.batch()[0], "park", "no")
    subscriber.collect(sub, 2)
    wait_until(lambda: len(sealed.parked_events("proj")) == 1, what="one parked event")


def test_a_console_without_the_master_key_marks_encrypted_events(
    make_store: Callable[..., EventStore],
) -> None:
    from eventstore_actors import Encryption
    from eventstore_actors.serialization import EventDecodeError

    _personal(make_store(encryption=Encryption(master_key=b"k" * 32)))
    plain = make_store()  # no encryption: its own reads of p1's event raise
    with pytest.raises(EventDecodeError):
        plain.read_stream_forward("person-1")
    web = client(plain)
    for path in ["/", "/streams/person-1", "/streams/%24all", "/tail", "/parked?subscription=proj"]:
        answer = web.get(path)
        assert answer.status_code == 200, (path, answer.text)
        assert "Ann" not in answer.text and "Bob" not in answer.text
    assert "encrypted" in web.get("/streams/person-1").text
    assert web.get("/api/overview").json()["head"] == 3
    by_id = {e["event_id"]: e for e in web.get("/api/tail?after=0").json()["events"]}
    assert [by_id[i]["data"] for i in (1, 2, 3)] == [None, {"x": 1}, None]
    assert [(by_id[i]["unreadable"], by_id[i]["forgotten"]) for i in (1, 2, 3)] == [
        (True, False),
        (False, False),
        (False, True),
    ]
    assert by_id[1]["subject"] == "p1" and by_id[1]["event_type"] == "P"
    assert web.get("/api/tail").json()["events"] == list(by_id.values())
    for stream, event_id in [("person-1", 1), ("%24all", 1), ("person-2", 3)]:
        found = {e["event_id"]: e for e in web.get(f"/api/streams/{stream}").json()["events"]}
        shown = found[event_id]
        del shown["event_number"]  # the stream's position, or the event_id in $all
        assert shown == {k: v for k, v in by_id[event_id].items() if k != "event_number"}
    parked = web.get("/api/parked?subscription=proj").json()["parked"]
    assert [p["event"] for p in parked] == [by_id[1]]


def test_the_console_command_reads_personal_data_with_the_master_key(
    dsn: str, make_store: Callable[..., EventStore], schema: str
) -> None:
    import base64

    from eventstore_actors import Encryption

    key = os.urandom(32)
    _personal(make_store(encryption=Encryption(master_key=key)))
    port = free_port()
    proc = console_command(dsn, schema, port, EVENTSTORE_MASTER_KEY=base64.b64encode(key).decode())
    try:

        def tail() -> Any:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/api/tail?after=0", timeout=2)
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()
                return None
            assert answer.status_code == 200, answer.text
            return answer.json()

        found = wait_until(tail, timeout=30, interval=0.1, what="the console")["events"]
        assert [(e["data"], e["forgotten"], e["unreadable"]) for e in found] == [
            ({"name": "Ann"}, False, False),
            ({"x": 1}, False, False),
            (None, True, False),
        ]
        for path in ["/api/overview", "/api/streams/person-1", "/", "/streams/person-1"]:
            answer = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)
            assert answer.status_code == 200, (path, answer.text)
        page = httpx.get(f"http://127.0.0.1:{port}/streams/person-1", timeout=5).text
        assert "Ann" in page
    finally:
        proc.kill()
        proc.communicate(timeout=30)
