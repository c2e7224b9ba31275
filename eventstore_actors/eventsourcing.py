"""The persistence module for the `eventsourcing` library, under its public name.

``PERSISTENCE_MODULE=eventstore_actors.eventsourcing`` keeps working: the integration lives in
:mod:`eventstore_actors.integrations.eventsourcing`, and its names are re-exported here under
this module's name, so the library's topics for them (``eventstore_actors.eventsourcing:Factory``)
stay what they were.
"""

from .integrations import eventsourcing as _integration
from .integrations.eventsourcing import *  # noqa: F403 (the names of its __all__)

__all__ = list(_integration.__all__)

for _name in __all__:
    if isinstance(_value := getattr(_integration, _name), type):
        _value.__module__ = __name__
