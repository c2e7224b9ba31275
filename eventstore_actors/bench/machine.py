"""Where the figures came from: CPU, memory, Python, psycopg and the PostgreSQL settings."""

from __future__ import annotations

import os
import platform
from typing import Any

import psycopg

__all__ = ["busy_warning", "describe", "load_average", "summary"]

_SETTINGS = ("fsync", "synchronous_commit", "shared_buffers", "wal_level", "max_connections")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def load_average() -> float | None:
    """The 1-minute load average, or None where the OS does not say."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def busy_warning() -> str | None:
    """A warning when other work is using the CPUs (the figures would be noisy)."""
    load, cores = load_average(), os.cpu_count() or 1
    if load is not None and load > 0.5 * cores:
        return (
            f"warning: load average {load:.1f} on {cores} cores before the run; other work "
            "on this machine makes the figures noisy"
        )
    return None


def describe(dsn: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "load_average_1m": load_average(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "psycopg": psycopg.__version__,
        "psycopg_impl": psycopg.pq.__impl__,
    }
    with psycopg.connect(dsn, autocommit=True) as conn:
        info["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        rows = conn.execute(
            "SELECT name, setting, unit FROM pg_settings WHERE name = ANY(%s)", (list(_SETTINGS),)
        ).fetchall()
        info["postgresql_settings"] = {
            name: f"{setting}{'' if unit is None else ' ' + unit}" for name, setting, unit in rows
        }
    return info


def summary(info: dict[str, Any]) -> str:
    """One line for the report header."""
    pg = info.get("postgresql_settings", {})
    return (
        f"{info['cpu']}, {info['cores']} cores, {info['memory_gib']:.0f} GiB; "
        f"Python {info['python']}, psycopg {info['psycopg']} ({info['psycopg_impl']}); "
        f"PostgreSQL {info['postgresql']} fsync={pg.get('fsync')} "
        f"synchronous_commit={pg.get('synchronous_commit')}"
    )
