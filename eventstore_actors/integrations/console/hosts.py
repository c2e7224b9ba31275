"""Requests addressed to this machine only, for a console served on a loopback address: a web
page elsewhere must not reach it through a host name of its own pointed at 127.0.0.1 (DNS
rebinding).

Starlette's TrustedHostMiddleware does the same, but older releases (this package allows
Starlette from 0.40 on) cut the Host header at its first colon: an IPv6 host (`[::1]:8765`)
was `[`, and every request to a console on `--host ::1` was refused.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["LOOPBACK_HOSTS", "LoopbackHosts", "host_of"]

#: The Host header's host (without the port) of a request addressed to this machine.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})


def host_of(header: str) -> str | None:
    """The host of a Host header, lowercased and without its port (an IPv6 address keeps its
    brackets: `[::1]` for `[::1]:8765`); None when the header is malformed."""
    if header.startswith("["):
        end = header.find("]")
        if end < 0:
            return None
        host, rest = header[: end + 1], header[end + 1 :]
    else:
        host, colon, port = header.partition(":")
        rest = colon + port
    if rest and not (rest.startswith(":") and rest[1:].isdigit()):
        return None
    return host.lower() or None


class LoopbackHosts:
    """Answers 400 to a request whose Host header is not one of `LOOPBACK_HOSTS`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        checked = kind in ("http", "websocket")  # not lifespan
        if not checked or host_of(Headers(scope=scope).get("host", "")) in LOOPBACK_HOSTS:
            await self.app(scope, receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        else:
            await PlainTextResponse("Invalid host header", status_code=400)(scope, receive, send)
