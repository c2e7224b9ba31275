"""A caller's psycopg `AsyncConnection`, usable by the store's sync code on a worker thread.

`conn=` appends (the outbox) and acks in the caller's transaction run the store's sync code
(`storage.outbox`, `storage.checkpoints`) on a thread of the asyncio facade, while the
caller's coroutine awaits them. Rather than a second, async copy of those statements (two
copies to keep in step), the caller's `AsyncConnection` is lent to that code behind this
adapter: each statement is a coroutine run on the connection's own event loop
(``run_coroutine_threadsafe``), and the worker thread waits for its result. The loop is free
meanwhile (the caller awaits the worker), so the statements run on the loop, in the caller's
transaction, one at a time, and every rule of the sync path holds alike.

Only the part of psycopg's `Connection` API the store uses is adapted: `execute`, `cursor`
(a context manager with `execute`, `fetchone`, `fetchall`, `fetchmany`, `rowcount`),
`transaction` (a context manager); any other coroutine method is waited for the same way and
any other attribute (`closed`, `broken`, `info`, `autocommit`, `cancel`) read as it is. Used
on the loop's own thread, it raises instead of deadlocking.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import weakref
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

import psycopg

__all__ = ["BorrowedAsyncConnection"]

_T = TypeVar("_T")

#: Seconds between checks that the loop still runs, while a statement is awaited.
_POLL = 1.0


class BorrowedAsyncConnection:
    """The sync face of `conn` (a psycopg AsyncConnection) for code on another thread than
    its event loop's `loop`. It holds the connection weakly: the caller's, not ours."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], loop: asyncio.AbstractEventLoop):
        if not isinstance(conn, psycopg.AsyncConnection):
            raise TypeError(f"expected a psycopg AsyncConnection, got {type(conn).__qualname__}")
        self._target = weakref.ref(conn)
        self.loop = loop

    @property
    def async_connection(self) -> psycopg.AsyncConnection[Any]:
        conn = self._target()
        if conn is None:
            raise psycopg.OperationalError("the caller's AsyncConnection is gone")
        return conn

    def __repr__(self) -> str:
        return f"BorrowedAsyncConnection({self._target()!r})"

    def wait(self, make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
        """Run the coroutine `make()` on the connection's loop and return its result.

        psycopg.OperationalError when the loop is closed or ends before answering (the
        store then reads the connection as lost)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            raise RuntimeError(
                "a borrowed AsyncConnection is used from its own event loop's thread: "
                "that would deadlock (the store's sync code runs on worker threads)"
            )
        if self.loop.is_closed():
            raise psycopg.OperationalError("the AsyncConnection's event loop is closed")
        coro = make()
        try:
            future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        except RuntimeError:  # closed between the check and the call
            coro.close()
            raise psycopg.OperationalError("the AsyncConnection's event loop is closed") from None
        while True:
            try:
                return future.result(timeout=_POLL)
            except concurrent.futures.TimeoutError:
                if self.loop.is_closed() or not self.loop.is_running():
                    future.cancel()
                    raise psycopg.OperationalError(
                        "the AsyncConnection's event loop stopped during a statement"
                    ) from None
            except concurrent.futures.CancelledError:
                raise psycopg.OperationalError(
                    "the statement on the AsyncConnection was cancelled (its loop is ending)"
                ) from None

    # The Connection API the store uses --------------------------------------------------------
    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> _BorrowedCursor:
        conn = self.async_connection
        cursor = self.wait(lambda: conn.execute(query, params, **kwargs))
        return _BorrowedCursor(self, cursor)

    def cursor(self, *args: Any, **kwargs: Any) -> _BorrowedCursor:
        return _BorrowedCursor(self, self.async_connection.cursor(*args, **kwargs))

    def transaction(self, *args: Any, **kwargs: Any) -> _BorrowedContext:
        return _BorrowedContext(self, self.async_connection.transaction(*args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        value = getattr(self.async_connection, name)
        if inspect.iscoroutinefunction(value):

            def waited(*args: Any, **kwargs: Any) -> Any:
                return self.wait(lambda: value(*args, **kwargs))

            return waited
        return value


class _BorrowedContext:
    """An async context manager of the connection (a transaction), entered from a thread."""

    def __init__(self, owner: BorrowedAsyncConnection, context: Any) -> None:
        self._owner = owner
        self._context = context

    def __enter__(self) -> Any:
        return self._owner.wait(self._context.__aenter__)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        result: bool | None = self._owner.wait(lambda: self._context.__aexit__(exc_type, exc, tb))
        return result


class _BorrowedCursor:
    """An AsyncCursor with the sync cursor's methods (the ones the store uses)."""

    def __init__(self, owner: BorrowedAsyncConnection, cursor: psycopg.AsyncCursor[Any]) -> None:
        self._owner = owner
        self._cursor = cursor

    def __enter__(self) -> _BorrowedCursor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._owner.wait(self._cursor.close)

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> _BorrowedCursor:
        self._owner.wait(lambda: self._cursor.execute(query, params, **kwargs))
        return self

    def executemany(self, query: Any, params_seq: Any, **kwargs: Any) -> None:
        self._owner.wait(lambda: self._cursor.executemany(query, params_seq, **kwargs))

    def fetchone(self) -> Any:
        return self._owner.wait(self._cursor.fetchone)

    def fetchall(self) -> list[Any]:
        return self._owner.wait(self._cursor.fetchall)

    def fetchmany(self, size: int = 0) -> list[Any]:
        return self._owner.wait(lambda: self._cursor.fetchmany(size))

    def __getattr__(self, name: str) -> Any:  # rowcount, description, statusmessage...
        if name.startswith("_"):
            raise AttributeError(name)
        value = getattr(self._cursor, name)
        if inspect.iscoroutinefunction(value):

            def waited(*args: Any, **kwargs: Any) -> Any:
                return self._owner.wait(lambda: value(*args, **kwargs))

            return waited
        return value
