"""What every workload gets: the DSN, the bench schema, the sizes, progress, a store factory."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .progress import Progress
from .schema import BenchSchema
from .sizes import Sizes

if TYPE_CHECKING:
    from eventstore_actors import EventStore

__all__ = ["Context"]


@dataclass
class Context:
    dsn: str
    schema: BenchSchema
    sizes: Sizes
    progress: Progress

    @contextmanager
    def store(self, **options: Any) -> Iterator[EventStore]:
        """A store on the bench schema, started now and stopped on exit."""
        from eventstore_actors import EventStore

        store = EventStore.start(self.dsn, schema=self.schema.name, **options)
        try:
            yield store
        finally:
            store.stop()

    @contextmanager
    def step(self, description: str) -> Iterator[None]:
        """One unit of progress, shown while it runs; ticks when the block finishes."""
        self.progress.begin(description)
        yield
        self.progress.end()
