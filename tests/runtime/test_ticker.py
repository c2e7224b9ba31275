"""The ticker (actors/ticker.py) spreads a round's ticks over its interval once it has many
members: 200 subscription actors woken in the same instant made a convoy for the GIL that
held the fan-out's deliveries for 50-170 ms (the p99 of the `budget` bench row); few members
are told together, at once."""

from __future__ import annotations

import threading
import time
from typing import Any

from support import wait_until

from eventstore_actors.actors.registry import Registry
from eventstore_actors.actors.ticker import Tick, Ticker


class _Ref:
    """Stands in for an actor ref: records when it was told a Tick."""

    def __init__(self, told: list[tuple[int, float]], index: int, lock: threading.Lock) -> None:
        self._told, self._index, self._lock = told, index, lock

    def tell(self, message: Any) -> None:
        assert isinstance(message, Tick)
        with self._lock:
            self._told.append((self._index, time.monotonic()))


def _round(members: int, interval: float) -> list[tuple[int, float]]:
    """The ticks of the ticker's first round over `members` refs."""
    registry = Registry()
    told: list[tuple[int, float]] = []
    lock = threading.Lock()
    for i in range(members):
        registry.put(f"sub:{i}", _Ref(told, i, lock))  # type: ignore[arg-type]
    ticker = Ticker(registry, "sub:", interval)
    ticker.start()
    try:
        wait_until(lambda: len(told) >= members, what="a whole round of ticks")
    finally:
        ticker.stop()
    with lock:
        return told[:members]


def test_many_members_are_ticked_spread_over_the_interval() -> None:
    interval = 0.4
    ticks = _round(40, interval)
    assert sorted(i for i, _ in ticks) == list(range(40)), "each member once per round"
    times = [at for _, at in ticks]
    # Spread: the round takes most of the interval, and no instant holds many of them.
    assert times[-1] - times[0] >= 0.6 * interval, times[-1] - times[0]
    assert max(sum(1 for t in times if s <= t < s + 0.02) for s in times) <= 6


def test_few_members_are_ticked_together() -> None:
    ticks = _round(3, 0.4)
    times = [at for _, at in ticks]
    assert times[-1] - times[0] < 0.1, times


class _Counting(Registry):
    """Counts the ticker's rounds (each asks for the members once)."""

    rounds = 0

    def members(self, prefix: str) -> list[tuple[Any, Any]]:
        self.rounds += 1
        return super().members(prefix)


def test_a_round_without_members_is_no_end() -> None:
    registry = _Counting()
    told: list[tuple[int, float]] = []
    lock = threading.Lock()
    ticker = Ticker(registry, "sub:", 0.05)
    ticker.start()
    try:
        wait_until(lambda: registry.rounds >= 3, what="rounds with nobody to tell")
        for i in range(20):
            registry.put(f"sub:{i}", _Ref(told, i, lock))  # type: ignore[arg-type]
        wait_until(lambda: len({i for i, _ in told}) == 20, what="ticks for members come later")
    finally:
        ticker.stop()
