"""From a checkout only: ``python -m bench`` runs ``eventstore_actors.bench`` (not in the wheel).

The suite lives in ``eventstore_actors/bench/`` so that installing the package adds no
top-level ``bench`` module that a user's own ``import bench`` would resolve to.
"""

from __future__ import annotations

from eventstore_actors.bench import main

__all__ = ["main"]
