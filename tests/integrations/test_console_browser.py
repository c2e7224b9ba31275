"""The console in a real headless browser (Debian's chromium driven by Playwright's Python API,
against uvicorn on a free port): the $all tail shows a new event without a reload, event data
holding <script> never runs, and every page is saved as a screenshot for the docs
(docs/images/console-*.png, shown by docs/console.md).

Skips, saying why, only when the playwright package or a chromium binary is missing
(`apt-get install chromium`; `.ci/run` installs it when it can).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the console needs the 'console' extra")
pytest.importorskip("uvicorn", reason="the console needs the 'console' extra")
pytest.importorskip("playwright.sync_api", reason="no playwright package: pip install playwright")

from playwright.sync_api import sync_playwright
from support import QueueSubscriber, wait_until
from support.console import SCRIPT, seed, served

from eventstore_actors import EventData, EventStore, StreamAppend
from eventstore_actors.console import app

IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
TOKEN = "browser-token"


def chromium_path() -> str | None:
    configured = os.environ.get("EVENTSTORE_TEST_CHROMIUM")
    for candidate in (configured, "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture
def browser() -> Iterator[Any]:
    path = chromium_path()
    if path is None:
        pytest.skip("no chromium binary (/usr/bin/chromium): apt-get install chromium")
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=path, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def populate(store: EventStore) -> None:
    """What the screenshots show: the seeded store, some more streams and a lagging
    subscription."""
    seed(store)
    store.append_to_streams(
        [
            StreamAppend(
                f"order-{n}",
                0,
                [
                    EventData({"order": n, "lines": [{"sku": "A-1", "qty": n}]}, "OrderPlaced"),
                    EventData({"order": n, "amount": 12.5 * n}, "OrderPaid"),
                ],
            )
            for n in range(2, 12)
        ]
    )
    lagging = QueueSubscriber()
    store.subscribe_to_all_streams("emails", lagging, start_from=10)
    lagging.subscribed()


def shoot(page: Any, name: str) -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMAGES / f"console-{name}.png"), full_page=False)


def test_the_console_in_a_browser(store: EventStore, browser: Any) -> None:
    populate(store)
    with served(app(store, allow_writes=True, token=TOKEN)) as base:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))

        page.goto(f"{base}/")
        assert "head event_id" in page.inner_text("main")
        shoot(page, "overview")

        page.goto(f"{base}/streams")
        page.fill("input[name=prefix]", "order-")
        page.click("button[type=submit]")
        page.wait_for_url("**/streams?prefix=order-*")
        assert "customer" not in page.inner_text("#streams")
        shoot(page, "streams")

        page.goto(f"{base}/streams/order-1")
        main = page.inner_text("main")
        assert SCRIPT in main  # shown as text
        assert page.evaluate("window.__pwned") is None  # and never run
        shoot(page, "stream")

        page.goto(f"{base}/subscriptions")
        assert "emails" in page.inner_text("#subscriptions")
        shoot(page, "subscriptions")

        page.goto(f"{base}/parked?subscription=proj")
        assert "cannot handle <b>this</b>" in page.inner_text("main")
        shoot(page, "parked")

        # The tail: a new event appears without a reload, its <script> shown, not run.
        page.goto(f"{base}/tail")
        page.wait_for_function(
            "document.getElementById('tail-status').textContent === 'live'", timeout=10_000
        )
        page.evaluate("window.__sameDocument = true")
        result = store.append_to_stream(
            "live-1", 0, [EventData({"html": SCRIPT}, event_type="Arrived")]
        )
        new_id = result.last_event_id
        row = page.wait_for_selector(f"#tail tr[data-event-id='{new_id}']", timeout=10_000)
        assert row is not None and "Arrived" in row.inner_text()
        assert SCRIPT in row.inner_text()
        assert page.evaluate("window.__sameDocument") is True  # no reload
        assert page.evaluate("window.__pwned") is None
        first = page.inner_text("#tail tbody tr:first-child td:first-child")
        assert first == str(new_id)  # newest on top
        shoot(page, "tail")

        # A write through the form, with the token.
        page.goto(f"{base}/parked?subscription=proj")
        page.fill("input[name=token]", TOKEN)
        page.click("form.replay button")
        wait_until(lambda: "queued again" in page.inner_text("main"), what="replayed page")

        assert dialogs == [] and errors == []
        page.close()
