"""The keyword options of `EventStore.start`, declared once for the sync and asyncio APIs.

`StartOptions` lists them (every option but the DSN, which is positional too);
`options_checked` makes an unknown one a ConfigError naming the option it resembles, for
callers without a type checker. The subscribe options are in `subscriptions.options`.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar, cast

from typing_extensions import TypedDict

from .errors import ConfigError
from .lifecycle.encryption import Encryption
from .serialization import Serializer

__all__ = ["StartOptions", "options_checked", "start_options"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


class StartOptions(TypedDict, total=False):
    """Keyword options of `EventStore.start` and `AsyncEventStore.start`: the seed's keys
    (`username`, `password`, `database`, `hostname`, `port`, merged over the DSN) and the
    fields of `config.Settings`, documented there and in the README."""

    schema: str
    pool_size: int
    pool_overflow: int
    serializer: Serializer | None
    subscription_max_size: int
    username: str | None
    password: str | None
    database: str | None
    hostname: str | None
    port: int | str | None
    max_batch_events: int
    call_timeout: float
    max_restarts: int
    restart_window: float
    tick_interval: float
    application_name: str
    connect_timeout: float
    health_interval: float
    health_timeout: float
    io_timeout: float
    enable_hard_deletes: bool
    replica_dsn: str | None
    replica_max_lag: float
    metrics: bool
    session_dsn: str | None
    shared_lock_session: bool
    encryption: Encryption | None
    archive: str | None


def options_checked(start: Callable[_P, _R]) -> Callable[_P, _R]:
    """An unknown keyword option is a ConfigError naming it (and the option it resembles),
    for callers without a type checker; the signature type checkers see is unchanged."""
    accepted = [
        name
        for name, param in inspect.signature(start).parameters.items()
        if param.kind is inspect.Parameter.KEYWORD_ONLY or name == "dsn"
    ]

    @functools.wraps(start)
    def checked(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            hints = []
            for name in unknown:
                close = difflib.get_close_matches(name, accepted, n=1)
                hints.append(f"{name} (did you mean {close[0]}?)" if close else name)
            raise ConfigError(f"unknown option(s): {', '.join(hints)}")
        return start(*args, **kwargs)

    return checked


def start_options(given: Mapping[str, Any]) -> StartOptions:
    """The start options among `given` (a start method's `locals()`: its parameters), so
    that a start passes them on without writing the list out again."""
    return cast(StartOptions, {name: given[name] for name in StartOptions.__optional_keys__})
