"""Bounded logging: repeated warnings of the package are rate-limited, and psycopg's pool
logger stays quiet unless the application turns it up.

During a database outage every actor retries with back-off and says so, and psycopg_pool
reports each broken connection it discards through the standard logging module: a 6 s outage
printed about 20 lines. Now:

- `get_logger(name)` is structlog's logger of that name, wrapped: a warning or error with the
  same event, level and bound context (actor, schema, subscription, ...) passes at most once
  per `INTERVAL` seconds; the next one that passes carries ``suppressed=N``. Info and debug
  lines pass untouched. Nothing is configured: the wrapped logger is structlog's own.
- `quiet_third_party()` (called by `EventStore.start`) gives the ``psycopg.pool`` logger the
  level ERROR *only if the application left it unset* (NOTSET), and a filter that rate-limits
  its records the same way. Why a level on that one logger rather than a NullHandler: a
  NullHandler does not stop records from propagating to the root logger's handlers, and a
  filter alone would still print one line per interval for what the store already reports
  itself. An application that wants the pool's warnings sets the level itself
  (``logging.getLogger("psycopg.pool").setLevel(logging.WARNING)``), and we never touch it
  again; the filter then still bounds them. Global logging (root logger, handlers,
  structlog's configuration) is never changed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Hashable
from typing import Any

import structlog

__all__ = ["INTERVAL", "RateLimitFilter", "get_logger", "quiet_third_party"]

#: Seconds during which a repeated warning (same logger, event and context) is suppressed.
INTERVAL = 10.0
#: The third-party loggers the package makes noise through.
THIRD_PARTY = ("psycopg.pool",)


class _Limiter:
    """Per key: admit once per `INTERVAL` and count what was held back meanwhile."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: dict[Hashable, tuple[float, int]] = {}  # key: (last admitted, held back)

    def admit(self, key: Hashable) -> int | None:
        """None: suppress this one; else how many were suppressed since the last admitted."""
        now = time.monotonic()
        with self._lock:
            last, held = self._state.get(key, (float("-inf"), 0))
            if now - last < INTERVAL:
                self._state[key] = (last, held + 1)
                return None
            if len(self._state) > 10_000:  # unbounded keys (a bug) must not leak memory
                self._state.clear()
            self._state[key] = (now, 0)
            return held


_limiter = _Limiter()


class ThrottledLogger:
    """A structlog logger whose warnings and errors are rate-limited (see the module doc)."""

    def __init__(self, logger: Any, name: str, context: tuple[Any, ...] = ()) -> None:
        self._logger = logger
        self._name = name
        self._context = context

    def bind(self, **values: Any) -> ThrottledLogger:
        """Bound like structlog's; the bound values are part of the rate-limit key."""
        extra = tuple(sorted((k, repr(v)) for k, v in values.items()))
        return ThrottledLogger(self._logger.bind(**values), self._name, self._context + extra)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger, name)

    def _limited(self, level: str, event: str, values: dict[str, Any]) -> Any:
        held = _limiter.admit((self._name, self._context, level, event))
        if held is None:
            return None
        if held:
            values["suppressed"] = held
        return getattr(self._logger, level)(event, **values)

    def warning(self, event: str, **values: Any) -> Any:
        """Log a warning, unless the same one passed less than INTERVAL seconds ago."""
        return self._limited("warning", event, values)

    def error(self, event: str, **values: Any) -> Any:
        """Log an error, unless the same one passed less than INTERVAL seconds ago."""
        return self._limited("error", event, values)

    def exception(self, event: str, **values: Any) -> Any:
        """Log an error with the current exception, rate-limited like `error`."""
        return self._limited("exception", event, values)


def get_logger(name: str) -> ThrottledLogger:
    """`structlog.get_logger(name)` with rate-limited warnings and errors."""
    return ThrottledLogger(structlog.get_logger(name), name)


class RateLimitFilter(logging.Filter):
    """A stdlib filter: the same message template and level at most once per INTERVAL; the
    next record that passes says how many were suppressed."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether `record` passes (mutating its message to add the suppressed count)."""
        held = _limiter.admit(("stdlib", record.name, record.levelno, str(record.msg)))
        if held is None:
            return False
        if held:
            record.msg = f"{record.msg} ({held} similar messages suppressed)"
        return True


_quiet_lock = threading.Lock()


def quiet_third_party() -> None:
    """Quiet the package's third-party loggers unless the application set their level
    (idempotent; see the module doc for why a level and a filter)."""
    with _quiet_lock:
        for name in THIRD_PARTY:
            logger = logging.getLogger(name)
            if not any(isinstance(f, RateLimitFilter) for f in logger.filters):
                logger.addFilter(RateLimitFilter())
            if logger.level == logging.NOTSET:
                logger.setLevel(logging.ERROR)
