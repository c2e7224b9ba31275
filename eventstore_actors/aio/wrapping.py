"""Sync EventStore methods turned into their asyncio twins, so that `AsyncEventStore` lists
each plain method in one line (`name = awaitable(EventStore.name)`) and keeps its signature,
name and docstring for help() and the API reference."""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, Concatenate, ParamSpec, TypeVar

from ..events import RecordedEvent
from ..store import EventStore

__all__ = ["awaitable", "streaming"]

P = ParamSpec("P")
R = TypeVar("R")


def awaitable(
    method: Callable[Concatenate[EventStore, P], R],
) -> Callable[Concatenate[Any, P], Coroutine[Any, Any, R]]:
    """The sync method `method`, run on the store's threads and awaited."""
    name = method.__name__

    async def call(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
        sync: Callable[P, R] = getattr(self._store, name)
        result: R = await self._calls.run(sync, *args, **kwargs)
        return result

    call.__name__ = name
    call.__qualname__ = f"AsyncEventStore.{name}"
    call.__doc__ = f"Awaitable `EventStore.{name}`: {method.__doc__ or ''}".rstrip(": ")
    call.__signature__ = inspect.signature(method)  # type: ignore[attr-defined]
    return call


def streaming(
    method: Callable[Concatenate[EventStore, P], Iterator[RecordedEvent]],
) -> Callable[Concatenate[Any, P], AsyncIterator[RecordedEvent]]:
    """The sync streaming read `method` as an async iterator, returned at once: its first
    iteration makes the call (so a missing stream raises there), then each page of
    `read_batch_size` events is read on a thread; one page is held at a time."""
    name = method.__name__
    signature = inspect.signature(method)

    def call(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> AsyncIterator[RecordedEvent]:
        bound = signature.bind(self._store, *args, **kwargs)  # a wrong name: TypeError now
        bound.apply_defaults()
        size = bound.arguments.get("read_batch_size", 1000)
        sync: Callable[P, Iterator[RecordedEvent]] = getattr(self._store, name)
        pages: AsyncIterator[RecordedEvent] = self._paged(
            functools.partial(sync, *args, **kwargs), size
        )
        return pages

    call.__name__ = name
    call.__qualname__ = f"AsyncEventStore.{name}"
    call.__doc__ = f"Async iterator over `EventStore.{name}`: {method.__doc__ or ''}".rstrip(": ")
    # What help() shows: the sync parameters, and what this returns.
    shown = signature.replace(return_annotation="AsyncIterator[RecordedEvent]")
    call.__signature__ = shown  # type: ignore[attr-defined]
    return call
