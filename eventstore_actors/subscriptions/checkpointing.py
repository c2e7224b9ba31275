"""When to write a subscription's checkpoint: pure, no threads, no I/O (`now` is an input).

The position written is always the state machine's checkpoint (`SubscriptionState`), which
never passes an unacked event; this only decides how often it is stored. So no tuning can
make a stored checkpoint jump ahead of delivery (the Elixir project's pull request 327: a
`checkpoint_after` timer that fired mid catch-up and wrote a position 40M events ahead).
"""

from __future__ import annotations

__all__ = ["CHECKPOINT_INTERVAL", "CheckpointPolicy"]

#: Least seconds between two checkpoint writes on acks, without tuning options.
CHECKPOINT_INTERVAL = 0.05


class CheckpointPolicy:
    """Untuned: at most one write per CHECKPOINT_INTERVAL on acks, and one at every tick and
    storage read (so the stored checkpoint follows each ack within a tick). Tuned: a write
    once `threshold` positions were acked since the last write (filtered and deleted
    positions count: they are acked too) or `after` seconds passed since the first unsaved
    move; an option not given imposes no limit (`after=0`: every move is written)."""

    def __init__(self, saved: int, threshold: int | None = None, after: float | None = None):
        self.saved = saved  # the last position written
        self.threshold = threshold
        self.after = after
        self._pending_since: float | None = None
        self._saved_at = float("-inf")

    @property
    def tuned(self) -> bool:
        return self.threshold is not None or self.after is not None

    def moved(self, now: float) -> None:
        """The state's checkpoint moved (acks, or covered empty positions)."""
        if self._pending_since is None:
            self._pending_since = now

    def due(self, unsaved: int | None, now: float, *, acking: bool) -> bool:
        """Whether `unsaved` is to be written now: on an ack (`acking`), or on a tick or
        before a storage read."""
        if unsaved is None or unsaved <= self.saved:
            return False
        if not self.tuned:
            return not acking or now - self._saved_at >= CHECKPOINT_INTERVAL
        if self.threshold is not None and unsaved - self.saved >= self.threshold:
            return True
        since = self._pending_since
        return self.after is not None and since is not None and now - since >= self.after

    def written(self, position: int, now: float) -> None:
        self.saved = max(self.saved, position)
        self._pending_since = None
        self._saved_at = now
