"""Subscription info: where each durable subscription stands, and who holds it.

The checkpoint, the head of what it follows and the parked count come from the tables; whether
it is held ("active") comes from pg_locks, so a holder that died (its session ended, its lock
with it) shows as inactive at once, whatever the `holder` column still says. The holder text
is written by the subscription when it takes the lock. Health (`lag_seconds`, `state`,
`last_ack_at`) is read from the same rows (see `subscriptions.health`): the state its holder
wrote, unless the holder is overdue (its vouch ran out: a frozen holder is found stalled here,
without it); when the first unacked position may be archived, its age comes from the archive
file holding it (`_archived_age`).
The statements are in `storage` (`storage.subscriptions`, `storage.locks`); `lock_key` and
`summary` are theirs, named here too.
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import psycopg

from ..storage.archive import overlay
from ..storage.locks import held, lock_key
from ..storage.subscriptions import info_rows, summary
from .health import overdue, state_of
from .naming import parse_row_name

__all__ = ["SubscriptionInfo", "holder_text", "load", "lock_key", "summary"]


@dataclass(frozen=True)
class SubscriptionInfo:
    stream_uuid: str  # "$all" for all-streams subscriptions
    subscription_name: str
    checkpoint: int  # last acked position stored
    head: int  # the stream's (or $all's) last position now
    lag: int  # head - checkpoint (never below 0)
    active: bool  # a subscriber holds it now, in any process
    holder: str | None  # the holding store instance (None when not active); contains its pid
    parked: int
    partition: int | None = None  # consumer groups: which partition this row is
    lag_seconds: float | None = None  # age of the oldest event not yet acked; None at lag 0
    state: str = "idle"  # "live" | "catching_up" | "stalled" | "stopped" | "idle"
    last_ack_at: datetime | None = None  # when the stored checkpoint last moved

    def to_json(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (what `eventstore-actors status --json` prints;
        `last_ack_at` in ISO 8601)."""
        found = asdict(self)
        if self.last_ack_at is not None:
            found["last_ack_at"] = self.last_ack_at.isoformat()
        return found


def holder_text(origin: str) -> str:
    """What names a store instance as a holder: host, OS pid and the instance's own id (two
    stores in one process are two holders)."""
    return f"{socket.gethostname()} pid {os.getpid()} store {origin[:12]}"


def load(
    conn: psycopg.Connection[Any], schema: str, name: str | None = None, stream_uuid: str = "$all"
) -> list[SubscriptionInfo]:
    """Every durable subscription of the store (or only `name` on `stream_uuid`); a consumer
    group's partitions are one row each, named after the group, with `partition` set.

    `lag_seconds` is the age of the oldest readable event not yet acked, wherever it is: one
    statement when nothing is archived after the checkpoint, else the archive file holding
    it is read too (`_archived_age`). A file that cannot be read raises
    StoreUnavailableError, as reads do (a catch-up from there would fail alike; `metrics()`
    then reports `subscription_lag_error`), rather than a lag_seconds that leaves out the
    oldest events."""
    rows = info_rows(conn, name, stream_uuid)
    keys = [lock_key(schema, str(r[0]), str(r[1])) for r in rows]
    taken: set[int] = set(held(conn, keys)) if keys else set()
    found = []
    for i, row in enumerate(rows, start=1):
        stream, sub_name, last_seen, holder, head, parked = row[:6]
        age, last_ack_at, written = row[6], row[7], row[8]
        active = i in taken
        parsed = parse_row_name(str(sub_name))
        lag = max(0, int(head or 0) - int(last_seen))
        if lag > 0:
            age = _archived_age(conn, str(stream), int(last_seen), row[10:13], age)
        lag_seconds = None if lag == 0 or age is None else max(0.0, float(age))
        stall_after, unvouched_for = row[13], row[14]
        late = active and overdue(
            None if unvouched_for is None else float(unvouched_for),
            None if stall_after is None else float(stall_after),
            lag_seconds,
        )
        found.append(
            SubscriptionInfo(
                stream_uuid=str(stream),
                subscription_name=str(sub_name) if parsed is None else parsed[0],
                checkpoint=int(last_seen),
                head=int(head or 0),
                lag=lag,
                active=active,
                holder=str(holder) if active and holder is not None else None,
                parked=int(parked),
                partition=None if parsed is None else parsed[1],
                lag_seconds=lag_seconds,
                state=state_of(active, lag, None if written is None else str(written), late),
                last_ack_at=last_ack_at,
            )
        )
    # The database's order (its collation), a group's partitions together and by number.
    first: dict[tuple[str, str], int] = {}
    for i, f in enumerate(found):
        first.setdefault((f.stream_uuid, f.subscription_name), i)
    found.sort(key=lambda f: (first[f.stream_uuid, f.subscription_name], f.partition or 0))
    return found


def _archived_age(
    conn: psycopg.Connection[Any],
    stream_uuid: str,
    last_seen: int,
    archive: tuple[Any, ...],
    age: float | None,
) -> float | None:
    """The age of the oldest unacked event counting archived ones: `age` (the tables') or that
    of the first unacked archived event a read returns, whichever is older. The files are
    consulted only when something is archived above `last_seen` and the tables' first unacked
    position (`first_held`) is not the next one (it is then the first unacked event)."""
    first_held, archived_upto, read_at = archive
    if archived_upto is None or int(archived_upto) <= last_seen:
        return age
    if first_held is not None and int(first_held) == last_seen + 1:
        return age
    hook = overlay()
    created = None if hook is None else hook.first_unacked(conn, stream_uuid, last_seen)
    if created is None:
        return age
    archived = float((read_at - created).total_seconds())
    return archived if age is None else max(float(age), archived)
