"""The base class of every supervised actor: it cleans up, then tells its supervisor why it ended.

Pykka calls no hook when ``on_start`` raises and reports ``is_alive() == False`` before cleanup
has run, so a supervisor that restarted on either signal could run old and new instances side
by side (two connections, two lock holders). Here the exit report is sent only after cleanup.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import pykka

from .. import logs

__all__ = [
    "ChildExited",
    "Crash",
    "SupervisedActor",
    "acting_as",
    "in_actor_thread",
    "on_own_thread",
]

log = logs.get_logger("eventstore_actors.actors")  # warnings rate-limited

#: The urn of the supervised actor whose thread this is (unset in other threads).
_current = threading.local()


def on_own_thread(ref: pykka.ActorRef[Any]) -> bool:
    """Whether the caller runs in `ref`'s own thread (e.g. a subscriber's `tell()` called by
    its subscription actor): a blocking stop or ask of `ref` from there would wait on itself."""
    return getattr(_current, "urn", None) == ref.actor_urn


def acting_as(urn: str | None) -> str | None:
    """Run what follows as if on the thread of the actor `urn` (a subscription's handler run
    by the fan-out's thread, see `subscriptions.direct`), so that a subscriber unsubscribing
    from inside its tell() there does not wait for that actor to stop. Returns the urn to
    restore afterwards (with another call)."""
    before: str | None = getattr(_current, "urn", None)
    _current.urn = urn
    return before


def in_actor_thread() -> bool:
    """Whether the caller runs in the thread of one of the store's supervised actors (e.g. a
    plain subscriber's `tell()`): waiting there for other actors to stop may wait on itself."""
    return getattr(_current, "urn", None) is not None


@dataclass(frozen=True)
class ChildExited:
    """Sent to the supervisor once a child has finished cleaning up."""

    child_id: str
    actor_urn: str
    error: BaseException | None  # None: a normal stop


@dataclass(frozen=True)
class Crash:
    """Told to an actor to make it fail (and be restarted) from its own thread."""

    error: BaseException


class SupervisedActor(pykka.ThreadingActor):
    """A pykka actor that reports its exit to a supervisor after its cleanup has run."""

    #: The store's threads never keep the interpreter alive (see `eventstore_actors.lifetime`).
    use_daemon_thread = True

    def __init__(self, supervisor: pykka.ActorRef[Any] | None, child_id: str) -> None:
        super().__init__()
        self.child_id = child_id
        self._supervisor = supervisor
        self._cleaned = False
        self.log = log.bind(actor=child_id)

    # Hooks for subclasses -------------------------------------------------------------------
    def setup(self) -> None:
        """Acquire resources; runs in the actor's thread. Raising fails the child."""

    def cleanup(self) -> None:
        """Release every resource; must tolerate a partial setup. Runs exactly once."""

    def after_exit(self) -> None:
        """Runs last, after the supervisor was told: what may call back into the store (a
        resubscribe must find the name free)."""

    def register(self) -> None:
        """Runs first in the actor's thread, before `setup`: a child that must be findable
        before it can act (a subscription delivering events that are acked at once) puts
        itself in the registry here."""

    # Pykka hooks ------------------------------------------------------------------------------
    def on_start(self) -> None:
        _current.urn = self.actor_urn
        try:
            self.register()
            self.setup()
        except Exception as exc:
            self._finish(exc)
            raise

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._finish(exception_value or RuntimeError("unknown failure"))

    def on_stop(self) -> None:
        self._finish(None)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Crash):
            raise message.error
        return self.handle(message)

    def handle(self, message: Any) -> Any:
        """Handle one message (subclasses)."""
        self.log.warning("unexpected message", message_type=type(message).__name__)

    def _finish(self, error: BaseException | None) -> None:
        if self._cleaned:
            return
        self._cleaned = True
        try:
            self.cleanup()
        except Exception:
            self.log.exception("cleanup failed")
        if error is not None:
            self.log.error("actor failed", error=repr(error))
        if self._supervisor is not None:
            try:
                self._supervisor.tell(ChildExited(self.child_id, self.actor_urn, error))
            except pykka.ActorDeadError:
                pass
        try:
            self.after_exit()
        except Exception:
            self.log.exception("after_exit failed")
