"""The EventStore facade: the public API, each method a docstring and a delegation to the
module of its concern (`runtime`, `writes`, `reads`, `stream_admin`, `snapshots`,
`subscriptions.service` and `.queries`); the guides in docs/ say the rest. Thread-safe.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any

import psycopg
from typing_extensions import Unpack

from .config import Settings
from .events import (
    AppendResult,
    EventData,
    ExpectedVersion,
    RecordedEvent,
    SnapshotData,
    StreamAppend,
)
from .lifecycle import forgetting
from .lifecycle.archive import ArchiveResult
from .lifecycle.archive import archive as archive_events
from .lifecycle.encryption import Encryption
from .lifecycle.retention import Retention
from .options import options_checked, start_options
from .reads import Reads
from .runtime import Runtime
from .runtime import start as start_runtime
from .serialization import Serializer
from .snapshots import Snapshots
from .storage import checkpoints
from .stream_admin import StreamAdmin
from .streams import Page, StreamInfo
from .subscriptions import options as sub_options
from .subscriptions.info import SubscriptionInfo
from .subscriptions.messages import ParkedEvent, Subscriber, Subscription, TransientSubscription
from .subscriptions.options import AllStreamsSubscribeOptions, SubscribeOptions
from .subscriptions.queries import Queries
from .subscriptions.service import Subscriptions
from .writes import Writes

__all__ = ["EventStore"]


class EventStore:
    """A running event store. Create it with `EventStore.start(...)`; stop it with `stop()`."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._registry = runtime.registry  # read by white-box tests
        self._replica = runtime.replica
        self._writes = Writes(runtime)
        self._admin = StreamAdmin(runtime, self._writes)
        self._retention = Retention(runtime)
        self._reads = Reads(runtime)
        self._snapshots = Snapshots(runtime)
        self._subscriptions = Subscriptions(runtime)
        self._queries = Queries(runtime)

    # Starting and stopping --------------------------------------------------------------------
    @classmethod
    @options_checked
    def start(
        cls,
        dsn: str | None = None,
        *,
        schema: str = "public",
        pool_size: int = 10,
        pool_overflow: int = 0,
        serializer: Serializer | None = None,
        subscription_max_size: int = 1000,
        username: str | None = None,
        password: str | None = None,
        database: str | None = None,
        hostname: str | None = None,
        port: int | str | None = None,
        max_batch_events: int = 10_000,
        call_timeout: float = 30.0,
        max_restarts: int = 3,
        restart_window: float = 5.0,
        tick_interval: float = 0.2,
        application_name: str = "eventstore-actors",
        connect_timeout: float = 5.0,
        health_interval: float = 5.0,
        health_timeout: float = 5.0,
        io_timeout: float = 15.0,
        enable_hard_deletes: bool = False,
        replica_dsn: str | None = None,
        replica_max_lag: float = 5.0,
        metrics: bool = True,
        session_dsn: str | None = None,
        shared_lock_session: bool = True,
        encryption: Encryption | None = None,
        archive: str | None = None,
    ) -> EventStore:
        """Start the supervisor, writer and publisher on an initialised schema.

        Each option is a keyword (a misspelt or bad one: a type error, a ConfigError at run
        time); `username` .. `port` are merged over the DSN; the others are `config.Settings`'s
        (docs/getting-started.md). An `encryption` master key that does not open the schema's
        data keys is a ConfigError here, before anything is written (docs/personal-data.md)."""
        options = start_options(locals())  # every parameter but cls and dsn
        return start_runtime(dsn, options, cls)

    def stop(self) -> None:
        """Stop every actor and close every connection. Idempotent."""
        self._runtime.stop(self, self._subscriptions.leave_groups)

    def __enter__(self) -> EventStore:
        """The store itself: `with EventStore.start(...) as store:` stops it on exit."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the store, whether the block ended normally or with an exception."""
        self.stop()

    @property
    def settings(self) -> Settings:
        """The settings the store runs with (its repr and str hide the DSN's password)."""
        return self._runtime.settings

    # Writing ----------------------------------------------------------------------------------
    def append_to_stream(
        self,
        stream_uuid: str,
        expected_version: int | ExpectedVersion,
        events: Sequence[EventData],
        *,
        conn: psycopg.Connection[Any] | None = None,
    ) -> AppendResult | None:
        """Append `events` atomically if the stream matches `expected_version` (an int, or
        ANY_VERSION, NO_STREAM, STREAM_EXISTS); where they went, or None for no events.

        With `conn`, in that connection's current transaction (see `storage.outbox`).
        """
        return self._writes.append_to_stream(stream_uuid, expected_version, events, conn=conn)

    def append_to_streams(
        self,
        appends: Sequence[StreamAppend],
        *,
        conn: psycopg.Connection[Any] | None = None,
    ) -> list[AppendResult]:
        """Append to several streams all or nothing, each checked against its own expected
        version; event_ids are contiguous over the call, in the order given."""
        return self._writes.append_to_streams(appends, conn=conn)

    # Deleting and linking ---------------------------------------------------------------------
    def delete_stream(
        self,
        stream_uuid: str,
        expected_version: int | ExpectedVersion,
        *,
        hard: bool = False,
    ) -> None:
        """Delete a stream if it matches `expected_version` (an int, STREAM_EXISTS or
        ANY_VERSION): softly, or with `hard=True` for good (docs/streams.md#deleting-streams)."""
        self._admin.delete_stream(stream_uuid, expected_version, hard=hard)

    def link_to_stream(
        self,
        stream_uuid: str,
        expected_version: int | ExpectedVersion,
        events_or_event_ids: Sequence[RecordedEvent | int],
        *,
        conn: psycopg.Connection[Any] | None = None,
    ) -> AppendResult:
        """Add existing events (RecordedEvents or event_ids) to a stream without copying them,
        if it matches `expected_version`; with `conn`, in its transaction (docs/streams.md)."""
        return self._admin.link_to_stream(
            stream_uuid, expected_version, events_or_event_ids, conn=conn
        )

    # Retention -------------------------------------------------------------------------------
    def set_stream_retention(
        self,
        stream_uuid: str,
        *,
        max_count: int | None = None,
        max_age: timedelta | None = None,
    ) -> None:
        """Keep at most `max_count` events of the stream and none older than `max_age` (None: no
        limit); the others are hidden at once, deleted later (docs/retention.md)."""
        self._retention.set_stream_retention(stream_uuid, max_count, max_age)

    def truncate_stream(self, stream_uuid: str, before_version: int) -> int:
        """Hide every event of the stream before `before_version` for good (docs/retention.md);
        how many events it newly hid. The stream's version is unchanged."""
        return self._retention.truncate_stream(stream_uuid, before_version)

    # Reading ----------------------------------------------------------------------------------
    def read_stream_forward(
        self, stream_uuid: str, start_version: int = 0, count: int = 1000
    ) -> list[RecordedEvent]:
        """Up to `count` events of one stream, from `start_version` (inclusive) on.
        `count` defaults to 1000 and caps the result without a word (`stream_forward` pages)."""
        return self._reads.read_stream(stream_uuid, start_version, count, backward=False)

    def read_stream_backward(
        self, stream_uuid: str, start_version: int = -1, count: int = 1000
    ) -> list[RecordedEvent]:
        """Up to `count` events of one stream, newest first, from `start_version` (inclusive;
        -1: the last) down. `count` defaults to 1000 and caps the result without a word."""
        return self._reads.read_stream(stream_uuid, start_version, count, backward=True)

    def read_all_streams_forward(
        self,
        start_event_id: int = 0,
        count: int = 1000,
        *,
        event_types: Collection[str] | None = None,
        stream_prefix: str | None = None,
        stop: int | None = None,
    ) -> list[RecordedEvent]:
        """Up to `count` events of every stream in event_id order, from `start_event_id` to
        `stop` (inclusive). `count` defaults to 1000 and caps the result without a word."""
        first = self._reads.all_range(
            start_event_id, count, event_types, stream_prefix, stop, False
        )
        return self._reads.read_all(first)

    def read_all_streams_backward(
        self,
        start_event_id: int = -1,
        count: int = 1000,
        *,
        event_types: Collection[str] | None = None,
        stream_prefix: str | None = None,
    ) -> list[RecordedEvent]:
        """Up to `count` events of every stream, newest first, from `start_event_id` (-1: the
        last) down. `count` defaults to 1000 and caps the result without a word."""
        first = self._reads.all_range(start_event_id, count, event_types, stream_prefix, None, True)
        return self._reads.read_all(first)

    def stream_forward(
        self, stream_uuid: str, start_version: int = 0, read_batch_size: int = 1000
    ) -> Iterator[RecordedEvent]:
        """Every event of one stream, read lazily `read_batch_size` at a time."""
        return self._reads.stream(stream_uuid, start_version, read_batch_size, backward=False)

    def stream_backward(
        self, stream_uuid: str, start_version: int = -1, read_batch_size: int = 1000
    ) -> Iterator[RecordedEvent]:
        """Every event of one stream, newest first, read lazily `read_batch_size` at a time."""
        return self._reads.stream(stream_uuid, start_version, read_batch_size, backward=True)

    def stream_all_forward(
        self,
        start_event_id: int = 0,
        read_batch_size: int = 1000,
        *,
        event_types: Collection[str] | None = None,
        stream_prefix: str | None = None,
        stop: int | None = None,
    ) -> Iterator[RecordedEvent]:
        """Every event of every stream in event_id order, read lazily in constant memory."""
        return self._reads.stream_all_streams(
            start_event_id, read_batch_size, event_types, stream_prefix, stop, backward=False
        )

    def stream_all_backward(
        self,
        start_event_id: int = -1,
        read_batch_size: int = 1000,
        *,
        event_types: Collection[str] | None = None,
        stream_prefix: str | None = None,
    ) -> Iterator[RecordedEvent]:
        """Every event of every stream, newest first, read lazily in constant memory."""
        return self._reads.stream_all_streams(
            start_event_id, read_batch_size, event_types, stream_prefix, None, backward=True
        )

    # Stream info ------------------------------------------------------------------------------
    def stream_info(self, stream_uuid: str) -> StreamInfo:
        """A stream's version, creation and deletion times and status ("$all" too), and its
        retention (first readable version, max_count, max_age); StreamNotFoundError if it has
        no events. A soft-deleted stream shows as "deleted"."""
        return self._reads.stream_info(stream_uuid)

    def paginate_streams(
        self,
        *,
        page_size: int = 50,
        page_number: int = 1,
        search: str | None = None,
        sort_by: str = "stream_id",
        sort_dir: str = "asc",
    ) -> Page[StreamInfo]:
        """One page of the streams (soft-deleted ones included, never "$all"), optionally
        those whose stream_uuid contains `search` (case-insensitive), sorted by `sort_by`."""
        return self._reads.paginate_streams(page_size, page_number, search, sort_by, sort_dir)

    # Subscriptions ----------------------------------------------------------------------------
    @sub_options.documented(SubscribeOptions)
    def subscribe_to_stream(
        self,
        stream_uuid: str,
        subscription_name: str,
        subscriber: Subscriber,
        start_from: str | int = "origin",
        mapper: Callable[[RecordedEvent], Any] | None = None,
        max_size: int | None = None,
        **options: Unpack[SubscribeOptions],
    ) -> Subscription:
        """Subscribe `subscriber` to one stream's events (docs/subscriptions.md).

        start_from (default "origin"): "origin", "current" or an int position; a new
            subscription's delivery starts after it, an existing one's after its checkpoint.
        mapper (default None): fn(event) applied before sending; acks then take int positions.
        max_size (default None: subscription_max_size): events buffered ahead of the acks.
        """
        return self._subscriptions.durable(
            stream_uuid, subscription_name, subscriber, start_from, mapper, max_size, options
        )

    @sub_options.documented(SubscribeOptions, AllStreamsSubscribeOptions)
    def subscribe_to_all_streams(
        self,
        subscription_name: str,
        subscriber: Subscriber,
        start_from: str | int = "origin",
        mapper: Callable[[RecordedEvent], Any] | None = None,
        max_size: int | None = None,
        **options: Unpack[AllStreamsSubscribeOptions],
    ) -> Subscription:
        """Subscribe `subscriber` to every stream's events in event_id order; with
        `partitions=N`, as one member of a consumer group (docs/scale-out.md).

        start_from (default "origin"): "origin", "current" or an int event_id; a new
            subscription's delivery starts after it, an existing one's after its checkpoint.
        mapper (default None): fn(event) applied before sending; acks then take int positions.
        max_size (default None: subscription_max_size): events buffered ahead of the acks.
        """
        return self._subscriptions.durable(
            checkpoints.ALL_STREAMS,
            subscription_name,
            subscriber,
            start_from,
            mapper,
            max_size,
            options,
            all_streams=True,
        )

    def ack(
        self,
        subscription: Subscription,
        acked: Sequence[Any] | RecordedEvent | int,
        *,
        conn: psycopg.Connection[Any] | None = None,
    ) -> None:
        """Acknowledge events of a subscription; same as `subscription.ack(acked, conn=conn)`.

        With `conn`, the checkpoint is written in that connection's current transaction.
        """
        self._subscriptions.ack(subscription, acked, conn=conn)

    # The parked list --------------------------------------------------------------------------
    def parked_events(
        self, subscription_name: str, stream_uuid: str = checkpoints.ALL_STREAMS
    ) -> list[ParkedEvent]:
        """The events the subscription parked (nack "park", retries exhausted), by event_id."""
        return self._queries.parked_events(subscription_name, stream_uuid)

    def replay_parked(
        self, subscription_name: str, stream_uuid: str = checkpoints.ALL_STREAMS
    ) -> int:
        """Deliver the parked events again, ahead of newer events, by whichever process holds
        the subscription; each leaves the list once acked. How many were queued again."""
        return self._queries.replay_parked(subscription_name, stream_uuid)

    def forget_parked(
        self,
        subscription_name: str,
        stream_uuid: str = checkpoints.ALL_STREAMS,
        event_ids: Collection[int] | None = None,
    ) -> int:
        """Take parked events off the subscription's list for good: every one, or those of
        `event_ids`; they are not delivered again. Returns how many left the list."""
        return self._queries.forget_parked(subscription_name, stream_uuid, event_ids)

    # Transient subscriptions ------------------------------------------------------------------
    def subscribe(
        self,
        stream_uuid: str,
        subscriber: Any,
        *,
        selector: Callable[[RecordedEvent], Any] | None = None,
        mapper: Callable[[RecordedEvent], Any] | None = None,
    ) -> TransientSubscription:
        """Tell `subscriber` every event of `stream_uuid` ("$all": of every stream) committed
        from now on, in order; no name, no acks, no checkpoint (see subscriptions.transient)."""
        return self._subscriptions.subscribe(
            stream_uuid, subscriber, selector=selector, mapper=mapper
        )

    def unsubscribe(self, handle: TransientSubscription) -> None:
        """End a transient subscription: nothing more is told once this returns."""
        self._subscriptions.unsubscribe(handle)

    # Subscription info ------------------------------------------------------------------------
    def subscriptions(self) -> list[SubscriptionInfo]:
        """Every durable subscription of the store, held or not, in any process."""
        return self._queries.subscriptions()

    def subscription_info(
        self, subscription_name: str, stream_uuid: str = "$all", *, partition: Any = None
    ) -> SubscriptionInfo:
        """Where one durable subscription stands; SubscriptionNotFoundError if unknown (or if
        the group has no such `partition`), ValueError for a consumer group without one."""
        return self._queries.subscription_info(subscription_name, stream_uuid, partition=partition)

    def unsubscribe_from_stream(self, stream_uuid: str, subscription_name: str) -> None:
        """Stop the subscription; its checkpoint is kept."""
        self._subscriptions.unsubscribe_from_stream(stream_uuid, subscription_name)

    def unsubscribe_from_all_streams(self, subscription_name: str) -> None:
        """Stop the all-streams subscription; its checkpoint is kept, and nothing more is
        delivered once this returns (a consumer group: this store leaves it)."""
        self._subscriptions.unsubscribe_from_all_streams(subscription_name)

    def delete_subscription(self, stream_uuid: str, subscription_name: str) -> None:
        """Stop the subscription if it runs here and delete its checkpoint."""
        self._subscriptions.delete_subscription(stream_uuid, subscription_name)

    def delete_all_streams_subscription(self, subscription_name: str) -> None:
        """Stop the all-streams subscription if it runs here and delete its checkpoint (a
        new subscription of that name starts from its `start_from` again); for a consumer
        group, every partition's checkpoint."""
        self._subscriptions.delete_all_streams_subscription(subscription_name)

    # Metrics ----------------------------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        """This store instance's counters, gauges and latency summaries (docs/scale-out.md;
        empty with `metrics=False`); the subscription lags cost one pooled query, made here."""
        return self._runtime.metrics(self._queries.subscriptions)

    # Archiving --------------------------------------------------------------------------------
    def archive(
        self,
        *,
        before_event_id: int | None = None,
        older_than: timedelta | None = None,
        target: str | None = None,
    ) -> ArchiveResult:
        """Move the events before `before_event_id` (exclusive) or older than `older_than` (one
        of them) to Parquet files under `target`, out of PostgreSQL (docs/archiving.md)."""
        self._runtime.refuse_stopped()
        return archive_events(
            self._runtime.settings,
            before_event_id=before_event_id,
            older_than=older_than,
            target=target,
        )

    # Snapshots --------------------------------------------------------------------------------
    def record_snapshot(self, snapshot: SnapshotData) -> None:
        """Insert or replace the snapshot of `snapshot.source_uuid`."""
        self._snapshots.record_snapshot(snapshot)

    def read_snapshot(self, source_uuid: str) -> SnapshotData:
        """The snapshot of `source_uuid`; SnapshotNotFoundError if there is none."""
        return self._snapshots.read_snapshot(source_uuid)

    def delete_snapshot(self, source_uuid: str) -> None:
        """Delete the snapshot of `source_uuid`, if any."""
        self._snapshots.delete_snapshot(source_uuid)

    # Personal data ----------------------------------------------------------------------------
    def forget_subject(self, subject: str) -> int:
        """Forget a data subject for ever (crypto-shredding: docs/personal-data.md): reads then
        yield its data as FORGOTTEN, writes naming it fail. The number of its stored events
        that reads returned until then (in PostgreSQL and archive files)."""
        self._runtime.refuse_stopped()
        self._writes.refuse_own_lock_wait()  # it takes the lock appends take
        runtime = self._runtime
        return forgetting.forget_subject(
            runtime.pool, runtime.settings, runtime.origin, subject, runtime.written
        )

    def is_forgotten(self, subject: str) -> bool:
        """Whether `forget_subject(subject)` was called (by any process)."""
        self._runtime.refuse_stopped()
        return forgetting.is_forgotten(self._runtime.pool, subject)
