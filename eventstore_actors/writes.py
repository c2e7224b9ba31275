"""Appends: events checked and serialized here, then written by the writer actor (group
commit; on the caller's thread when the writer is idle, see `writer.Leader`), or with `conn=`
in the caller's own transaction (`storage.outbox`)."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import psycopg
import pykka

from .errors import CannotAppendToAllStreamError, SerializationError, StoreUnavailableError
from .events import NIL_UUID, AppendResult, EventData, StreamAppend
from .lifecycle.encryption import keyring_of, sealing
from .runtime import Runtime
from .serialization import inferred_type_name
from .storage import checkpoints, outbox
from .storage.appender import AppendRequest, NewEvent, StreamWrite
from .storage.outbox import Outbox, check_connection
from .storage.uuids import new_uuids
from .tracing import append_span, same_metadata
from .validation import check_event_uuid, check_expected_version, check_name, check_optional_name
from .writer import Append

if TYPE_CHECKING:
    from .integrations.otel import AppendSpan

__all__ = ["Writes"]

#: A caller's psycopg connection (`conn=`).
Conn = psycopg.Connection[Any]


class Writes:
    """`append_to_stream` and `append_to_streams` of one store, and the appender on callers'
    connections (`outbox`) that links with `conn=` share."""

    def __init__(self, runtime: Runtime) -> None:
        self._settings = runtime.settings
        #: The store's keyring when it runs with encryption (its serializer is fixed).
        self._keyring = keyring_of(runtime.settings.serializer)
        self._pool = runtime.pool
        self._registry = runtime.registry
        self._origin = runtime.origin
        # Leading (see writer.Leader) bounds a call by io_timeout (the watchdog) where the
        # actor's caller gives up after call_timeout: only where that is no longer a wait.
        settings = runtime.settings
        self._leader = runtime.leader if settings.call_timeout >= settings.io_timeout else None
        self._box_lock = threading.Lock()
        self._box: Outbox | None = None
        self._same_metadata = same_metadata(self._settings.serializer)

    def append_to_stream(
        self, stream_uuid: Any, expected_version: Any, events: Any, conn: Conn | None
    ) -> AppendResult | None:
        """`EventStore.append_to_stream`."""
        span = append_span()
        if span is None:
            return self._append_to_stream(stream_uuid, expected_version, events, conn, None)
        with span:
            result = self._append_to_stream(stream_uuid, expected_version, events, conn, span)
            span.appended([] if result is None else [result])
            return result

    def _append_to_stream(
        self,
        stream_uuid: Any,
        expected_version: Any,
        events: Any,
        conn: Conn | None,
        span: AppendSpan | None,
    ) -> AppendResult | None:
        write = self.checked(stream_uuid, expected_version, events, "events", span)
        if conn is not None:
            check_connection(conn)
        if write is None:
            return None
        request = self._request([write])
        return self.append(request, conn)[0]

    def append_to_streams(self, appends: Any, conn: Conn | None) -> list[AppendResult]:
        """`EventStore.append_to_streams`: each append checked, a stream once."""
        span = append_span()
        if span is None:
            return self._append_to_streams(appends, conn, None)
        with span:
            results = self._append_to_streams(appends, conn, span)
            span.appended(results)
            return results

    def _append_to_streams(
        self, appends: Any, conn: Conn | None, span: AppendSpan | None
    ) -> list[AppendResult]:
        if isinstance(appends, (str, bytes, Mapping)) or not isinstance(appends, Sequence):
            raise TypeError("appends must be a sequence of StreamAppend")
        writes: list[StreamWrite] = []
        seen: set[str] = set()
        for item in appends:
            if not isinstance(item, StreamAppend):
                raise TypeError(
                    f"appends must hold StreamAppend instances, got {type(item).__qualname__}"
                )
            write = self.checked(
                item.stream_uuid, item.expected_version, item.events, "events", span
            )
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
        request = self._request(writes)
        return self.append(request, conn)

    def _request(self, writes: list[StreamWrite]) -> AppendRequest:
        if not _given_uuids(writes):
            return AppendRequest(writes)
        # A retry: compared with what is stored, in all but the trace context.
        return AppendRequest(writes, True, self._same_metadata)

    def checked(
        self,
        stream_uuid: Any,
        expected_version: Any,
        events: Any,
        what: str,
        span: AppendSpan | None = None,
    ) -> StreamWrite | None:
        """One stream's append, checked and serialized (None: no events); `span`: the
        append's trace span, whose context goes into each event's metadata."""
        check_name(stream_uuid, "stream_uuid")
        if stream_uuid == checkpoints.ALL_STREAMS:
            raise CannotAppendToAllStreamError()
        if span is not None:
            span.stream(stream_uuid)
        expected = check_expected_version(expected_version)
        if isinstance(events, (str, bytes, Mapping)) or not isinstance(events, Sequence):
            raise TypeError(f"{what} must be a sequence of EventData")
        if not events:
            return None
        checked_types: set[str] = set()
        return StreamWrite(
            stream_uuid, expected, [self._serialize(e, span, checked_types) for e in events]
        )

    def _serialize(self, event: Any, span: AppendSpan | None, checked_types: set[str]) -> NewEvent:
        """`span`: the append's trace span when tracing (its context goes into the metadata);
        `checked_types`: names of this call already checked, event types and subjects (a
        batch's events mostly share one of each)."""
        if not isinstance(event, EventData):
            raise TypeError(f"events must be EventData instances, got {type(event).__qualname__}")
        event_type = event.event_type
        if event_type is None:  # the serializer's stable name, else module.qualname
            event_type = inferred_type_name(self._settings.serializer, event.data)
        if type(event_type) is not str or event_type not in checked_types:
            check_name(event_type, "event_type")
            checked_types.add(event_type)
        meta = event.metadata
        # type() first: isinstance against the Mapping ABC costs more than the rest here.
        if meta is not None and type(meta) is not dict and not isinstance(meta, Mapping):
            raise TypeError("metadata must be a mapping or None")
        given = None if event.event_uuid is None else check_event_uuid(event.event_uuid)
        serialize = self._settings.serializer.serialize
        data = serialize(event.data)
        if span is not None:
            meta = span.metadata(meta)
        metadata = None if meta is None else serialize(dict(meta))
        if type(data) is not bytes and not isinstance(data, bytes):
            raise SerializationError("the serializer must return bytes")
        if metadata is not None and not isinstance(metadata, bytes):
            raise SerializationError("the serializer must return bytes")
        correlation, causation = event.correlation_id, event.causation_id
        subject = event.subject
        if subject is not None:  # encrypted under the subject's key (created on first use)
            # Checked once per call: check_name is the same check for types and subjects.
            if type(subject) is not str or subject not in checked_types:
                subject = check_name(subject, "subject")
                checked_types.add(subject)
            keyring = self._keyring or sealing(self._settings.serializer, "an event")
            data = keyring.seal(subject, data, given)
        return NewEvent(
            event_type,
            None if correlation is None else check_optional_name(correlation, "correlation_id"),
            None if causation is None else check_optional_name(causation, "causation_id"),
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
        leader = self._leader
        if leader is not None and self._registry.closed_reason is None:
            led = leader.append(request)  # the writer is idle: commit on this thread
            if led is not None:
                return led
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
            ev = events[i]  # NewEvent(...) directly: _replace costs 4x as much
            events[i] = NewEvent(ev[0], ev[1], ev[2], ev[3], ev[4], fresh, ev[6])
