"""A persistence module for the `eventsourcing` library (extra `eventstore-actors[eventsourcing]`).

With ``PERSISTENCE_MODULE=eventstore_actors.eventsourcing`` and ``EVENTSTORE_DSN`` (plus
optional ``EVENTSTORE_SCHEMA``), an ``eventsourcing`` Application stores its events here:
an aggregate's events are the stream named by its originator_id, notification ids are the
store's global event_ids, and writes go through the store's writer (group commit). Tracking
records and snapshots live in the module's own tables (``eventsourcing_tracking``,
``eventsourcing_snapshots``), created with the store's schema by ``admin.init``/``migrate``.

Versions: a stream's versions start at 1; an aggregate's at its own first version (1 by
default, 0 in some of the library's tests). Each event keeps its originator_version in its
metadata, and reads shift stream versions by the offset of its lowest stored event (one indexed
lookup).

Reads see what the store's own reads see: archived events come back from the Parquet files
in their places, and an event with a data subject (written through the EventStore API) is
decrypted when ``EVENTSTORE_MASTER_KEY`` is set, or reads as `FORGOTTEN_STATE` once its
subject is forgotten (``eventsourcing_states``).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import psycopg
import psycopg_pool
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    IntegrityError,
    ListenNotifySubscription,
    Notification,
    OperationalError,
    ProcessRecorder,
    ProgrammingError,
    StoredEvent,
    Subscription,
    Tracking,
    TrackingRecorder,
)
from eventsourcing.utils import Environment, EnvType, strtobool

from .. import admin
from ..errors import (
    ConfigError,
    DuplicateEventError,
    EventStoreError,
    StoreUnavailableError,
    StreamDeletedError,
    WrongExpectedVersionError,
)
from ..events import NO_STREAM, AppendResult, EventData, ExpectedVersion, StreamAppend
from ..lifecycle.encryption import ENV_MASTER_KEY, Encryption
from ..storage.connection import connect
from ..storage.recorders import (
    VERSION_KEY,
    EventRow,
    RecorderQueries,
    listen,
    open_pool,
    unlisten,
)
from ..store import EventStore
from .eventsourcing_states import FORGOTTEN_STATE, States, encryption_from

__all__ = [
    "FORGOTTEN_STATE",
    "EventStoreAggregateRecorder",
    "EventStoreApplicationRecorder",
    "EventStoreDatastore",
    "EventStoreProcessRecorder",
    "EventStoreSnapshotRecorder",
    "EventStoreTrackingRecorder",
    "Factory",
]

_VERSION_KEY = VERSION_KEY
#: Streams whose first version is not 1, remembered so later inserts skip the retry.
_OFFSET_CACHE = 10_000


class _StateSerializer:
    """Stores the library's `state` bytes as they are; metadata as JSON."""

    def serialize(self, term: Any) -> bytes:
        if isinstance(term, bytes):
            return term
        if len(term) == 1 and type(version := term.get(_VERSION_KEY)) is int:
            return b'{"%s":%d}' % (_VERSION_KEY.encode(), version)  # the usual metadata, fast
        return json.dumps(term, separators=(",", ":")).encode()

    def deserialize(self, data: bytes, type: str | None = None) -> Any:
        return data


class EventStoreDatastore:
    """One running EventStore (writes, group commit) and a pool for reads and transactions."""

    def __init__(
        self,
        dsn: str,
        schema: str,
        *,
        pool_size: int = 10,
        uuid_ids: bool = True,
        session_dsn: str | None = None,
        encryption: Encryption | None = None,
    ):
        self.dsn = dsn
        self.schema = schema
        self.uuid_ids = uuid_ids
        self.store = EventStore.start(
            dsn,
            schema=schema,
            serializer=_StateSerializer(),
            session_dsn=session_dsn,
            encryption=encryption,
        )
        self.states = States(self.store.settings.serializer, self.store.is_forgotten)
        # With a session_dsn, `dsn` may be PgBouncer (transaction pooling): nothing prepared
        # there, and the LISTEN of the notification thread on a session connection.
        self.pool: psycopg_pool.ConnectionPool[psycopg.Connection[Any]] = open_pool(
            self.store.settings, pool_size
        )
        self.queries = RecorderQueries(schema)
        self.channel = self.store.settings.channel
        self._offsets: OrderedDict[str, int] = OrderedDict()
        self._offsets_lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self.pool.connection() as conn:
                yield conn
        except psycopg_pool.PoolTimeout as exc:
            raise OperationalError(str(exc)) from exc
        except psycopg.errors.UniqueViolation as exc:
            raise IntegrityError(str(exc)) from exc
        except psycopg.OperationalError as exc:
            raise OperationalError(str(exc)) from exc
        except psycopg.Error as exc:
            raise ProgrammingError(str(exc)) from exc

    @contextmanager
    def session(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection that keeps its session (for LISTEN): from the pool, or a dedicated
        one on `session_dsn` when the pool's `dsn` may be a transaction pooler."""
        if not self.store.settings.pooled:
            with self.connection() as conn:
                yield conn
            return
        try:
            conn = connect(self.store.settings, session=True)
        except StoreUnavailableError as exc:
            raise OperationalError(str(exc)) from None
        with conn:
            yield conn

    def stored(self, originator_id: UUID | str, rows: list[EventRow]) -> list[StoredEvent]:
        state = self.states.of
        return [StoredEvent(originator_id, row[0], row[1], state(row)) for row in rows]

    def originator_id(self, stream_uuid: str) -> UUID | str:
        return UUID(stream_uuid) if self.uuid_ids else stream_uuid

    def offset(self, stream_uuid: str) -> int | None:
        with self._offsets_lock:
            return self._offsets.get(stream_uuid)

    def remember_offset(self, stream_uuid: str, offset: int) -> None:
        if offset == 0:
            return
        with self._offsets_lock:
            self._offsets[stream_uuid] = offset
            while len(self._offsets) > _OFFSET_CACHE:
                self._offsets.popitem(last=False)

    def close(self) -> None:
        try:
            self.pool.close()
        finally:
            self.store.stop()


class EventStoreAggregateRecorder(AggregateRecorder):
    """An aggregate's events are the stream named by its originator_id."""

    def __init__(self, datastore: EventStoreDatastore):
        self.datastore = datastore

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        self._insert(stored_events)
        return None

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        with self.datastore.connection() as conn:
            rows = self._rows(conn, str(originator_id), gt, lte, desc, limit)
        return self.datastore.stored(originator_id, rows)

    def _rows(
        self,
        conn: psycopg.Connection[Any],
        originator_id: str,
        gt: int | None,
        lte: int | None,
        desc: bool,
        limit: int | None,
    ) -> list[EventRow]:
        return self.datastore.queries.stream_events(conn, originator_id, gt, lte, desc, limit)

    # Writing ------------------------------------------------------------------------------

    def _insert(
        self,
        stored_events: Sequence[StoredEvent],
        conn: psycopg.Connection[Any] | None = None,
    ) -> list[int]:
        """Append each aggregate's events to its stream, all in one store transaction."""
        if not stored_events:
            return []
        groups = _group(stored_events)
        datastore = self.datastore
        appends = [_append(key, events, datastore.offset(key)) for key, events in groups.items()]
        try:
            results = self._append(appends, conn)
        except WrongExpectedVersionError:
            # The guess of a stream's first version was wrong (or a real conflict): look the
            # offsets up and try once more; a conflict then is the library's IntegrityError.
            offsets = self._offsets(list(groups), conn)
            appends = [
                _append(key, events, offsets.get(key), looked_up=True)
                for key, events in groups.items()
            ]
            try:
                results = self._append(appends, conn)
            except WrongExpectedVersionError as exc:
                raise IntegrityError(str(exc)) from exc
            for key, offset in offsets.items():
                datastore.remember_offset(key, offset)
        return _notification_ids(stored_events, groups, results)

    def _append(
        self, appends: list[StreamAppend], conn: psycopg.Connection[Any] | None
    ) -> list[AppendResult]:
        try:
            return self.datastore.store.append_to_streams(appends, conn=conn)
        except WrongExpectedVersionError:
            raise
        except (StreamDeletedError, DuplicateEventError) as exc:
            raise IntegrityError(str(exc)) from exc
        except StoreUnavailableError as exc:
            raise OperationalError(str(exc)) from exc
        except EventStoreError as exc:
            raise ProgrammingError(str(exc)) from exc

    def _offsets(self, keys: list[str], conn: psycopg.Connection[Any] | None) -> dict[str, int]:
        """The stored offsets of existing streams (missing streams are left out)."""
        queries = self.datastore.queries
        if conn is not None:
            return queries.offsets(conn, keys)
        with self.datastore.connection() as own:
            return queries.offsets(own, keys)


def _group(stored_events: Sequence[StoredEvent]) -> dict[str, list[StoredEvent]]:
    """Events by stream, in first-seen order; versions must follow on within an aggregate."""
    groups: dict[str, list[StoredEvent]] = {}
    for event in stored_events:
        key = str(event.originator_id)
        group = groups.setdefault(key, [])
        if group and event.originator_version != group[-1].originator_version + 1:
            raise IntegrityError(
                f"originator {key}: version {event.originator_version} does not follow "
                f"{group[-1].originator_version}"
            )
        group.append(event)
    return groups


def _append(
    key: str, events: list[StoredEvent], offset: int | None, *, looked_up: bool = False
) -> StreamAppend:
    """The StreamAppend for one aggregate's events.

    `offset` is originator_version - stream_version for the stream (None: not known, or the
    stream is missing when `looked_up`). Unknown streams are assumed to start at version 1,
    or to be new when the first version is below 1; a wrong guess fails and is looked up.
    """
    first = events[0].originator_version
    expected: int | ExpectedVersion
    if offset is None:
        expected = NO_STREAM if looked_up or first < 1 else first - 1
    else:
        expected = first - offset - 1
        if expected < 0:  # before the stream's first version: a conflict
            expected = NO_STREAM
    return StreamAppend(
        key,
        expected,
        [
            EventData(
                data=event.state,
                event_type=event.topic,
                metadata={_VERSION_KEY: event.originator_version},
            )
            for event in events
        ],
    )


def _notification_ids(
    stored_events: Sequence[StoredEvent],
    groups: dict[str, list[StoredEvent]],
    results: list[AppendResult],
) -> list[int]:
    """Each stored event's event_id, in the order the events were given."""
    if len(groups) == 1:
        first = results[0].first_event_id
        return list(range(first, first + len(stored_events)))
    ids: dict[tuple[str, int], int] = {}
    for (key, events), result in zip(groups.items(), results, strict=True):
        for i, event in enumerate(events):
            ids[key, event.originator_version] = result.first_event_id + i
    return [ids[str(e.originator_id), e.originator_version] for e in stored_events]


class EventStoreApplicationRecorder(EventStoreAggregateRecorder, ApplicationRecorder):
    """Notifications are the store's `$all`: notification id = event_id."""

    def __init__(self, datastore: EventStoreDatastore):
        super().__init__(datastore)

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        return self._insert(stored_events)

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        first = 1 if start is None else start if inclusive_of_start else start + 1
        with self.datastore.connection() as conn:
            rows = self.datastore.queries.notifications(conn, first, stop, limit, topics)
        originator_id = self.datastore.originator_id
        state = self.datastore.states.of
        return [
            Notification(
                id=row[0],
                originator_id=originator_id(row[1]),
                originator_version=row[2],
                topic=row[3],
                state=state(row[2:]),
            )
            for row in rows
        ]

    def max_notification_id(self) -> int | None:
        with self.datastore.connection() as conn:
            return self.datastore.queries.max_event_id(conn)

    def subscribe(
        self, gt: int | None = None, topics: Sequence[str] = ()
    ) -> Subscription[ApplicationRecorder]:
        return EventStoreSubscription(recorder=self, gt=gt, topics=topics)


class EventStoreSubscription(ListenNotifySubscription[EventStoreApplicationRecorder]):
    """Pulls new notifications whenever the store NOTIFYs its channel of a commit."""

    def __init__(
        self,
        recorder: EventStoreApplicationRecorder,
        gt: int | None = None,
        topics: Sequence[str] = (),
    ) -> None:
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        self._listen_thread = threading.Thread(target=self._listen, daemon=True)
        self._listen_thread.start()

    def __exit__(self, *args: object, **kwargs: Any) -> None:
        try:
            super().__exit__(*args, **kwargs)
        finally:
            self._listen_thread.join()

    def _listen(self) -> None:
        try:
            datastore = self._recorder.datastore
            with datastore.session() as conn:
                listen(conn, datastore.channel)
                # Commits between the first pull and the LISTEN notified nobody: pull again.
                self._has_been_notified.set()
                try:
                    while not self._has_been_stopped and not self._thread_error:
                        for _ in conn.notifies(timeout=0.1, stop_after=1):
                            self._has_been_notified.set()
                finally:
                    unlisten(conn)
        except BaseException as exc:
            if self._thread_error is None:
                self._thread_error = exc
            self.stop()


class EventStoreTrackingRecorder(TrackingRecorder):
    """One row per upstream application: the last notification id it processed."""

    def __init__(self, datastore: EventStoreDatastore):
        self.datastore = datastore

    def insert_tracking(self, tracking: Tracking) -> None:
        with self.datastore.connection() as conn:
            self._track(conn, tracking)

    def _track(self, conn: psycopg.Connection[Any], tracking: Tracking) -> None:
        name, position = tracking.application_name, tracking.notification_id
        if not self.datastore.queries.track(conn, name, position):
            raise IntegrityError(
                f"application {tracking.application_name!r} already tracked notification "
                f"{tracking.notification_id} or a later one"
            )

    def max_tracking_id(self, application_name: str) -> int | None:
        with self.datastore.connection() as conn:
            return self.datastore.queries.max_tracking(conn, application_name)


class EventStoreProcessRecorder(
    EventStoreTrackingRecorder, EventStoreApplicationRecorder, ProcessRecorder
):
    """Events and the tracking record that led to them commit in one transaction."""

    def __init__(self, datastore: EventStoreDatastore):
        EventStoreTrackingRecorder.__init__(self, datastore)
        EventStoreApplicationRecorder.__init__(self, datastore)

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        tracking: Tracking | None = kwargs.get("tracking")
        if tracking is None:
            return self._insert(stored_events)
        with self.datastore.connection() as conn, conn.transaction():
            self._track(conn, tracking)
            return self._insert(stored_events, conn)


class EventStoreSnapshotRecorder(EventStoreAggregateRecorder):
    """Snapshots and their history, in the module's own table (versions need not follow on)."""

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        if stored_events:
            with self.datastore.connection() as conn:
                self.datastore.queries.insert_snapshots(
                    conn,
                    [str(e.originator_id) for e in stored_events],
                    [e.originator_version for e in stored_events],
                    [e.topic for e in stored_events],
                    [e.state for e in stored_events],
                )
        return None

    def _rows(
        self,
        conn: psycopg.Connection[Any],
        originator_id: str,
        gt: int | None,
        lte: int | None,
        desc: bool,
        limit: int | None,
    ) -> list[EventRow]:
        return self.datastore.queries.snapshots(conn, originator_id, gt, lte, desc, limit)


class Factory(InfrastructureFactory[EventStoreTrackingRecorder]):
    """Builds the recorders on one EventStore named by EVENTSTORE_DSN / EVENTSTORE_SCHEMA."""

    EVENTSTORE_DSN = "EVENTSTORE_DSN"
    EVENTSTORE_SCHEMA = "EVENTSTORE_SCHEMA"
    EVENTSTORE_POOL_SIZE = "EVENTSTORE_POOL_SIZE"
    #: With PgBouncer (transaction pooling) as EVENTSTORE_DSN: a direct DSN for LISTEN and
    #: the subscriptions' locks (`EventStore.start(session_dsn=...)`).
    EVENTSTORE_SESSION_DSN = "EVENTSTORE_SESSION_DSN"
    #: The store's master key (base64, 32 bytes): events with a data subject, written through
    #: the EventStore API, are then decrypted (docs/eventsourcing.md, "Personal data").
    EVENTSTORE_MASTER_KEY = ENV_MASTER_KEY
    #: Or the topic (``module:name``) of a callable returning the store's `KeyStore`.
    EVENTSTORE_KEY_STORE_TOPIC = "EVENTSTORE_KEY_STORE_TOPIC"
    ORIGINATOR_ID_TYPE = "ORIGINATOR_ID_TYPE"
    CREATE_TABLE = "CREATE_TABLE"

    aggregate_recorder_class = EventStoreAggregateRecorder
    snapshot_recorder_class = EventStoreSnapshotRecorder
    application_recorder_class = EventStoreApplicationRecorder
    tracking_recorder_class = EventStoreTrackingRecorder
    process_recorder_class = EventStoreProcessRecorder

    def __init__(self, env: Environment | EnvType | None):
        super().__init__(env)
        dsn = self.env.get(self.EVENTSTORE_DSN)
        if not dsn:
            raise ConfigError(f"{self.EVENTSTORE_DSN} is not set: the store's DSN is required")
        schema = self.env.get(self.EVENTSTORE_SCHEMA) or "public"
        id_type = (self.env.get(self.ORIGINATOR_ID_TYPE) or "uuid").lower()
        if id_type not in ("uuid", "text"):
            raise ConfigError(f"{self.ORIGINATOR_ID_TYPE} must be 'uuid' or 'text'")
        if self.env_create_table():
            admin.init(dsn, schema)
        pool_size = int(self.env.get(self.EVENTSTORE_POOL_SIZE) or 10)
        self.datastore = EventStoreDatastore(
            dsn,
            schema,
            pool_size=pool_size,
            uuid_ids=id_type == "uuid",
            session_dsn=self.env.get(self.EVENTSTORE_SESSION_DSN) or None,
            encryption=encryption_from(
                self.env.get(self.EVENTSTORE_MASTER_KEY),
                self.env.get(self.EVENTSTORE_KEY_STORE_TOPIC),
            ),
        )

    def env_create_table(self) -> bool:
        return bool(strtobool(self.env.get(self.CREATE_TABLE) or "yes"))

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        if purpose == "snapshots":
            return type(self).snapshot_recorder_class(self.datastore)
        return type(self).aggregate_recorder_class(self.datastore)

    def application_recorder(self) -> ApplicationRecorder:
        return type(self).application_recorder_class(self.datastore)

    def tracking_recorder(
        self, tracking_recorder_class: type[EventStoreTrackingRecorder] | None = None
    ) -> EventStoreTrackingRecorder:
        if tracking_recorder_class is None:
            topic = self.env.get(self.TRACKING_RECORDER_TOPIC)
            if topic:
                from eventsourcing.utils import resolve_topic

                tracking_recorder_class = resolve_topic(topic)
            else:
                tracking_recorder_class = type(self).tracking_recorder_class
        assert tracking_recorder_class is not None
        return tracking_recorder_class(self.datastore)

    def process_recorder(self) -> ProcessRecorder:
        return type(self).process_recorder_class(self.datastore)

    def close(self) -> None:
        self.datastore.close()
