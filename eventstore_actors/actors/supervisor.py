"""A one-for-one supervisor: restarts a failed child with fresh state, within an intensity limit.

Children are started from specs. A child that fails is restarted only after it has reported
its cleanup done (see `SupervisedActor`). More than `max_restarts` restarts of one child within
`restart_window` seconds give up on it: for a `critical` child (writer, publisher) that stops
the whole store and says why to the log and to every caller; for any other child (a
subscription) only that child is stopped, and its `on_give_up` hook says why (a subscription
tells its subscriber). The hook also runs for every non-critical child still running when the
store stops, whether through `begin_shutdown` or a critical child's failure.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pykka

from .. import logs
from .registry import Registry
from .supervised import ChildExited

__all__ = ["ChildSpec", "Supervisor"]

log = logs.get_logger("eventstore_actors.supervisor")  # warnings rate-limited

#: Starts the child's actor given (supervisor ref, child id, restart number).
Factory = Callable[[pykka.ActorRef[Any], str, int], pykka.ActorRef[Any]]


@dataclass
class ChildSpec:
    child_id: str
    factory: Factory
    critical: bool = False
    #: Non-critical children: called (in the supervisor's thread, must not block) with the
    #: reason when the supervisor ends the child for good, not at the child's own request.
    on_give_up: Callable[[str], None] | None = None
    #: Registered with the child's ref (see `Registry.members`).
    attachment: Any = None
    restarts: deque[float] = field(default_factory=deque)
    generation: int = 0


class Supervisor(pykka.ThreadingActor):
    """Owns the store's children; the facade talks to it through its proxy-less ask API."""

    #: The store's threads never keep the interpreter alive (see `eventstore_actors.lifetime`).
    use_daemon_thread = True

    def __init__(self, registry: Registry, max_restarts: int, restart_window: float) -> None:
        super().__init__()
        self._registry = registry
        self._max_restarts = max_restarts
        self._window = restart_window
        self._specs: dict[str, ChildSpec] = {}
        self._stopping = False

    # Called through ask() ---------------------------------------------------------------------
    def start_child(self, spec: ChildSpec) -> pykka.ActorRef[Any]:
        if self._stopping:
            raise RuntimeError("the store is stopping")
        if spec.child_id in self._specs:
            raise KeyError(f"child {spec.child_id!r} is already running")
        self._specs[spec.child_id] = spec
        return self._start(spec)

    def forget_child(
        self, child_id: str, only: ChildSpec | None = None
    ) -> tuple[pykka.ActorRef[Any] | None, Any]:
        """Stop supervising `child_id` (it will not be restarted; if `only` is given, only
        when that is still its spec); returns its ref to stop and its attachment."""
        spec = self._specs.get(child_id)
        if only is not None and spec is not only:
            return None, None
        self._specs.pop(child_id, None)
        ref = self._registry.peek(child_id)
        self._registry.remove(child_id)
        return ref, (spec.attachment if spec is not None else None)

    def begin_shutdown(self, reason: str = "the event store stopped") -> list[pykka.ActorRef[Any]]:
        """No more restarts; returns every child ref, subscriptions first, writer last."""
        self._stopping = True
        ids = sorted(self._specs, key=_stop_order)
        self._notify_give_up(ids, reason)
        refs = [ref for cid in ids if (ref := self._registry.peek(cid)) is not None]
        self._specs.clear()
        return refs

    def _notify_give_up(self, child_ids: list[str], reason: str) -> None:
        for child_id in child_ids:
            spec = self._specs.get(child_id)
            if spec is not None and not spec.critical and spec.on_give_up is not None:
                try:
                    spec.on_give_up(reason)
                except Exception:
                    log.exception("on_give_up hook failed", child=child_id)

    # Messages ---------------------------------------------------------------------------------
    def on_receive(self, message: Any) -> Any:
        if isinstance(message, ChildExited):
            self._child_exited(message)

    def _start(self, spec: ChildSpec) -> pykka.ActorRef[Any]:
        ref = spec.factory(self.actor_ref, spec.child_id, spec.generation)
        self._registry.put(spec.child_id, ref, spec.attachment)
        return ref

    def _child_exited(self, msg: ChildExited) -> None:
        spec = self._specs.get(msg.child_id)
        current = self._registry.peek(msg.child_id)
        if current is None or current.actor_urn != msg.actor_urn:
            return  # a report from an instance already replaced
        if spec is None:  # forgotten (it may have registered itself after that)
            self._registry.remove(msg.child_id, current)
            return
        if msg.error is None:
            # A normal stop (e.g. a subscription whose subscriber died): not restarted.
            self._specs.pop(msg.child_id, None)
            self._registry.remove(msg.child_id, current)
            return
        now = time.monotonic()
        spec.restarts.append(now)
        while spec.restarts and now - spec.restarts[0] > self._window:
            spec.restarts.popleft()
        if len(spec.restarts) > self._max_restarts:
            self._give_up(spec, msg.error)
            return
        spec.generation += 1
        self._registry.metrics.count("restarts_total", child=_kind(msg.child_id))
        log.warning(
            "restarting child", child=msg.child_id, restart=spec.generation, error=repr(msg.error)
        )
        try:
            self._start(spec)
        except Exception as exc:  # the factory itself failed: count it as another failure
            self._give_up(spec, exc)

    def _give_up(self, spec: ChildSpec, error: BaseException) -> None:
        self._registry.metrics.count("gave_up_total", child=_kind(spec.child_id))
        reason = (
            f"{spec.child_id} failed {len(spec.restarts)} times within {self._window:g} s; "
            f"last error: {error!r}"
        )
        if not spec.critical:
            log.error("giving up on child", child=spec.child_id, reason=reason)
            self._notify_give_up([spec.child_id], reason)
            self._specs.pop(spec.child_id, None)
            self._registry.remove(spec.child_id)
            return
        self._specs.pop(spec.child_id, None)
        self._registry.remove(spec.child_id)
        log.error("event store stopping: restart intensity exceeded", reason=reason)
        self._registry.close(reason)
        self._stopping = True
        self._notify_give_up(sorted(self._specs), f"the event store stopped: {reason}")
        for child_id in sorted(self._specs, key=_stop_order):
            ref = self._registry.peek(child_id)
            if ref is not None:
                ref.stop(block=False)
        self._specs.clear()


def _kind(child_id: str) -> str:
    """The metrics label of a child: writer, publisher or subscription."""
    return child_id.split(":", 1)[0]


def _stop_order(child_id: str) -> tuple[int, str]:
    order = {"subscription": 0, "publisher": 1, "writer": 2}
    return (order.get(child_id.split(":", 1)[0], 1), child_id)
