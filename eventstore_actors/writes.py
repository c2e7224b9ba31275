"""Appends: events checked and serialized here, then written by the writer actor (group
commit), or with `conn=` in the caller's own transaction (`storage.outbox`)."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
import pykka

from .errors import CannotAppendToAllStreamError, SerializationError, StoreUnavailableError
from .events import NIL_UUID, AppendResult, EventData, StreamAppend
from .lifecycle.encryption import sealing
from .runtime import Runtime
from .serialization import inferred_type_name
from .storage import checkpoints, outbox
from .storage.appender import AppendRequest, NewEvent, StreamWrite
from .storage.outbox import Outbox, check_connection
from .storage.uuids import new_uuids
from .validation import check_event_uuid, check_expected_version, check_name, check_optional_name
from .writer import Append

__all__ = ["Writes"]

#: A caller's psycopg connection (`conn=`).
Conn = psycopg.Connection[Any]


class Writes:
    """`append_to_stream` and `append_to_streams` of one store, and the appender on callers'
    connections (`outbox`) that links with `conn=` share."""

    def __init__(self, runtime: Runtime) -> None:
        self._settings = runtime.settings
        self._pool = runtime.pool
        self._registry = runtime.registry
        self._origin = runtime.origin
        self._box_lock = threading.Lock()
        self._box: Outbox | None = None

    def append_to_stream(
        self, stream_uuid: Any, expected_version: Any, events: Any, conn: Conn | None
    ) -> AppendResult | None:
        """`EventStore.append_to_stream`."""
        write = self.checked(stream_uuid, expected_version, events, "events")
        if conn is not None:
            check_connection(conn)
        if write is None:
            return None
        request = AppendRequest([write], given_uuids=_given_uuids([write]))
        return self.append(request, conn)[0]

    def append_to_streams(self, appends: Any, conn: Conn | None) -> list[AppendResult]:
        """`EventStore.append_to_streams`: each append checked, a stream once."""
        if isinstance(appends, (str, bytes, Mapping)) or not isinstance(appends, Sequence):
            raise TypeError("appends must be a sequence of StreamAppend")
        writes: list[StreamWrite] = []
        seen: set[str] = set()
        for item in appends:
            if not isinstance(item, StreamAppend):
                raise TypeError(
                    f"appends must hold StreamAppend instances, got {type(item).__qualname__}"
                )
            write = self.checked(item.stream_uuid, item.expected_version, item.events, "events")
            if write is None:
                raise ValueError(f"the append to stream {item.stream_uuid!r} has no events")
            if write.stream_uuid in seen:
                raise ValueError(
                    f"stream {write.stream_uuid!r} appears twice: append to a stream once per call"
                )
            seen.add(write.stream_uuid)
            writes.append(write)
        if conn is not None:
            check_connection(conn)
        if not writes:
            return []
        request = AppendRequest(writes, given_uuids=_given_uuids(writes))
        return self.append(request, conn)

    def checked(
        self, stream_uuid: Any, expected_version: Any, events: Any, what: str
    ) -> StreamWrite | None:
        """One stream's append, checked and serialized (None: no events)."""
        check_name(stream_uuid, "stream_uuid")
        if stream_uuid == checkpoints.ALL_STREAMS:
            raise CannotAppendToAllStreamError()
        expected = check_expected_version(expected_version)
        if isinstance(events, (str, bytes, Mapping)) or not isinstance(events, Sequence):
            raise TypeError(f"{what} must be a sequence of EventData")
        if not events:
            return None
        return StreamWrite(stream_uuid, expected, [self._serialize(e) for e in events])

    def _serialize(self, event: Any) -> NewEvent:
        if not isinstance(event, EventData):
            raise TypeError(f"events must be EventData instances, got {type(event).__qualname__}")
        event_type = event.event_type
        if event_type is None:  # the serializer's stable name, else module.qualname
            event_type = inferred_type_name(self._settings.serializer, event.data)
        check_name(event_type, "event_type")
        if event.metadata is not None and not isinstance(event.metadata, Mapping):
            raise TypeError("metadata must be a mapping or None")
        given = check_event_uuid(event.event_uuid)
        serialize = self._settings.serializer.serialize
        data = serialize(event.data)
        metadata = None if event.metadata is None else serialize(dict(event.metadata))
        if not isinstance(data, bytes) or not isinstance(metadata, (bytes, type(None))):
            raise SerializationError("the serializer must return bytes")
        correlation_id = check_optional_name(event.correlation_id, "correlation_id")
        causation_id = check_optional_name(event.causation_id, "causation_id")
        subject = None if event.subject is None else check_name(event.subject, "subject")
        if subject is not None:  # encrypted under the subject's key (created on first use)
            data = sealing(self._settings.serializer, "an event").seal(subject, data, given)
        return NewEvent(
            event_type,
            correlation_id,
            causation_id,
            data,
            metadata,
            given if given is not None else _NO_UUID,
            subject,
        )

    def append(
        self, request: AppendRequest, conn: psycopg.Connection[Any] | None = None
    ) -> list[AppendResult]:
        _assign_uuids(request)
        self.refuse_own_lock_wait(conn)
        if conn is not None:
            return self.outbox().append(conn, request)
        timeout = self._settings.call_timeout
        for attempt in (1, 2):
            writer = self._registry.get("writer", timeout)
            try:
                decided = writer.ask(Append(request), timeout=timeout)
            except pykka.ActorDeadError:
                # The writer died before taking this append: nothing was written, try its successor.
                if attempt == 2:
                    raise StoreUnavailableError("the writer is restarting") from None
                continue
            except pykka.Timeout:
                raise StoreUnavailableError(
                    "the writer did not answer in time", outcome_unknown=True
                ) from None
            try:
                results: list[AppendResult] = decided.get(timeout=timeout)
            except pykka.Timeout:
                raise StoreUnavailableError(
                    "the append was not decided in time", outcome_unknown=True
                ) from None
            return results
        raise AssertionError("unreachable")

    def refuse_own_lock_wait(self, conn: psycopg.Connection[Any] | None = None) -> None:
        """StoreUnavailableError, before anything is sent, when this call would wait on the
        counter row lock held by a transaction of this very thread: one that appended with
        conn= and has not ended (on a connection other than `conn`). It would wait for ever
        (the thread that could end that transaction is the one waiting)."""
        box = self._box
        if box is None:
            return
        pids = box.lock_holders(but=conn)
        if not pids:
            return
        schema = self._settings.schema
        if self._pool.run(lambda c: outbox.holds_counter_lock(c, schema, pids)):
            raise StoreUnavailableError(
                "this thread's open transaction on a connection given as conn= appended and "
                "holds the store's append lock until it ends: this call would wait for it "
                "for ever; commit or roll that transaction back first (nothing was sent)"
            )

    def outbox(self) -> Outbox:
        """The appender on callers' connections, made on first use (it needs one query to
        identify the store's database)."""
        with self._box_lock:
            if self._box is None:
                found = self._pool.run(outbox.fingerprint)
                self._box = Outbox(
                    self._settings.schema, self._settings.channel, self._origin, found
                )
            return self._box


#: Stands for "the store assigns it" in a NewEvent until _assign_uuids replaces it.
_NO_UUID = NIL_UUID


def _given_uuids(writes: list[StreamWrite]) -> bool:
    """Whether the caller gave any event_uuid; ValueError when one is given twice."""
    given = [ev.event_uuid for w in writes for ev in w.events if ev.event_uuid is not _NO_UUID]
    if len(set(given)) != len(given):
        raise ValueError("the same event_uuid is given to several events of one call")
    return bool(given)


def _assign_uuids(request: AppendRequest) -> None:
    """Fresh time-ordered UUIDs for the events the caller gave none."""
    for write in request.writes:
        events = write.events
        missing = [i for i, ev in enumerate(events) if ev.event_uuid is _NO_UUID]
        for i, fresh in zip(missing, new_uuids(len(missing)), strict=True):
            events[i] = events[i]._replace(event_uuid=fresh)
