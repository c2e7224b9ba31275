"""What a durable subscription's handle does: its acks (plain, in the caller's transaction,
or per event for competing consumers), nacks and unsubscribe, told to the subscription's actor
through the registry (nothing is told once it is gone), and the few things the subscriptions
service does for them (`Owner`)."""

from __future__ import annotations

from typing import Any, Protocol

import pykka

from ..actors.registry import Registry
from ..actors.supervised import on_own_thread
from ..actors.supervisor import ChildSpec
from ..errors import CheckpointConflictError
from ..events import RecordedEvent
from ..storage import checkpoints
from . import group as groups
from .control import Control
from .handles import MemberSubscription, Subscription
from .inbox import Ack, Detach, Nack, Resync

__all__ = ["Owner", "SingleAcks", "member_handle"]


class Owner(Protocol):
    """The subscriptions service, as the handles need it."""

    def store_late_ack(self, stream_uuid: str, name: str, position: int) -> None:
        """Store an ack told after the subscription stopped (see the service)."""

    def in_transaction(self, conn: Any) -> checkpoints.InTransaction:
        """The writer of acks in callers' transactions, once `conn` is checked."""

    def group(self, name: str) -> groups.Group | None:
        """The consumer group `name` joined here, if any."""

    def forget_and_stop(self, child_id: str, only: ChildSpec | None = None) -> None:
        """Unsubscribe: nothing more is told to the subscriber once this returns."""


class _Teller:
    """Tells one subscription's actor, if it runs."""

    def __init__(self, owner: Owner, registry: Registry, child_id: str) -> None:
        self._owner = owner
        self._registry = registry
        self._child_id = child_id

    def _tell(self, message: Any) -> None:
        ref = self._registry.peek(self._child_id)
        if ref is not None:
            try:
                ref.tell(message)
            except pykka.ActorDeadError:
                pass


class SingleAcks(_Teller):
    """The port of one subscription's handle (`handles.Port`): its acks, nacks and
    unsubscribe, told to its actor."""

    def __init__(
        self,
        owner: Owner,
        registry: Registry,
        child_id: str,
        stream_uuid: str,
        name: str,
        control: Control,
        partition: tuple[int, int] | None,
    ) -> None:
        super().__init__(owner, registry, child_id)
        self._stream_uuid = stream_uuid
        self._name = name
        self._control = control
        self._partition = partition
        self.shown = name.partition(groups.MARK)[0]  # a partition shows its group's name
        self.handle: Subscription  # set once made, before the actor starts
        self.child: ChildSpec  # likewise

    def ack(self, position: int) -> None:
        control = self._control
        late = control.plain_ack(position)
        if late is not None:
            # Told after the subscription stopped: stored if it stopped on its own (not
            # by an unsubscribe) and no later run of the name holds it.
            if control.reason is not None and not control.acks_in_transaction:
                self._owner.store_late_ack(self._stream_uuid, self._name, late)
            return
        direct = control.direct_ack  # applied here when it only moves the checkpoint
        if direct is not None and direct(position, self.handle):
            return
        self._tell(Ack(position, self.handle))

    def ack_in(self, position: int, conn: Any, acked: RecordedEvent | None = None) -> None:
        stream_uuid, name, control = self._stream_uuid, self._name, self._control
        # Checked before anything is written; never past what this handle was sent.
        acks = self._owner.in_transaction(conn)
        control.acks_in_transaction = True
        replayed = control.replayed(position)
        if replayed is not None:
            # A parked event delivered again, below the checkpoint: off the parked list
            # in the caller's transaction; the checkpoint stays where it is.
            conflict: CheckpointConflictError | None = None
            try:
                acks.forget_replayed(conn, stream_uuid, name, position, replayed)
            except CheckpointConflictError as exc:
                conflict = exc  # acked by another holder: its replay is over here too
            self._tell(Ack(position, self.handle, in_transaction=True))
            if conflict is not None:
                raise conflict
            return
        position = min(position, control.delivered)
        if position > 0:
            delivery = control.delivery_of(acked)
            try:
                acks.advance(conn, stream_uuid, name, position, control.floor_of(delivery))
            except CheckpointConflictError as exc:
                ref = self._registry.peek(self._child_id)
                if ref is not None:  # it goes on after the stored checkpoint
                    latest = delivery is not None and delivery is control.latest_delivery()
                    ref.tell(Resync(exc.stored, self.handle, latest))
                raise
            control.acked_in_transaction(position, delivery)
        self._tell(Ack(position, self.handle, in_transaction=True))

    def nack(self, position: int, action: str, reason: str | None) -> None:
        self._control.told_nack()  # no ack after it is applied directly before it is
        self._tell(Nack(position, action, reason, self.handle))

    def detach(self) -> None:
        group = self._owner.group(self.shown) if self._partition is not None else None
        if group is not None:  # a consumer group's partition: its subscriber leaves
            group.leave()
        else:
            self._owner.forget_and_stop(self._child_id, self.child)


class _MemberAcks(_Teller):
    """The port of a competing consumer's handle (`handles.MemberPort`): per-event acks,
    nacks and its own unsubscribe."""

    def __init__(
        self,
        owner: Owner,
        registry: Registry,
        child_id: str,
        stream_uuid: str,
        name: str,
        control: Control | None,
        timeout: float,
    ) -> None:
        super().__init__(owner, registry, child_id)
        self._stream_uuid = stream_uuid
        self._name = name
        self._control = control
        self._timeout = timeout  # how long a detach waits for the actor
        self.handle: Subscription  # set once made

    def ack_each(self, positions: list[int]) -> None:
        handle, control = self.handle, self._control
        message = Ack(positions[-1], handle, each=tuple(positions))
        if control is None:
            self._tell(message)
            return
        late = control.each_ack(handle, message.each, lambda: self._tell(message))
        # Told after the subscription stopped on its own (see `SingleAcks.ack`).
        if late is not None and control.reason is not None:
            self._owner.store_late_ack(self._stream_uuid, self._name, late)

    def nack(self, position: int, action: str, reason: str | None) -> None:
        self._tell(Nack(position, action, reason, self.handle))

    def ack(self, position: int) -> None:
        self.ack_each([position])

    def ack_in(self, position: int, conn: Any, acked: RecordedEvent | None = None) -> None:
        raise ValueError("acks in a transaction need concurrency_limit=1")

    def detach(self) -> None:
        handle, registry = self.handle, self._registry
        control = registry.attachment(self._child_id)
        if isinstance(control, Control):
            control.detached.add(handle)  # checked before every tell
        ref = registry.peek(self._child_id)
        if ref is None:
            return
        try:
            if on_own_thread(ref):
                ref.tell(Detach(handle))
            else:
                ref.ask(Detach(handle), timeout=self._timeout)
        except (pykka.ActorDeadError, pykka.Timeout):
            pass


def member_handle(
    owner: Owner,
    registry: Registry,
    child_id: str,
    stream_uuid: str,
    name: str,
    control: Control | None,
    timeout: float,
) -> Subscription:
    """A competing consumer's handle."""
    acks = _MemberAcks(owner, registry, child_id, stream_uuid, name, control, timeout)
    acks.handle = MemberSubscription(stream_uuid, name, acks)
    return acks.handle
