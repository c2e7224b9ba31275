"""The scavenger's sweep of references to archived events that retention hides.

The scavenger's batches delete a stream's hidden rows with the links and parked entries naming
them (sql/retention/purge.sql); an archived event has no row left in `events`, so the rows
naming it would stay for ever once its stream's retention hides it (reads already skip them).
The sweep deletes them, as a hard delete does for its stream's archived events
(storage/deletes.py): in event_id order, a bounded batch at a time, it takes the event_ids that
links or parked entries name in the archived ranges, asks the files which of them reads no
longer return (key columns of the row groups holding them only), and deletes the rows naming
those in one short transaction under the scavenger's lock (storage/retention_archived.py).

It runs at the end of a pass, when this process has just hidden something (a `Wake`) or at
most every `INTERVAL` seconds otherwise (other processes' truncations, limits reached by
appends or by time): the references of events still readable are looked at again only then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from ..storage import archive
from ..storage import retention_archived as refs
from ..storage.deadline import guard

__all__ = ["INTERVAL", "Swept", "sweep_batch"]

#: Most seconds between two sweeps without a `Wake`: references hidden by another process are
#: gone within a minute (the spec), and those still readable are not read again sooner.
INTERVAL = 30.0


@dataclass(frozen=True)
class Swept:
    """What one batch of the sweep did."""

    checked: int  # references looked at (0: the sweep is over)
    deleted: int  # link and parked rows deleted
    free: bool  # whether the scavenger's lock was free (False: nothing was done)
    after: int  # the next batch starts above this event_id


def sweep_batch(
    conn: psycopg.Connection[Any], lock: str, after: int, size: int, timeout: float
) -> Swept:
    """The next batch of the sweep, from event_id `after` on, at most `size` event_ids; each
    of its two writing or scanning statements within `timeout` seconds (the files are read
    between them, unguarded: a slow remote file must not cut the connection).
    StoreUnavailableError when a file cannot be read (nothing deleted then)."""
    hook = archive.overlay()
    if hook is None:  # nothing reads the files in this process: nothing to tell
        return Swept(0, 0, True, after)
    with guard(conn, timeout):
        ids = refs.archived_references(conn, after, size)
    if not ids:
        return Swept(0, 0, True, after)
    hidden = hook.hidden_archived(conn, ids)
    if not hidden:
        return Swept(len(ids), 0, True, ids[-1])
    with guard(conn, timeout):
        deleted, free = refs.purge_references(conn, lock, hidden)
    return Swept(len(ids), deleted, free, ids[-1])
