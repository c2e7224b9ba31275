"""The keyword options of durable subscriptions, declared once for the sync and asyncio APIs.

`EventStore.subscribe_to_stream` takes ``**options: Unpack[SubscribeOptions]`` and
`subscribe_to_all_streams` ``**options: Unpack[AllStreamsSubscribeOptions]``, and so do their
`AsyncEventStore` twins: a misspelt option is a type error for mypy or pyright in both APIs
(and a TypeError naming the option it resembles at run time). The defaults are in `DEFAULTS`;
each option's line in the TypedDict's docstring says its default and meaning, and the
subscribe methods' docstrings carry these lines (see `documented`).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

from typing_extensions import TypedDict

from ..events import RecordedEvent

__all__ = ["DEFAULTS", "AllStreamsSubscribeOptions", "SubscribeOptions", "documented", "resolve"]

_F = TypeVar("_F", bound=Callable[..., Any])


class SubscribeOptions(TypedDict, total=False):
    """Keyword options of `subscribe_to_stream` and `subscribe_to_all_streams` (sync and
    asyncio alike). Options that do not apply, or values out of range, raise ValueError at
    subscribe time. Each option, its default and what it does:

    standby (default False): when another process holds the name, wait and take it over when
        that process stops or dies (`Subscribed` is told then) instead of raising
        SubscriptionAlreadyExistsError.
    max_batch (default 1000): the most events in one batch.
    selector (default None): fn(event) -> bool; only events for which it is true are
        delivered, the others count as acked.
    event_types (default None): only events of these types are delivered (filtered in the
        database); the others count as acked.
    checkpoint_threshold (default None): write the checkpoint at least every N acked events.
    checkpoint_after (default None): write the checkpoint at least every S seconds while acks
        are pending (with neither, it follows each ack within a second).
    max_retries (default 10): deliveries again after nack(..., "retry") before the event is
        parked (0: a retry parks at once).
    retry_delay (default 1.0): seconds before a retried event is delivered again.
    concurrency_limit (default 1): competing consumers: up to this many subscribers under one
        name in the process that holds it; acks are then per event.
    partition_by (default None): fn(event) -> key, with concurrency_limit > 1: events of one
        key go to one subscriber at a time, in order.
    buffer_size (default 1): events in flight per subscriber when concurrency_limit > 1.
    stall_after (default 60.0): seconds without an ack, counted from the delivery of the
        oldest unacked event, after which the held subscription is "stalled" (one WARNING,
        a metric, its state in subscriptions(); cleared when acks resume). A number > 0.
    """

    standby: bool
    max_batch: int
    selector: Callable[[RecordedEvent], Any] | None
    event_types: Collection[str] | None
    checkpoint_threshold: int | None
    checkpoint_after: float | None
    max_retries: int
    retry_delay: float
    concurrency_limit: int
    partition_by: Callable[[RecordedEvent], Any] | None
    buffer_size: int
    stall_after: float


class AllStreamsSubscribeOptions(SubscribeOptions, total=False):
    """Keyword options of `subscribe_to_all_streams`: every `SubscribeOptions`, and these
    (all-streams subscriptions only; given to `subscribe_to_stream`, ValueError):

    mixed_batches (default False): a batch may hold events of several streams (up to
        max_batch events), for projections that commit once per batch.
    stream_prefix (default None): only events of streams whose uuid starts with it (a
        category), filtered in the database.
    partitions (default None): N: a consumer group of N partitions, which any number of
        processes share (the same N everywhere); see `subscriptions.group`.
    """

    mixed_batches: bool
    stream_prefix: str | None
    partitions: int | None


#: Every option's default (what an option not given means).
DEFAULTS: Mapping[str, Any] = {
    "standby": False,
    "max_batch": 1000,
    "selector": None,
    "event_types": None,
    "checkpoint_threshold": None,
    "checkpoint_after": None,
    "max_retries": 10,
    "retry_delay": 1.0,
    "concurrency_limit": 1,
    "partition_by": None,
    "buffer_size": 1,
    "stall_after": 60.0,
    "mixed_batches": False,
    "stream_prefix": None,
    "partitions": None,
}


def resolve(options: Mapping[str, Any], method: str) -> dict[str, Any]:
    """Every option, the given ones over the defaults; TypeError for an unknown name (as
    Python says it for a keyword argument, with the option it resembles)."""
    for name in options:
        if name not in DEFAULTS:
            close = difflib.get_close_matches(str(name), list(DEFAULTS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(f"{method}() got an unexpected keyword argument {name!r}{hint}")
    return {**DEFAULTS, **options}


def option_lines(options: type) -> str:
    """The option lines of a TypedDict's docstring (after its introduction), dedented."""
    lines = (options.__doc__ or "").partition(":\n\n")[2]
    return inspect.cleandoc("x\n" + lines)[2:]


def documented(*options: type) -> Callable[[_F], _F]:
    """Append the option lines of `options` (TypedDicts) to the method's docstring, so that
    help() on the method lists every option with its default."""

    def decorate(method: _F) -> _F:
        lines = "\n".join(option_lines(o) for o in options)
        method.__doc__ = f"{inspect.cleandoc(method.__doc__ or '')}\n\nOptions:\n{lines}\n"
        return method

    return decorate
