"""The subscribers of one durable subscription, as its actor keeps them: a single
subscriber (or a group partition's relay) is the one member; competing consumers have up to
`concurrency_limit`. Mirrored in `Control.members`, so that an actor restarted after a crash
keeps them.

Competing consumers: a subscribe of the same name in this store attaches a member (`Attach`);
`handle.unsubscribe()` removes one (`Control.detached`, checked before every tell, then
`Detach`). A member that dies (or whose tell() fails) leaves too; its events in flight go to
the others. When the last one leaves, the subscription ends as a single one does. After a
restart or a lost lock, events acked above the stored checkpoint are delivered again.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..events import RecordedEvent
from .concurrent import ConcurrentState
from .control import Control
from .messages import Subscription
from .state import SubscriptionState

__all__ = ["Member", "Members"]


@dataclass
class Member:
    """One subscriber of a subscription and the handle it acks through."""

    subscriber: Any
    handle: Subscription
    buffer_size: int


class Members:
    """Members by number, and by handle (identity)."""

    def __init__(self, control: Control) -> None:
        self._control = control
        self._by_number: dict[int, Member] = {}
        self.ids: dict[Subscription, int] = {}  # handle (by identity) -> member
        self._next = 0

    def add(
        self,
        subscriber: Any,
        handle: Subscription,
        buffer_size: int,
        state: SubscriptionState[RecordedEvent] | ConcurrentState[RecordedEvent] | None,
    ) -> int:
        member = self._next
        self._next += 1
        self._by_number[member] = Member(subscriber, handle, buffer_size)
        self.ids[handle] = member
        if all(m[1] is not handle for m in self._control.members):
            self._control.members.append((subscriber, handle, buffer_size))
        if isinstance(state, ConcurrentState):
            state.add_member(member, buffer_size)
        return member

    def drop(
        self,
        member: int,
        handle: Subscription,
        state: SubscriptionState[RecordedEvent] | ConcurrentState[RecordedEvent] | None,
    ) -> None:
        """The member leaves (its events in flight go back to the state's queue)."""
        self._by_number.pop(member, None)
        self.ids.pop(handle, None)
        self._control.members = [m for m in self._control.members if m[1] is not handle]
        if isinstance(state, ConcurrentState):
            state.remove_member(member)

    def get(self, member: int) -> Member | None:
        return self._by_number.get(member)

    def of(self, handle: Subscription) -> int | None:
        """The member acking through `handle` (None: a handle from an earlier subscribe of
        the name, or a member gone)."""
        return self.ids.get(handle)

    def first(self) -> int:
        """The one member of a single subscriber."""
        return next(iter(self._by_number))

    def detached(self, member: int) -> bool:
        """Whether the member unsubscribed itself (`handle.unsubscribe()`)."""
        found = self._by_number.get(member)
        return found is not None and found.handle in self._control.detached

    def items(self) -> list[tuple[int, Member]]:
        return list(self._by_number.items())

    def __iter__(self) -> Iterator[Member]:
        return iter(list(self._by_number.values()))

    def __len__(self) -> int:
        return len(self._by_number)

    def numbers(self) -> dict[int, int]:
        """Each member's buffer_size, by number (for a fresh state machine)."""
        return {n: m.buffer_size for n, m in self._by_number.items()}
