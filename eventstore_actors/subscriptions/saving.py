"""Checkpoint writes of a subscription's actor: the position its state machine reached and
has not stored yet, when `CheckpointPolicy` says to store it, and how (on the lock
connection, batched on a shared one, or fenced behind the acks that subscribers write in
their own transactions)."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..storage import checkpoints
from . import group as groups
from .checkpointing import CheckpointPolicy
from .control import Control
from .hub import SharedLockSession
from .lock import LockSession
from .spec import SubscriptionSpec

__all__ = ["CheckpointSaver"]


class CheckpointSaver:
    """The unsaved checkpoint of one actor instance (kept across a lost lock)."""

    def __init__(
        self,
        spec: SubscriptionSpec,
        lock: LockSession | SharedLockSession,
        control: Control,
        schema: str,
    ) -> None:
        self._spec = spec
        self._schema = schema
        self._lock = lock
        self._control = control
        self.unsaved: int | None = None  # moved by the state, not stored yet
        #: The last checkpoint handed to the shared lock connection's batched write, which
        #: may die with that connection: the lock is taken again after it (see `start`).
        self.handed: int | None = None
        self.policy = CheckpointPolicy(0, spec.checkpoint_threshold, spec.checkpoint_after)
        self.acks_in_transaction = False  # acks come with conn=: see `flush`
        self.fence = 0  # with them: the highest position they acked (see `flush`)

    def stored(self) -> int | None:
        """The stored checkpoint (None: the subscription is new)."""
        stream, name = self._spec.stream_uuid, self._spec.name
        return self._lock.run(lambda c: checkpoints.read(c, stream, name))

    def start(self, stored: int | None, start: Callable[[], int]) -> int:
        """The lock is taken: the checkpoint to go on after (`stored`, else created at
        `start()`), moved up to what was acked before the lock was lost; the row claimed
        for this store instance."""
        stream, name = self._spec.stream_uuid, self._spec.name
        if stored is None:
            first = start()
            if stream == checkpoints.ALL_STREAMS and self._spec.partition is None:
                schema = self._schema  # not under a consumer group's name (ValueError)
                checkpoint = self._lock.run(lambda c: groups.create_plain(c, schema, name, first))
            else:
                checkpoint = self._lock.run(
                    lambda c: checkpoints.load_or_create(c, stream, name, first)
                )
        else:
            checkpoint = stored
        # Acked before the lock was lost: not stored yet, or handed to a batched write that
        # may have died with the connection (the subscriber must not get them again).
        unsaved = max((p for p in (self.unsaved, self.handed) if p is not None), default=None)
        if unsaved is not None and unsaved > checkpoint and not self.in_transactions():
            self._lock.run(lambda c: checkpoints.advance(c, stream, name, unsaved))
            checkpoint = unsaved
        self.unsaved = self.handed = None
        holder, stall_after = self._spec.holder, self._spec.health.stall_after
        if holder:
            self._lock.run(lambda c: checkpoints.claim(c, stream, name, holder, stall_after))
        return checkpoint

    def restart(self, checkpoint: int) -> None:
        """A fresh state machine starts after the stored `checkpoint`."""
        self.fence = checkpoint
        self.policy = CheckpointPolicy(
            checkpoint, self._spec.checkpoint_threshold, self._spec.checkpoint_after
        )

    def note(self, checkpoint: int) -> None:
        """The state moved its checkpoint (acks, or covered empty positions): to be stored."""
        self.unsaved = checkpoint
        self.policy.moved(time.monotonic())

    def pending(self) -> bool:
        """Whether a tick may have to store a checkpoint: one moved and is not stored yet,
        or acks come in callers' transactions (stored once those commit; see `flush`)."""
        return self.acks_in_transaction or (
            self.unsaved is not None and self.unsaved > self.policy.saved
        )

    def due(self, *, acking: bool) -> bool:
        return self.policy.due(self.unsaved, time.monotonic(), acking=acking)

    def acked(self, checkpoint: int | None) -> None:
        """Acks (or a nack, whose events before it count as acked) moved the checkpoint:
        stored as the policy says."""
        if checkpoint is not None:
            self.note(checkpoint)
            if self.due(acking=True):
                self.flush()

    def eagerly(self) -> None:
        """After an ack applied directly (see direct.py): without tuning options, on the
        shared lock connection, stored at once: the hub writes every subscription's in one
        statement, so it costs no round trip here, and no tick has to come for it."""
        if (
            not self.policy.tuned
            and isinstance(self._lock, SharedLockSession)
            and self.unsaved is not None
            and self.unsaved > self.policy.saved
            and not self.in_transactions()
        ):
            self.flush()

    def settled(self, checkpoint: int | None) -> None:
        """The state moved its checkpoint over filtered-out or deleted positions: stored like
        an ack (acked in callers' transactions: fenced, see `flush`)."""
        if checkpoint is not None:
            self.note(checkpoint)
            if self.policy.tuned and self.due(acking=False):
                self.flush()

    def in_transactions(self) -> bool:
        """Whether the subscriber acks in its own transactions (`ack(..., conn=)`)."""
        return self.acks_in_transaction or self._control.acks_in_transaction

    def flush(self) -> None:
        """Store the last ack, if not stored yet. Acks are coalesced as `CheckpointPolicy`
        says (callers ask it first), plus a final write on stop; a crash in between only
        means those events are delivered again."""
        position = self.unsaved
        if position is None or not self._lock.locked:
            return
        stream, name = self._spec.stream_uuid, self._spec.name
        if self.in_transactions():
            # Acked in callers' transactions, which hold the row until they commit: the
            # positions no ack of theirs covers (filtered-out, deleted or nacked events) are
            # stored once their acks seen here are committed (the row reached the fence),
            # never waiting on the row, and never past an ack whose transaction rolled back.
            fence = self.fence
            stored = self._lock.run(
                lambda c: checkpoints.advance_fenced(c, stream, name, position, fence)
            )
            if stored is None:
                return  # a transaction holds the row: tried again on the next tick
            self.unsaved = None
            if stored:
                self.policy.written(position, time.monotonic())
            return
        if isinstance(self._lock, SharedLockSession):
            self._lock.advance(stream, name, position)  # batched with the others' writes
            self.handed = position
        else:
            self._lock.run(lambda c: checkpoints.advance(c, stream, name, position))
        self.unsaved = None
        self.policy.written(position, time.monotonic())
