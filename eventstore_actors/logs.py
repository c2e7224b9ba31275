"""The package's logging: standard `logging` records, one printable line each, bounded.

Every line of the package is a record of the standard `logging` module, on a logger named
``eventstore_actors.<part>`` (``eventstore_actors.store``, ``.subscriptions``, ...). The package
never configures logging and never prints: with no configuration the interpreter's last-resort
handler shows WARNING and above on stderr; ``logging.basicConfig(level=logging.INFO)`` (or any
handler of the application) gets the rest. No handler is added, not even a NullHandler (it
would hide the warnings of an application that configured nothing).

- `get_logger(name)` is a structlog ``stdlib.BoundLogger`` over ``logging.getLogger(name)``,
  built here with its own processor chain (structlog's global configuration is neither used
  nor changed): it keeps the bound context (actor, schema, stream, subscription, ...) and
  renders ``event key=value ...`` as the record's message, after the level check. Each
  message is one line without control characters: values are shown with `repr`, anything
  still unprintable is escaped, a consumer-group partition's internal name shows its
  separator as " / ", and an exception is summarised on the same line (type, message, where)
  instead of a multi-line traceback. The context is also on the record, sanitised, as
  ``record.eventstore`` (a dict holding ``event`` too) for structured handlers. Records from
  many threads never tear: each is written whole by the handler, under its lock.
- A warning or error with the same event, level and bound context passes at most once per
  `INTERVAL` seconds; the next one that passes carries ``suppressed=N``. Info and debug
  lines pass untouched.
- `quiet_third_party()` (called by `EventStore.start`) gives the ``psycopg.pool`` logger the
  level ERROR *only if the application left it unset* (NOTSET), and a filter that rate-limits
  its records the same way. Why a level on that one logger rather than a NullHandler: a
  NullHandler does not stop records from propagating to the root logger's handlers, and a
  filter alone would still print one line per interval for what the store already reports
  itself. An application that wants the pool's warnings sets the level itself
  (``logging.getLogger("psycopg.pool").setLevel(logging.WARNING)``), and we never touch it
  again; the filter then still bounds them. Global logging (root logger, handlers,
  structlog's configuration) is never changed.

Never log a password (DSNs go through `config.redact`), a key or an event's data.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Hashable, MutableMapping
from typing import Any

import structlog

__all__ = ["INTERVAL", "RateLimitFilter", "get_logger", "printable", "quiet_third_party"]

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


#: The separator of a consumer group's internal names (`subscriptions.naming.MARK`), and how a
#: log line shows it (also in its JSON-escaped form, inside an actor's id).
_MARK = "\x1f"
_MARK_ESCAPED = "\\u001f"
_SHOWN = " / "


def _escape_char(char: str) -> str:
    return repr(char)[1:-1]  # "\x1f", "\n", "\u2028": printable


def printable(text: str) -> str:
    """`text` on one printable line: group separators shown as " / ", other characters that
    are not printable (control characters, line and paragraph separators) escaped."""
    text = text.replace(_MARK, _SHOWN).replace(_MARK_ESCAPED, _SHOWN)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape_char(c) for c in text)


def _shown(value: Any) -> Any:
    """A context value as a line shows it (with `repr`, which escapes control characters):
    a group's separator shown as " / "."""
    if isinstance(value, str):
        return value.replace(_MARK, _SHOWN).replace(_MARK_ESCAPED, _SHOWN)
    return value


def _exception_summary(exc_info: Any) -> str | None:
    """'Type: message (file:line in function)' of the exception being logged, or None."""
    if exc_info is True:
        exc_info = sys.exc_info()
    elif isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if not isinstance(exc_info, tuple) or len(exc_info) != 3 or exc_info[1] is None:
        return None
    _, exc, tb = exc_info
    text = f"{type(exc).__qualname__}: {exc}"
    frames = traceback.extract_tb(tb) if tb is not None else []
    if frames:
        last = frames[-1]
        text += f" (at {last.filename.rsplit('/', 1)[-1]}:{last.lineno} in {last.name})"
    return text


_SKIPPED = (os.path.dirname(structlog.__file__), __file__)


def _stacklevel() -> int:
    """The stdlib `stacklevel` that gives a record the file and line of the package's code
    that logged (not structlog's nor this module's). Called from `_render`: two frames up is
    structlog's call into the stdlib logger."""
    frame = sys._getframe(3)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_SKIPPED):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


def _render(
    _logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> tuple[tuple[str], dict[str, Any]]:
    """The last processor: the stdlib call's (args, kwargs), one printable line."""
    event = printable(str(event_dict.pop("event", "")))
    exc_info = event_dict.pop("exc_info", None)
    event_dict.pop("positional_args", None)  # the package never uses %-style arguments
    if exc_info:
        summary = _exception_summary(exc_info)
        if summary is not None:
            event_dict["exception"] = summary
    parts = [event, *(f"{key}={_shown(value)!r}" for key, value in event_dict.items())]
    line = printable(" ".join(parts))  # a repr may still hold a line break
    context = {k: printable(v) if isinstance(v, str) else v for k, v in event_dict.items()}
    extra = {"eventstore": {"event": event, **context}}
    return (line,), {"exc_info": False, "extra": extra, "stacklevel": _stacklevel()}


def _stdlib_logger(name: str) -> Any:
    """structlog's stdlib BoundLogger over `logging.getLogger(name)` with the package's own
    processors (nothing global is read or changed)."""
    processors: list[Any] = [
        structlog.stdlib.filter_by_level,  # first: a disabled level costs no rendering
        structlog.contextvars.merge_contextvars,  # the application's bound context, if any
        _render,
    ]
    return structlog.stdlib.BoundLogger(logging.getLogger(name), processors, {})


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
    """The package's logger `name` (a stdlib logger, structlog-bound; see the module doc),
    with rate-limited warnings and errors."""
    return ThrottledLogger(_stdlib_logger(name), name)


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
