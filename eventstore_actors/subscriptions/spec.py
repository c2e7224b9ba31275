"""What a durable subscription's actor runs with, across all its restarts (`SubscriptionSpec`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..events import RecordedEvent
from ..storage import reader
from ..storage.pool import ReadPool
from ..storage.replica import ReplicaReads
from .control import Control
from .health import SubscriptionHealth
from .hub import LockHub

__all__ = ["SubscriptionSpec"]


@dataclass(frozen=True)
class SubscriptionSpec:
    stream_uuid: str  # "$all" for all streams
    name: str
    subscriber: Any
    start_from: str | int
    mapper: Callable[[RecordedEvent], Any] | None
    max_size: int
    control: Control
    holder: str = ""  # names this store instance in the subscriptions table
    standby: bool = False  # wait for another process to let go of the name
    max_batch: int = 1000
    mixed: bool = False  # batches may hold several streams (all-streams only)
    selector: Callable[[RecordedEvent], Any] | None = None  # applied here, after decoding
    event_types: tuple[str, ...] | None = None  # filtered in the database
    stream_prefix: str | None = None  # all-streams only; in the database
    checkpoint_threshold: int | None = None  # write at least every N acked positions
    checkpoint_after: float | None = None  # write at least every S seconds while pending
    max_retries: int = 10  # nack "retry": then parked
    retry_delay: float = 1.0  # seconds before a retried event is sent again
    replica: ReplicaReads | None = None  # catch-up reads from a standby (replica_dsn)
    partition: tuple[int, int] | None = None  # (index, count) in a consumer group; in the db
    concurrency_limit: int = 1  # >1: competing consumers (see delivery.py)
    partition_by: Callable[[RecordedEvent], Any] | None = None
    buffer_size: int = 1
    hub: LockHub | None = None  # shared_lock_session: the store's lock connection
    pool: ReadPool | None = None  # catch-up reads ahead (with a hub: every catch-up read)
    health: SubscriptionHealth = field(default_factory=SubscriptionHealth)  # see health.py

    def matches(self, event: RecordedEvent) -> bool:
        """What the database filters keep (for events from the publisher)."""
        if self.event_types is not None and event.event_type not in self.event_types:
            return False
        partition = self.partition
        if (
            partition is not None
            and reader.partition_of(event.stream_uuid, partition[1]) != (partition[0])
        ):
            return False
        prefix = self.stream_prefix
        return prefix is None or event.stream_uuid.startswith(prefix)
