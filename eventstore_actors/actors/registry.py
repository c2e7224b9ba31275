"""Where the facade and the actors find the current actor of each child id.

A restarted child gets a new ActorRef; callers ask the registry for the current one and wait
(bounded) while a restart is under way. Kept per store: pykka's global registry is never used.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pykka

from ..errors import StoreUnavailableError
from ..metrics import Metrics

__all__ = ["Registry"]


class Registry:
    """Thread-safe map of child id -> live ActorRef, plus the store's failure state.

    Each entry may carry an attachment shared with the senders (a subscription's `Control`).
    """

    def __init__(self, metrics: Metrics | None = None) -> None:
        #: The store's metrics, recorded by its actors (disabled unless the store gives one).
        self.metrics = metrics if metrics is not None else Metrics(enabled=False)
        self._refs: dict[str, pykka.ActorRef[Any]] = {}
        self._attachments: dict[str, Any] = {}
        self._cond = threading.Condition()
        self._closed_reason: str | None = None

    def put(self, child_id: str, ref: pykka.ActorRef[Any], attachment: Any = None) -> None:
        with self._cond:
            self._refs[child_id] = ref
            if attachment is not None:
                self._attachments[child_id] = attachment
            self._cond.notify_all()

    def remove(self, child_id: str, ref: pykka.ActorRef[Any] | None = None) -> None:
        with self._cond:
            current = self._refs.get(child_id)
            if (
                ref is None
                or current is ref
                or (current is not None and current.actor_urn == ref.actor_urn)
            ):
                self._refs.pop(child_id, None)
                self._attachments.pop(child_id, None)

    def close(self, reason: str) -> None:
        """No more actors: every waiting and later caller gets StoreUnavailableError(reason)."""
        with self._cond:
            if self._closed_reason is None:
                self._closed_reason = reason
            self._cond.notify_all()

    @property
    def closed_reason(self) -> str | None:
        return self._closed_reason

    def peek(self, child_id: str) -> pykka.ActorRef[Any] | None:
        """The current ref if there is one, without waiting."""
        return self._refs.get(child_id)

    def attachment(self, child_id: str) -> Any:
        """The attachment registered with `child_id`, or None."""
        return self._attachments.get(child_id)

    def get(self, child_id: str, timeout: float) -> pykka.ActorRef[Any]:
        """The live ref of `child_id`, waiting up to `timeout` s for a restart to finish."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed_reason is not None:
                    raise StoreUnavailableError(
                        f"the event store is stopped: {self._closed_reason}"
                    )
                ref = self._refs.get(child_id)
                if ref is not None and ref.is_alive():
                    return ref
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StoreUnavailableError(f"{child_id} is not running (restart under way?)")
                self._cond.wait(min(remaining, 0.05))

    def has_prefix(self, prefix: str) -> bool:
        """Whether any child id starts with `prefix` (checked on every commit: no list)."""
        with self._cond:
            return any(cid.startswith(prefix) for cid in self._refs)

    def with_prefix(self, prefix: str) -> list[pykka.ActorRef[Any]]:
        """Every current ref whose child id starts with `prefix` (e.g. all subscriptions)."""
        with self._cond:
            return [ref for cid, ref in self._refs.items() if cid.startswith(prefix)]

    def members(self, prefix: str) -> list[tuple[pykka.ActorRef[Any], Any]]:
        """(ref, attachment or None) of every child whose id starts with `prefix`."""
        with self._cond:
            return [
                (ref, self._attachments.get(cid))
                for cid, ref in self._refs.items()
                if cid.startswith(prefix)
            ]
