"""The arguments of a durable subscribe, checked once: `Checked` holds the options (the
`SubscribeOptions` given, over their defaults) as the subscription actors take them,
`Request` one subscribe's arguments with them, and `child_id` names a subscription in the
registry."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from ..events import RecordedEvent
from ..validation import (
    check_count,
    check_event_types,
    check_name,
    check_position,
    check_stream_prefix,
)
from .health import check_stall_after

__all__ = ["Checked", "Request", "check_flag", "check_seconds", "registry_id"]


@dataclasses.dataclass(frozen=True)
class Checked:
    """Subscription options of version 2 (checked at subscribe time)."""

    standby: bool = False
    mixed_batches: bool = False
    max_batch: int = 1000
    selector: Callable[[RecordedEvent], Any] | None = None
    event_types: tuple[str, ...] | None = None
    stream_prefix: str | None = None
    checkpoint_threshold: int | None = None
    checkpoint_after: float | None = None
    max_retries: int = 10
    retry_delay: float = 1.0
    partition: tuple[int, int] | None = None  # (index, count): one consumer-group partition
    concurrency_limit: int = 1
    partition_by: Callable[[RecordedEvent], Any] | None = None
    buffer_size: int = 1
    stall_after: float = 60.0  # seconds without an ack: "stalled" (subscriptions.health)

    @classmethod
    def of(cls, given: Mapping[str, Any]) -> Checked:
        """The options of `subscriptions.options.resolve` (every option), checked: TypeError
        or ValueError for a bad value or combination, before anything starts."""
        standby, mixed_batches, selector = (
            given["standby"],
            given["mixed_batches"],
            given["selector"],
        )
        checkpoint_threshold, checkpoint_after = (
            given["checkpoint_threshold"],
            given["checkpoint_after"],
        )
        if selector is not None and not callable(selector):
            raise TypeError("selector must be callable or None")
        limit, partition_by, buffer_size = (
            given["concurrency_limit"],
            given["partition_by"],
            given["buffer_size"],
        )
        limit, buffer_size = (
            check_count(limit, "concurrency_limit"),
            check_count(buffer_size, "buffer_size"),
        )
        if partition_by is not None and not callable(partition_by):
            raise TypeError("partition_by must be callable or None")
        if limit > 1 and standby is True:
            raise ValueError("standby does not combine with concurrency_limit > 1")
        if limit > 1 and mixed_batches is True:
            raise ValueError(
                "mixed_batches does not apply with concurrency_limit > 1 (each subscriber's "
                "batch holds up to buffer_size events of any streams)"
            )
        return cls(
            concurrency_limit=limit,
            partition_by=partition_by,
            buffer_size=buffer_size,
            standby=check_flag(standby, "standby"),
            mixed_batches=check_flag(mixed_batches, "mixed_batches"),
            max_batch=check_count(given["max_batch"], "max_batch"),
            selector=selector,
            event_types=check_event_types(given["event_types"]),
            stream_prefix=check_stream_prefix(given["stream_prefix"]),
            checkpoint_threshold=(
                None
                if checkpoint_threshold is None
                else check_count(checkpoint_threshold, "checkpoint_threshold")
            ),
            checkpoint_after=check_seconds(checkpoint_after, "checkpoint_after"),
            max_retries=check_position(given["max_retries"], "max_retries"),
            retry_delay=check_seconds(given["retry_delay"], "retry_delay") or 0.0,
            stall_after=check_stall_after(given["stall_after"]),
        )


@dataclasses.dataclass(frozen=True)
class Request:
    """One durable subscribe's arguments, as they go from the facade to the subscription
    that starts (a consumer group's partitions: one each, with their own name and options)."""

    stream_uuid: str
    name: str
    subscriber: Any
    start_from: str | int
    mapper: Callable[[RecordedEvent], Any] | None
    max_size: int | None
    options: Checked


def check_seconds(value: Any, name: str) -> float | None:
    """None or a finite number of seconds >= 0 (TypeError/ValueError otherwise)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


def check_flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def registry_id(stream_uuid: str, name: str) -> str:
    """Structured, so that ("order:1", "audit") and ("order", "1:audit") differ; the prefix
    is how the registry, the ticker and the publisher find subscriptions."""
    check_name(name, "subscription_name")
    return "subscription:" + json.dumps([stream_uuid, name])
