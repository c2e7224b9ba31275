"""The console's ASGI application: routes, the token check on writes, the security headers.

Pages and their JSON twins under /api/ render the same dicts (`data`). The store's calls are
blocking, so each runs in Starlette's thread pool; the $all tail is a server-sent event
stream that reads on from the last event it sent (an indexed read every half second while
nothing is new), closed after `wait` seconds so a proxy never holds it forever (the browser's
EventSource reconnects on its own, sending Last-Event-ID, and nothing is missed).
"""

from __future__ import annotations

import hmac
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import anyio
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import eventstore_actors.integrations.console.data as data
import eventstore_actors.integrations.console.pages as pages

from ... import (
    ConfigError,
    EventStore,
    EventStoreError,
    StoreUnavailableError,
    StreamNotFoundError,
    SubscriptionNotFoundError,
)

__all__ = ["TOKEN_VARIABLE", "app"]

#: The environment variable holding the write token when `token` is not given.
TOKEN_VARIABLE = "EVENTSTORE_CONSOLE_TOKEN"

#: No inline script or style, nothing from elsewhere, no framing, forms post here only.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_STATIC = Path(__file__).resolve().parent / "static"
_POLL = 0.5  # seconds between reads of the tail while nothing is new
_MAX_FORM = 64 * 1024
_STATIC_PREFIX = "/static/"  # where `_STATIC` is mounted (see `routes`)


class _SecurityHeaders:
    """Adds the headers every answer carries: the CSP, no MIME sniffing, no framing, no
    referrer, and no caching except for the static files."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = _static(scope)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
                headers["X-Content-Type-Options"] = "nosniff"
                headers["X-Frame-Options"] = "DENY"
                headers["Referrer-Policy"] = "no-referrer"
                headers["Cross-Origin-Opener-Policy"] = "same-origin"
                if not static:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _static(scope: Scope) -> bool:
    """Whether the request is for the static mount: its path, after the prefix the console
    is mounted under (`root_path`), starts with /static/ (a stream named like
    "customer/static/42" is a page like any other, with personal data: never cached)."""
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", "")).rstrip("/")
    if root and path.startswith(root + "/"):
        path = path[len(root) :]
    return path.startswith(_STATIC_PREFIX)


def _int(request: Request, name: str, default: int | None) -> int | None:
    raw = request.query_params.get(name, "")
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def _page(request: Request) -> int:
    found = _int(request, "page", 1)
    return 1 if found is None else found


def app(store: EventStore, *, allow_writes: bool = False, token: str | None = None) -> Starlette:
    """The console as an ASGI app, to serve with uvicorn or mount in an application.

    Read-only unless `allow_writes`; writes (replaying or forgetting parked events) then need
    `token` (default: the EVENTSTORE_CONSOLE_TOKEN environment variable), sent with each POST
    as ``Authorization: Bearer <token>`` or a form field ``token``. Whitespace around the
    token is ignored (here and in what a request sends); `allow_writes` without a token, or
    with one that is only whitespace, raises ConfigError.
    """
    if token is None:
        token = os.environ.get(TOKEN_VARIABLE) or None
    if token is not None and not isinstance(token, str):
        raise ConfigError("the console's token must be a string")
    if allow_writes and not (token or "").strip():
        blank = " (the one given is blank)" if token else ""
        raise ConfigError(
            f"the console allows writes only with a token{blank}: pass token= or set "
            f"{TOKEN_VARIABLE}"
        )
    secret = (token or "").strip().encode()
    read_only = not allow_writes

    def base(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    def failure(request: Request, exc: Exception, api: bool) -> Response:
        if isinstance(exc, (StreamNotFoundError, SubscriptionNotFoundError)):
            code = 404
        elif isinstance(exc, StoreUnavailableError):
            code = 503
        elif isinstance(exc, (ValueError, EventStoreError)):
            code = 400
        else:
            raise exc
        text = " ".join(str(exc).split()) or type(exc).__name__
        if api:
            return JSONResponse({"error": text}, status_code=code)
        return HTMLResponse(
            pages.error(base(request), code, text, read_only=read_only), status_code=code
        )

    def page(
        load: Callable[[Request], Any],
        render: Callable[[str, Any, Request], str],
    ) -> tuple[Callable[[Request], Awaitable[Response]], Callable[[Request], Awaitable[Response]]]:
        """The HTML page and its JSON twin, both from `load(request)` run in a thread."""

        async def html(request: Request) -> Response:
            try:
                found = await run_in_threadpool(load, request)
            except Exception as exc:
                return failure(request, exc, api=False)
            return HTMLResponse(render(base(request), found, request))

        async def api(request: Request) -> Response:
            try:
                found = await run_in_threadpool(load, request)
            except Exception as exc:
                return failure(request, exc, api=True)
            return JSONResponse(found)

        return html, api

    overview = page(
        lambda r: data.overview(store),
        lambda b, d, r: pages.overview(b, d, read_only=read_only),
    )
    streams = page(
        lambda r: data.streams_page(store, r.query_params.get("prefix", ""), _page(r)),
        lambda b, d, r: pages.streams(b, d, read_only=read_only),
    )
    stream = page(
        lambda r: data.stream_page(store, r.path_params["stream"], _int(r, "before", None)),
        lambda b, d, r: pages.stream(b, d, read_only=read_only),
    )
    tail = page(
        lambda r: data.tail(store, _int(r, "after", None)),
        lambda b, d, r: pages.tail(b, d, read_only=read_only),
    )
    subscriptions = page(
        lambda r: data.subscriptions(store),
        lambda b, d, r: pages.subscriptions(b, d, read_only=read_only),
    )
    parked = page(
        lambda r: data.parked(
            store, r.query_params.get("subscription", ""), r.query_params.get("stream", "$all")
        ),
        lambda b, d, r: pages.parked(b, d, read_only=read_only),
    )

    async def tail_events(request: Request) -> Response:
        """$all's new events as server-sent events (`event: event`, `id:` the event_id)."""
        try:
            last_id = request.headers.get("last-event-id", "")
            after = int(last_id) if last_id.strip() else _int(request, "after", None)
            wait = float(request.query_params.get("wait", "30"))
            data.check_after(after)  # before the answer starts: 400, as /api/tail
        except ValueError as exc:
            return failure(request, exc, api=True)
        wait = min(max(wait, 0.1), 300.0)

        async def stream(after: int | None) -> AsyncIterator[str]:
            try:
                if after is None:
                    after = (await run_in_threadpool(data.tail, store, None, 0))["last_event_id"]
                yield f"retry: 1000\n: after {after}\n\n"
                end = time.monotonic() + wait
                while time.monotonic() < end:
                    found = await run_in_threadpool(data.tail, store, after, 100)
                    for event in found["events"]:
                        text = json.dumps(event, separators=(",", ":"))
                        yield f"id: {event['event_id']}\nevent: event\ndata: {text}\n\n"
                    after = found["last_event_id"]
                    if len(found["events"]) < 100:
                        await anyio.sleep(min(_POLL, max(0.0, end - time.monotonic())))
            except StoreUnavailableError:
                # The browser reconnects (after `retry`) from the last id it got.
                yield ": the store is unavailable; reconnecting later\n\n"
            except (EventStoreError, ValueError) as exc:
                # The answer has started (200): end it cleanly, saying why, rather than
                # break it with a traceback in the server's log.
                yield f": the tail failed: {' '.join(str(exc).split()) or type(exc).__name__}\n\n"

        return StreamingResponse(
            stream(after), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"}
        )

    async def authorized(request: Request, form: dict[str, str]) -> Response | None:
        """None when this POST may write; else the refusal (403 read-only or wrong token,
        401 no token)."""
        if read_only:
            return JSONResponse(
                {"error": "the console is read-only (start it with --allow-writes and a token)"},
                status_code=403,
            )
        given = ""
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            given = credentials.strip()
        else:  # the form field like the header: whitespace around it is no part of it
            given = form.get("token", "").strip()
        if not given:
            return JSONResponse(
                {"error": "a write needs the console's token"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not hmac.compare_digest(given.encode(), secret):
            return JSONResponse({"error": "wrong token"}, status_code=403)
        return None

    async def read_form(request: Request) -> dict[str, str]:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > _MAX_FORM:
                raise ValueError("the form is too large")
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "application/json" and body:
            loaded = json.loads(body)
            if not isinstance(loaded, dict):
                raise ValueError("expected a JSON object")
            return {str(k): str(v) for k, v in loaded.items() if v is not None}
        fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        return {k: v[-1] for k, v in fields.items()}

    def parked_handler(api: bool, forget: bool) -> Callable[[Request], Awaitable[Response]]:
        """POST: replay a subscription's parked events, or (`forget`) drop them for good."""

        async def replay(request: Request) -> Response:
            try:
                form = await read_form(request)
            except ValueError as exc:
                return failure(request, exc, api=True)
            refused = await authorized(request, form)
            if refused is not None:
                return refused
            name = form.get("subscription") or request.query_params.get("subscription", "")
            stream_uuid = form.get("stream") or request.query_params.get("stream", "$all")
            try:
                await run_in_threadpool(data.parked, store, name, stream_uuid)  # known?
                act = store.forget_parked if forget else store.replay_parked
                count = await run_in_threadpool(act, name, stream_uuid)
            except Exception as exc:
                return failure(request, exc, api=api)
            key = "forgotten" if forget else "replayed"
            result = {"subscription_name": name, "stream_uuid": stream_uuid, key: count}
            if api:
                return JSONResponse(result)
            return HTMLResponse(pages.replayed(base(request), result, read_only=read_only))

        return replay

    routes = [
        Route("/", overview[0]),
        Route("/streams", streams[0]),
        Route("/streams/{stream:path}", stream[0]),
        Route("/tail", tail[0]),
        Route("/subscriptions", subscriptions[0]),
        Route("/parked", parked[0]),
        Route("/parked/replay", parked_handler(api=False, forget=False), methods=["POST"]),
        Route("/parked/forget", parked_handler(api=False, forget=True), methods=["POST"]),
        Route("/api/overview", overview[1]),
        Route("/api/streams", streams[1]),
        Route("/api/streams/{stream:path}", stream[1]),
        Route("/api/tail", tail[1]),
        Route("/api/tail/events", tail_events),
        Route("/api/subscriptions", subscriptions[1]),
        Route("/api/parked", parked[1]),
        Route("/api/parked/replay", parked_handler(api=True, forget=False), methods=["POST"]),
        Route("/api/parked/forget", parked_handler(api=True, forget=True), methods=["POST"]),
        Mount(_STATIC_PREFIX.rstrip("/"), StaticFiles(directory=_STATIC), name="static"),
    ]
    application = Starlette(routes=routes)
    application.add_middleware(_SecurityHeaders)
    return application
