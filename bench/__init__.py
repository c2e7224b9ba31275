"""The eventstore-actors benchmark suite: each workload through the public API and as raw psycopg.

Run it with ``eventstore-actors bench`` or ``python -m bench`` (``--help`` for options).
"""

from __future__ import annotations

from .cli import main

__all__ = ["main"]
