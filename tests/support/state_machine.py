"""Helpers for the pure tests of the subscription state machine (no database, no threads)."""

from __future__ import annotations

from dataclasses import dataclass

from eventstore_actors.subscriptions.state import Read, Send, SubscriptionState

__all__ = ["Ev", "at", "evs", "new", "positions"]


@dataclass(frozen=True)
class Ev:
    """An event as the state machine sees it: a position and a stream."""

    pos: int
    stream: str = "a"


def evs(first: int, last: int, stream: str = "a") -> list[Ev]:
    """Events at positions first..last (inclusive) of one stream."""
    return [Ev(p, stream) for p in range(first, last + 1)]


def at(*positions: int) -> list[Ev]:
    """Events at these positions (gaps allowed) of stream "a"."""
    return [Ev(p) for p in positions]


def new(
    checkpoint: int = 0,
    max_size: int = 100,
    read_batch_size: int = 1000,
    max_batch: int = 1000,
    mixed: bool = False,
) -> SubscriptionState[Ev]:
    """A state machine over `Ev`s after `checkpoint`."""
    return SubscriptionState(
        checkpoint,
        max_size,
        position=lambda e: e.pos,
        stream_key=lambda e: e.stream,
        read_batch_size=read_batch_size,
        max_batch=max_batch,
        mixed=mixed,
    )


def positions(action: Send[Ev] | Read | None) -> list[int]:
    """The positions of a Send (anything else fails the test)."""
    assert isinstance(action, Send), f"expected a Send, got {action!r}"
    return [e.pos for e in action.events]
