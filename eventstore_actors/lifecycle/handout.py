"""Events decoded earlier, checked again as they are handed out: a subject forgotten since
they were read comes as FORGOTTEN.

Why: a read decides with the forget generation of its own statement (see `Keyring`), but
events decoded before `forget_subject` returned can wait in memory (unacked batches behind a
slow subscriber, a prefetched page, an asyncio queue) and be handed out after it.
"""

from __future__ import annotations

from ..events import FORGOTTEN, RecordedEvent
from .encryption import Keyring

__all__ = ["current", "forgotten_since"]


def forgotten_since(events: list[RecordedEvent], keyring: Keyring | None) -> list[RecordedEvent]:
    """`events` decoded earlier (a subscription's buffer, a page being streamed), about to be
    handed out: those whose subject was forgotten since, as FORGOTTEN (`forgotten=True`).
    A forget returns once every store instance evicted the subject's key or stopped
    trusting its cache (lifecycle/eviction.py), so a cached key under the cache's lease
    still means "not forgotten"; an evicted one (or any, without a lease) is looked up
    again. The same list when nothing changed (the common case costs a test per event)."""
    if keyring is None:
        return events
    changed: list[RecordedEvent] | None = None
    for index, event in enumerate(events):
        subject = event.subject
        if subject is None or event.forgotten or keyring.still_open(subject):
            continue
        if changed is None:
            changed = list(events)
        changed[index] = _as_forgotten(event)
    return events if changed is None else changed


def current(event: RecordedEvent, keyring: Keyring) -> RecordedEvent:
    """One event decoded earlier, as `forgotten_since` would hand it out (a stream being
    iterated checks each event as it yields it)."""
    subject = event.subject
    if subject is None or event.forgotten or keyring.still_open(subject):
        return event
    return _as_forgotten(event)


def _as_forgotten(event: RecordedEvent) -> RecordedEvent:
    copy = object.__new__(RecordedEvent)
    copy.__dict__.update(event.__dict__, data=FORGOTTEN, forgotten=True)
    return copy
