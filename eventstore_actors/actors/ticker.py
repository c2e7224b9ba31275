"""Pykka has no timers: one thread per store tells a Tick to chosen actors at a fixed interval."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pykka

from .registry import Registry

__all__ = ["Tick", "Ticker"]


@dataclass(frozen=True)
class Tick:
    """Periodic wake-up: subscriptions check their subscriber and their lock connection."""


_TICK = Tick()


class Ticker:
    """Tells `Tick()` every `interval` seconds to every registered child whose id has `prefix`.

    A child whose attachment has `admit_tick()` (a subscription's `Control`) is told only when
    its previous Tick was taken: a busy child never has ticks piling up in its inbox.
    """

    def __init__(self, registry: Registry, prefix: str, interval: float) -> None:
        self._registry = registry
        self._prefix = prefix
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="eventstore-ticker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            for ref, attachment in self._registry.members(self._prefix):
                admit = getattr(attachment, "admit_tick", None)
                if admit is not None and not admit():
                    continue
                try:
                    ref.tell(_TICK)
                except pykka.ActorDeadError:
                    pass
