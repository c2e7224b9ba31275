"""What the console shows, as plain JSON-ready dicts: one function per page, each built from
the store's public API only (the HTML pages and their `/api/` twins render the same dicts).

Every call here is a short, indexed read: the overview asks `status` (one connection, three
counters), the $all head and a handful of one-event reads to find the event written a minute
ago; the streams page is one `paginate_streams` call per page; a stream's page one backward
read of `page_size` events.
"""

from __future__ import annotations

import functools
import json
import os
import re
import socket
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from ... import (
    EventStore,
    RecordedEvent,
    StreamDeletedError,
    SubscriptionInfo,
    SubscriptionNotFoundError,
)
from ...lifecycle.sealed import SEALED, marking_sealed
from ...storage.migrations import SCHEMA_VERSION
from ...validation import MAX_BIGINT

__all__ = [
    "check_after",
    "event_json",
    "overview",
    "parked",
    "stream_page",
    "streams_page",
    "subscriptions",
    "tail",
]

#: Events per page of a stream, streams per page of the streams browser.
PAGE_SIZE = 50
#: At most this many substring matches are read to fill one page of a prefix search.
_PREFIX_CHUNK = 500
_PID_RE = re.compile(r"\bpid (\d+)\b")


def _time(value: datetime | None) -> str | None:
    """ISO 8601 in UTC, whatever the session's time zone."""
    return None if value is None else value.astimezone(UTC).isoformat()


def _jsonable(value: Any) -> Any:
    """`value` as JSON would hold it (anything else, and NaN or infinities, as text), so it
    can be pretty-printed and sent as strict JSON."""
    return json.loads(json.dumps(value, default=str), parse_constant=str)


_P = ParamSpec("_P")
_T = TypeVar("_T")


def _sealed_marked(read: Callable[_P, _T]) -> Callable[_P, _T]:
    """`read`'s store reads give an event whose encrypted data cannot be decrypted by this
    store (it runs without encryption, or with a key that does not open it) as data=SEALED
    instead of failing the whole page (see `marking_sealed`)."""

    @functools.wraps(read)
    def marked(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        with marking_sealed():
            return read(*args, **kwargs)

    return marked


def event_json(event: RecordedEvent, *, forgotten: bool = False) -> dict[str, Any]:
    """One event as the console shows it. A forgotten event (its subject's key was deleted;
    `forgotten`: known otherwise, see `_events_json`) shows no data at all, only that it was
    forgotten; an event whose encrypted data this store cannot decrypt (it runs without the
    master key) shows none either, only that it is unreadable here."""
    forgotten = forgotten or bool(getattr(event, "forgotten", False))
    unreadable = not forgotten and event.data is SEALED
    return {
        "event_id": event.event_id,
        "stream_uuid": event.stream_uuid,
        "stream_version": event.stream_version,
        "event_number": event.event_number,
        "event_type": event.event_type,
        "event_uuid": str(event.event_uuid),
        "correlation_id": event.correlation_id,
        "causation_id": event.causation_id,
        "created_at": _time(event.created_at),
        "subject": getattr(event, "subject", None),
        "forgotten": forgotten,
        "unreadable": unreadable,
        "data": None if forgotten or unreadable else _jsonable(event.data),
        "metadata": None if event.metadata is None else _jsonable(dict(event.metadata)),
    }


def _events_json(store: EventStore, events: Iterable[RecordedEvent]) -> list[dict[str, Any]]:
    """`events` as the console shows them. An event read as SEALED (no key here) does not say
    whether its subject is forgotten: the store is asked, once per subject."""
    asked: dict[str, bool] = {}
    shown = []
    for event in events:
        gone = False
        if event.data is SEALED and event.subject is not None:
            if event.subject not in asked:
                asked[event.subject] = store.is_forgotten(event.subject)
            gone = asked[event.subject]
        shown.append(event_json(event, forgotten=gone))
    return shown


def _events_per_second(store: EventStore, head: int, now: datetime) -> float:
    """Events appended in the last minute / 60. The first event_id of that minute is found
    with one-event backward reads of $all (an index lookup each): stepping back in strides
    growing 16-fold until an event older than the minute, then narrowing that bracket by
    interpolating on the events' times (bisecting when that stalls), to within 1 % of the
    count: 15 to 20 reads for a million events a minute, fewer for fewer."""
    cutoff = now - timedelta(seconds=60)

    def at(event_id: int) -> RecordedEvent | None:
        found = store.read_all_streams_backward(event_id, 1)
        return found[0] if found else None

    newest = at(head) if head > 0 else None
    if newest is None or newest.created_at < cutoff:
        return 0.0
    # (inside, inside_at): an event within the minute; (old, old_at): one before it, or 0.
    inside, inside_at = newest.event_id, newest.created_at
    old, old_at = 0, cutoff
    stride = 64
    while inside - stride >= 1:
        event = at(inside - stride)
        if event is None:
            break
        if event.created_at < cutoff:
            old, old_at = event.event_id, event.created_at
            break
        inside, inside_at, stride = event.event_id, event.created_at, stride * 16
    guess = True
    while inside - old > max(1, (newest.event_id - inside) // 100):
        middle = (inside + old) // 2
        span = (inside_at - old_at).total_seconds()
        if guess and old and span > 0:  # where the cutoff falls, if appends were steady
            share = (cutoff - old_at).total_seconds() / span
            middle = min(inside - 1, max(old + 1, old + round(share * (inside - old))))
        width = inside - old
        event = at(middle)
        if event is None or event.event_id <= old:
            old = middle
        elif event.created_at < cutoff:
            old, old_at = event.event_id, event.created_at
        else:
            inside, inside_at = event.event_id, event.created_at
        guess = inside - old <= width // 2  # a guess that did not halve it: bisect next
    return round((newest.event_id - inside + 1) / 60.0, 3)


def _instances(subs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The store instances seen: every instance holding a subscription (its holder text names
    its host and pid), and this console's process if it holds none."""
    here = f"{socket.gethostname()} pid {os.getpid()}"
    found: dict[str, dict[str, Any]] = {}
    for sub in subs:
        holder = sub.get("holder")
        if not holder:
            continue
        match = _PID_RE.search(str(holder))
        entry = found.setdefault(
            str(holder),
            {
                "instance": str(holder),
                "pid": int(match.group(1)) if match else None,
                "this_process": str(holder).startswith(here + " "),
                "subscriptions": 0,
            },
        )
        entry["subscriptions"] += 1
    rows = sorted(found.values(), key=lambda e: (not e["this_process"], str(e["instance"])))
    if not any(e["this_process"] for e in rows):
        rows.insert(
            0, {"instance": here, "pid": os.getpid(), "this_process": True, "subscriptions": 0}
        )
    return rows


@_sealed_marked
def overview(store: EventStore) -> dict[str, Any]:
    """The store at a glance: schema version, head, events per second over the last minute,
    stream and subscription counts, the store instances seen. The schema version is this
    release's: a store starts only on a schema of exactly that version (see runtime), and a
    migration past it is refused while it runs."""
    head = store.stream_info("$all").stream_version
    streams = store.paginate_streams(page_size=1).total_entries  # an index-only count
    subs = [_subscription_row(s) for s in store.subscriptions()]
    now = datetime.now(UTC)
    return {
        "schema": store.settings.schema,
        "schema_version": SCHEMA_VERSION,
        "head": head,
        "events_per_second": _events_per_second(store, head, now),
        "streams": streams,
        "subscriptions": len(subs),
        "instances": _instances(subs),
        "at": now.isoformat(),
    }


def _stream_row(info: Any) -> dict[str, Any]:
    max_age = getattr(info, "max_age", None)
    return {
        "stream_uuid": info.stream_uuid,
        "stream_version": info.stream_version,
        "created_at": _time(info.created_at),
        "deleted_at": _time(info.deleted_at),
        "status": info.status,
        "first_version": getattr(info, "first_version", 1),
        "max_count": getattr(info, "max_count", None),
        "max_age_seconds": None if max_age is None else max_age.total_seconds(),
    }


def streams_page(store: EventStore, prefix: str, page: int) -> dict[str, Any]:
    """One page of streams, in creation order; with `prefix`, those whose name starts with it
    (in name order). Without a prefix this is one `paginate_streams` page (index scans); with
    one, `paginate_streams(search=prefix)` narrows the streams to those containing it and the
    names starting with it are kept, read in chunks until the page is full."""
    if page < 1:
        raise ValueError(f"page must be 1 or more, got {page}")
    if not prefix:
        found = store.paginate_streams(page_size=PAGE_SIZE, page_number=page)
        return {
            "prefix": "",
            "page": page,
            "page_size": PAGE_SIZE,
            "total_entries": found.total_entries,
            "total_pages": found.total_pages,
            "has_next": page < found.total_pages,
            "streams": [_stream_row(s) for s in found.entries],
        }
    rows: list[dict[str, Any]] = []
    skip, chunk, has_next = (page - 1) * PAGE_SIZE, 1, False
    while True:
        found = store.paginate_streams(
            page_size=_PREFIX_CHUNK, page_number=chunk, search=prefix, sort_by="stream_uuid"
        )
        for info in found.entries:
            if not info.stream_uuid.startswith(prefix):
                continue
            if skip:
                skip -= 1
            elif len(rows) < PAGE_SIZE:
                rows.append(_stream_row(info))
            else:
                has_next = True
                break
        if has_next or chunk >= found.total_pages:
            break
        chunk += 1
    return {
        "prefix": prefix,
        "page": page,
        "page_size": PAGE_SIZE,
        "total_entries": None,  # counting every prefix match would read them all
        "total_pages": None,
        "has_next": has_next,
        "streams": rows,
    }


@_sealed_marked
def stream_page(store: EventStore, stream_uuid: str, before: int | None) -> dict[str, Any]:
    """A stream's info and up to PAGE_SIZE of its events, newest first, from `before`
    (inclusive; None: the last event) down; "$all" pages through every stream's events."""
    info = _stream_row(store.stream_info(stream_uuid))
    start = -1 if before is None else before
    deleted = False
    events: list[RecordedEvent] = []
    if start != 0:
        try:
            if stream_uuid == "$all":
                events = store.read_all_streams_backward(start, PAGE_SIZE)
            else:
                events = store.read_stream_backward(stream_uuid, start, PAGE_SIZE)
        except StreamDeletedError:
            deleted = True
    position = None
    if events:
        last = events[-1]
        position = last.event_id if stream_uuid == "$all" else last.event_number
    return {
        "stream": info,
        "deleted": deleted,
        "events": _events_json(store, events),
        "next_before": position - 1 if position is not None and position > 1 else None,
    }


def check_after(after: int | None) -> int | None:
    """A tail's `after` (or Last-Event-ID): None, or an event_id after which one can be read
    (ValueError otherwise, which the console answers 400)."""
    if after is not None and after < 0:
        raise ValueError(f"after must be 0 or more, got {after}")
    if after is not None and after >= MAX_BIGINT:
        raise ValueError(f"after must be at most {MAX_BIGINT - 1}, got {after}")
    return after


@_sealed_marked
def tail(store: EventStore, after: int | None, count: int = PAGE_SIZE) -> dict[str, Any]:
    """$all's events after `after` (oldest first), or the last `count` when `after` is None."""
    check_after(after)
    if after is None and count < 1:
        events = []
    elif after is None:
        events = list(reversed(store.read_all_streams_backward(-1, count)))
    else:
        events = store.read_all_streams_forward(after + 1, count)
    last = events[-1].event_id if events else after
    if last is None:
        last = store.stream_info("$all").stream_version
    return {"events": _events_json(store, events), "last_event_id": last}


def _subscription_row(sub: SubscriptionInfo) -> dict[str, Any]:
    last_ack = getattr(sub, "last_ack_at", None)
    return {
        "stream_uuid": sub.stream_uuid,
        "subscription_name": sub.subscription_name,
        "partition": sub.partition,
        "checkpoint": sub.checkpoint,
        "head": sub.head,
        "lag": sub.lag,
        "lag_seconds": getattr(sub, "lag_seconds", None),
        "state": getattr(sub, "state", None),
        "last_ack_at": _time(last_ack) if isinstance(last_ack, datetime) else None,
        "active": sub.active,
        "holder": sub.holder,
        "parked": sub.parked,
    }


def subscriptions(store: EventStore) -> dict[str, Any]:
    """One row per durable subscription (per partition of a consumer group)."""
    return {"subscriptions": [_subscription_row(s) for s in store.subscriptions()]}


@_sealed_marked
def parked(store: EventStore, name: str, stream_uuid: str) -> dict[str, Any]:
    """A subscription's parked events with their reasons; SubscriptionNotFoundError if the
    subscription is unknown."""
    rows = [r for r in store.subscriptions() if _matches(r, name, stream_uuid)]
    if not rows:
        raise SubscriptionNotFoundError(f"no subscription {name!r} on {stream_uuid!r}")
    found = store.parked_events(name, stream_uuid)
    shown = _events_json(store, [p.event for p in found])
    return {
        "subscription_name": name,
        "stream_uuid": stream_uuid,
        "parked": [
            {
                "reason": p.reason,
                "retries": p.retries,
                "parked_at": _time(p.parked_at),
                "event": event,
            }
            for p, event in zip(found, shown, strict=True)
        ],
    }


def _matches(row: SubscriptionInfo, name: str, stream_uuid: str) -> bool:
    return row.subscription_name == name and row.stream_uuid == stream_uuid


def pretty(value: Any) -> str:
    """JSON data or metadata as indented text (escaped later, where it is rendered)."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=isinstance(value, Mapping))
