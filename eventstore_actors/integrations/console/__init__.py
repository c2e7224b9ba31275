"""The operator's console: a small web application over the store's public API.

`app(store, allow_writes=False, token=None)` returns an ASGI app (Starlette) to serve with
uvicorn or mount in an application; `eventstore-actors console` serves one. Needs the
``console`` extra (``pip install 'eventstore-actors[console]'``). See docs/console.md.
"""

from __future__ import annotations

from .app import CONTENT_SECURITY_POLICY, TOKEN_VARIABLE, app

__all__ = ["CONTENT_SECURITY_POLICY", "TOKEN_VARIABLE", "app"]
