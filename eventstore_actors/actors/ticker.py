"""Pykka has no timers: one thread per store tells a Tick to chosen actors at a fixed interval."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pykka

from .registry import Registry

__all__ = ["Tick", "Ticker"]


@dataclass(frozen=True)
class Tick:
    """Periodic wake-up: subscriptions check their subscriber and their lock connection."""


_TICK = Tick()

#: With more ticks than this in a round, they are spread over its interval in `_SLICES`.
_SPREAD_FROM = 8
_SLICES = 10


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
        due = time.monotonic() + self._interval
        while not self._stop.wait(max(0.0, due - time.monotonic())):
            started = time.monotonic()
            told = []
            for ref, attachment in self._registry.members(self._prefix):
                admit = getattr(attachment, "admit_tick", None)
                if admit is None or admit():
                    told.append(ref)
            # Spread over the interval in a few slices, not all at once: many actors woken
            # together make a convoy for the GIL that stalls every other thread (the fan-out's
            # deliveries); a few slices cost the ticker only a few wake-ups per round.
            size = max(1, len(told) if len(told) <= _SPREAD_FROM else -(-len(told) // _SLICES))
            for i in range(0, len(told), size):
                if i and self._stop.wait(
                    max(0.0, started + i // size * self._interval / _SLICES - time.monotonic())
                ):
                    return
                for ref in told[i : i + size]:
                    try:
                        ref.tell(_TICK)
                    except pykka.ActorDeadError:
                        pass
            due = max(started + self._interval, time.monotonic())
