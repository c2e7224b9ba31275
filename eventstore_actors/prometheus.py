"""The Prometheus export under its public name (`from eventstore_actors import prometheus`).

The collector lives in :mod:`eventstore_actors.integrations.prometheus`; importing this
module without `prometheus_client` raises ImportError saying what to install.
"""

from .integrations.prometheus import StoreCollector, register

__all__ = ["StoreCollector", "register"]
