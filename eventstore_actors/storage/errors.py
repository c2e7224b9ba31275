"""The one door from PostgreSQL to the contract: psycopg errors and connection state
(SQLSTATE classes, `conn.broken`) become the contract's exceptions here, and nowhere else.

Three questions, in this order, decide what a failed statement means:
- was the connection lost (`is_connection_loss`)? Then the database is unavailable, and if
  a commit was sent the outcome is unknown (`unavailable`);
- was it refused for a reason of the moment (`is_transient`)? Then retrying may succeed;
- was it refused for what it carried (`is_refused`: the caller's bad input)? Then it is not
  the database being unavailable, and retrying cannot help.
`translate` answers all three for a statement; `database_error` the last two for a
connection known to be fine.
"""

from __future__ import annotations

from typing import Any

import psycopg

from ..errors import EventStoreError, StoreUnavailableError, SubjectForgottenError

__all__ = [
    "database_error",
    "is_connection_loss",
    "is_gone",
    "is_refused",
    "is_transient",
    "reason",
    "translate",
    "unavailable",
]

#: SQLSTATEs that end the session: the server is shutting down, crashing or restarting.
_SESSION_ENDED = {"57P01", "57P02", "57P03", "57P04", "57P05"}

#: SQLSTATE classes of a statement refused for what it carries: data exceptions (22: an
#: invalid value) and integrity constraint violations (23: a check, a unique index, a
#: foreign key). Not class 42: every statement is the store's own, so a syntax or access
#: rule error there says the schema or the role is not what the store expects (a table
#: dropped under it, a privilege revoked), not that the caller's input was bad.
_REFUSED_CLASSES = ("22", "23")


def is_gone(conn: Any) -> bool:
    """Whether `conn` (a psycopg connection, or one that offers its API) is closed or broken:
    no statement can run on it any more."""
    return bool(conn.closed or conn.broken)


def is_connection_loss(exc: BaseException, conn: psycopg.Connection[Any] | None = None) -> bool:
    """Whether `exc` means the connection (not just the statement) is gone.

    `psycopg.OperationalError` is not enough: statement timeouts and cancellations (57014),
    serialization failures and deadlocks (class 40), lock timeouts (55P03), out of resources
    (53) and limits (54) are OperationalErrors on a connection that is still fine. Decided by
    the connection's own state first, then by SQLSTATE: class 08 and the shutdown codes of
    class 57 end the session; an error with no SQLSTATE came from the client side (EOF,
    socket error) and means the connection is unusable.
    """
    if conn is not None and is_gone(conn):
        return True
    if not isinstance(exc, psycopg.Error) or isinstance(exc, psycopg.errors.PipelineAborted):
        return False  # PipelineAborted: an earlier statement of the pipeline failed, no more
    sqlstate = exc.sqlstate
    if sqlstate is None:
        return isinstance(exc, psycopg.OperationalError)
    return sqlstate.startswith("08") or sqlstate in _SESSION_ENDED


#: Failures of the moment, by SQLSTATE or SQLSTATE class, with what they mean in plain words.
_TRANSIENT = {
    "57014": "the database cancelled it (statement timeout or cancel request)",
    "40": "the database aborted it (serialization failure or deadlock); retry",
    "55P03": "a lock was not available in time",
    "53": "the database is out of resources",
}


def _sqlstate(exc: BaseException) -> str:
    return getattr(exc, "sqlstate", None) or ""


def _transient_cause(sqlstate: str) -> str | None:
    return _TRANSIENT.get(sqlstate) or _TRANSIENT.get(sqlstate[:2])


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` failed the statement for a reason of the moment, not of its data: a
    statement timeout or cancel (57014), a serialization failure or deadlock (class 40), a
    lock timeout (55P03), resources (class 53). Retrying the same work may well succeed."""
    return _transient_cause(_sqlstate(exc)) is not None


def is_refused(exc: BaseException) -> bool:
    """Whether the database refused the statement for what it carries (the caller's bad
    input: an invalid value, a violated constraint; see `_REFUSED_CLASSES`). Retrying the
    same work cannot succeed."""
    return _sqlstate(exc)[:2] in _REFUSED_CLASSES


def reason(exc: BaseException) -> str:
    """The first line of `exc`'s message (its type's name if it has none)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def unavailable(exc: BaseException, *, outcome_unknown: bool = False) -> StoreUnavailableError:
    """The contract's error for a lost or unreachable database."""
    return StoreUnavailableError(
        f"database unavailable: {reason(exc)}", outcome_unknown=outcome_unknown
    )


#: Raised by the refuse_forgotten_subject trigger (sql/migrations/v4.sql): a write of an
#: event or snapshot whose data subject is forgotten.
FORGOTTEN_SQLSTATE = "EAF01"


def database_error(exc: BaseException, what: str = "operation") -> EventStoreError:
    """The contract's error for a database error on a connection that is still fine.

    The statement did not take effect (a failed autocommit statement or a rolled-back
    transaction), so the outcome is known; the message says why in plain words. A statement
    refused for what it carries (`is_refused`) is an EventStoreError, never a
    StoreUnavailableError: the database is there, and the same call would fail again.
    """
    sqlstate = _sqlstate(exc)
    if sqlstate == FORGOTTEN_SQLSTATE:
        return SubjectForgottenError(f"the {what} did not happen: {reason(exc)}")
    if is_refused(exc):
        return EventStoreError(
            f"the {what} did not happen: the database refused it ({sqlstate}): {reason(exc)}"
        )
    cause = _transient_cause(sqlstate) or "the database refused it"
    return StoreUnavailableError(f"the {what} did not happen: {cause}: {reason(exc)}")


def translate(
    exc: BaseException,
    conn: psycopg.Connection[Any] | None = None,
    what: str = "operation",
    *,
    committing: bool = False,
) -> EventStoreError:
    """The contract's error for `exc`, raised by a statement on `conn`: `unavailable` when
    the connection was lost (outcome unknown when `committing`, a commit was sent), else
    `database_error`."""
    if is_connection_loss(exc, conn):
        return unavailable(exc, outcome_unknown=committing)
    return database_error(exc, what)
