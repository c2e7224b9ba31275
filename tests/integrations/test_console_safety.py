"""The console's edges found by an adversarial probe: caching of pages whose path holds
"static", blank tokens, out-of-range tail positions, the command on the IPv6 loopback.

Against the real PostgreSQL, through Starlette's TestClient (the app in process) and the
`eventstore-actors console` command, as test_console.py does.
"""

from __future__ import annotations

import pytest

pytest.importorskip("starlette", reason="the console needs the 'console' extra")

import warnings

from starlette.applications import Starlette
from starlette.routing import Mount

with warnings.catch_warnings():  # newer Starlette would rather have httpx2: same API
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from eventstore_actors import EventData, EventStore
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
