"""The persistence module for the `eventsourcing` library, under its public name.

``PERSISTENCE_MODULE=eventstore_actors.eventsourcing`` keeps working: the integration lives in
:mod:`eventstore_actors.integrations.eventsourcing`, and its names are re-exported here under
this module's name, so the library's topics for them (``eventstore_actors.eventsourcing:Factory``)
stay what they were.
"""

from .integrations.eventsourcing import (
    EventStoreAggregateRecorder,
    EventStoreApplicationRecorder,
    EventStoreDatastore,
    EventStoreProcessRecorder,
    EventStoreSnapshotRecorder,
    EventStoreTrackingRecorder,
    Factory,
)

for _cls in (
    EventStoreAggregateRecorder,
    EventStoreApplicationRecorder,
    EventStoreDatastore,
    EventStoreProcessRecorder,
    EventStoreSnapshotRecorder,
    EventStoreTrackingRecorder,
    Factory,
):
    _cls.__module__ = __name__

__all__ = [
    "EventStoreAggregateRecorder",
    "EventStoreApplicationRecorder",
    "EventStoreDatastore",
    "EventStoreProcessRecorder",
    "EventStoreSnapshotRecorder",
    "EventStoreTrackingRecorder",
    "Factory",
]
