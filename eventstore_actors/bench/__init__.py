"""The eventstore-actors benchmark suite: each workload through the public API and as raw psycopg.

Run it with ``eventstore-actors bench`` or ``python -m eventstore_actors.bench`` (``--help`` for
options); from a checkout, ``python -m bench`` works too (the top-level ``bench/`` forwards here).
It lives inside the package so that the wheel installs no top-level ``bench`` of its own.
"""

from __future__ import annotations

from .cli import main

__all__ = ["main"]
