"""`eventstore_actors.console.app(store, *, allow_writes=False, token=None)`: the operator's
console as an ASGI app (the ``console`` extra); built in `integrations.console`."""

from __future__ import annotations

from .integrations.console import app

__all__ = ["app"]
