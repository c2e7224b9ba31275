"""Exactly-once projections: `ack(..., conn=)` writes the checkpoint in the caller's
transaction (API part 2, "Exactly-once projections").

The checkpoint moves iff the caller commits; the store never writes such a position on its
own; the caller's session is left as it was; a bad `conn` is refused before anything is
written. The proof: a child process projecting thousands of events into a counter, killed
with SIGKILL at random points many times, ends with the counter equal to the event count.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row
from support import QUIET, QueueSubscriber, checkpoint, events, kill_backends, wait_until

import eventstore_actors
from eventstore_actors import ANY_VERSION, EventData, EventStore

PROJECTOR = Path(__file__).resolve().parents[1] / "support" / "projector.py"


def _subscribed(store: EventStore, name: str = "proj") -> tuple[Any, QueueSubscriber]:
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_all_streams(name, subscriber)
    assert subscriber.subscribed() is sub
    return sub, subscriber


# The checkpoint follows the caller's transaction ----------------------------------------------
def test_checkpoint_moves_only_when_the_caller_commits(dsn: str, schema: str, store: EventStore):
    store.append_to_stream("s", 0, events(3))
    sub, subscriber = _subscribed(store)
    batch = subscriber.batch()
    with psycopg.connect(dsn) as conn:
        with conn.transaction():
            sub.ack(batch, conn=conn)
            subscriber.nothing(QUIET)  # the flush interval passes: the store writes nothing
            assert checkpoint(dsn, schema, "$all", "proj") == 0, "visible before the commit"
        assert checkpoint(dsn, schema, "$all", "proj") == 3


def test_a_rolled_back_ack_leaves_the_checkpoint_and_the_store_never_writes_it(
    dsn: str, schema: str, store: EventStore
):
    store.append_to_stream("s", 0, events(3))
    sub, subscriber = _subscribed(store)
    batch = subscriber.batch()
    with psycopg.connect(dsn) as conn:
        conn.execute("BEGIN")
        sub.ack(batch, conn=conn)
        conn.rollback()
    # Delivery goes on (the ack gated it) ...
    store.append_to_stream("s", 3, events(1, start=4))
    assert [e.event_id for e in subscriber.batch()] == [4]
    # ... but neither the ticks nor the final flush of an unsubscribe write position 3.
    time.sleep(QUIET)  # let ticks run: they must not write anything
    store.unsubscribe_from_all_streams("proj")
    assert checkpoint(dsn, schema, "$all", "proj") == 0


def test_a_later_plain_ack_moves_the_checkpoint_as_usual(dsn: str, schema: str, store: EventStore):
    store.append_to_stream("s", 0, events(2))
    sub, subscriber = _subscribed(store)
    first = subscriber.batch()
    with psycopg.connect(dsn, autocommit=True) as conn:
        sub.ack(first, conn=conn)  # autocommit, outside a transaction block: committed at once
        assert checkpoint(dsn, schema, "$all", "proj") == 2
    store.append_to_stream("s", 2, events(2, start=3))
    sub.ack(subscriber.batch())
    wait_until(lambda: checkpoint(dsn, schema, "$all", "proj") == 4, what="plain ack stored")


def test_the_next_batch_waits_for_the_ack_in_the_transaction(dsn: str, store: EventStore):
    store.append_to_stream("a", 0, events(2))
    store.append_to_stream("b", 0, events(2, start=3))
    sub, subscriber = _subscribed(store)
    first = subscriber.batch()
    assert [e.event_id for e in first] == [1, 2]
    subscriber.nothing(QUIET)
    with psycopg.connect(dsn) as conn, conn.transaction():
        sub.ack(first, conn=conn)
        assert [e.event_id for e in subscriber.batch()] == [3, 4]


def test_an_ack_beyond_what_was_delivered_is_clamped(dsn: str, schema: str, store: EventStore):
    store.append_to_stream("a", 0, events(2))
    store.append_to_stream("b", 0, events(2, start=3))
    sub, subscriber = _subscribed(store)
    subscriber.batch()
    with psycopg.connect(dsn) as conn, conn.transaction():
        sub.ack(100, conn=conn)
    assert checkpoint(dsn, schema, "$all", "proj") == 2


# Take-overs: an ack in a transaction is a compare-and-set ---------------------------------------
def test_events_acked_by_another_holder_are_refused_and_delivery_goes_on_after_them(
    dsn: str, schema: str, store: EventStore
):
    store.append_to_stream("s", 0, events(3))
    sub, subscriber = _subscribed(store)
    batch = subscriber.batch()
    assert [e.event_id for e in batch] == [1, 2, 3]
    # Another holder (it took the subscription over meanwhile) applied 1-2 and committed.
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute(
            sql.SQL("UPDATE {}.subscriptions SET last_seen = 2").format(sql.Identifier(schema))
        )
    with psycopg.connect(dsn) as conn:
        conflict = pytest.raises(eventstore_actors.CheckpointConflictError, match="roll back")
        with conflict as err, conn.transaction():
            sub.ack(batch, conn=conn)
        assert err.value.stored == 2
    assert checkpoint(dsn, schema, "$all", "proj") == 2
    # The subscription goes on after the stored checkpoint: event 3 again, then new ones.
    assert [e.event_id for e in subscriber.batch()] == [3]
    with psycopg.connect(dsn) as conn, conn.transaction():
        sub.ack(3, conn=conn)
    assert checkpoint(dsn, schema, "$all", "proj") == 3
    store.append_to_stream("s", 3, events(1, start=4))
    assert [e.event_id for e in subscriber.batch()] == [4]


def test_the_same_events_acked_again_in_another_transaction_are_refused(
    dsn: str, schema: str, store: EventStore
):
    store.append_to_stream("s", 0, events(2))
    sub, subscriber = _subscribed(store)
    batch = subscriber.batch()
    with psycopg.connect(dsn) as conn:
        with conn.transaction():
            sub.ack(batch, conn=conn)
        with pytest.raises(eventstore_actors.CheckpointConflictError), conn.transaction():
            sub.ack(batch, conn=conn)
    assert checkpoint(dsn, schema, "$all", "proj") == 2


def test_partial_acks_of_one_batch_in_successive_transactions(
    dsn: str, schema: str, store: EventStore
):
    store.append_to_stream("s", 0, events(4))
    sub, subscriber = _subscribed(store)
    subscriber.batch()
    with psycopg.connect(dsn) as conn:
        for upto in (2, 4):
            with conn.transaction():
                sub.ack(upto, conn=conn)
            assert checkpoint(dsn, schema, "$all", "proj") == upto


def test_partial_acks_by_position_then_by_events_in_successive_transactions(
    dsn: str, schema: str, store: EventStore
):
    """A position acked first counts for the batch holding it: the events acked next in
    the same batch are not refused as if another holder had acked (an adversarial probe
    found them refused, and 3-5 told again)."""
    store.append_to_stream("s", 0, events(5))
    sub, subscriber = _subscribed(store)
    batch = subscriber.batch()
    with psycopg.connect(dsn) as conn:
        with conn.transaction():
            sub.ack(2, conn=conn)
        with conn.transaction():
            sub.ack(batch[2:4], conn=conn)
        assert checkpoint(dsn, schema, "$all", "proj") == 4
        with conn.transaction():
            sub.ack(batch, conn=conn)
    assert checkpoint(dsn, schema, "$all", "proj") == 5
    subscriber.nothing(QUIET)  # nothing told again


@pytest.mark.parametrize("first", ["old holder", "new holder"])
def test_a_take_over_with_a_batch_in_hand_applies_it_once(
    dsn: str, schema: str, make_store: Any, first: str
):
    """The holder lets go while its subscriber still has a batch; a standby takes over and
    gets the same events. Whichever transaction commits first wins; the other is refused."""
    holder, standby = make_store(), make_store()
    holder.append_to_stream("s", 0, events(3))
    old_sub, old = _subscribed(holder)
    old_batch = old.batch()
    waiting = QueueSubscriber()
    new_sub = standby.subscribe_to_all_streams("proj", waiting, standby=True)
    holder.unsubscribe_from_all_streams("proj")
    assert waiting.subscribed() is new_sub
    new_batch = waiting.batch()
    assert [e.event_id for e in new_batch] == [e.event_id for e in old_batch] == [1, 2, 3]
    winner, loser = (old_sub, new_sub) if first == "old holder" else (new_sub, old_sub)
    with psycopg.connect(dsn) as conn:
        with conn.transaction():
            winner.ack(3, conn=conn)
        with pytest.raises(eventstore_actors.CheckpointConflictError), conn.transaction():
            loser.ack(3, conn=conn)
    assert checkpoint(dsn, schema, "$all", "proj") == 3
    standby.append_to_stream("s", 3, events(1, start=4))
    assert [e.event_id for e in waiting.batch()] == [4]


def _backends_of(dsn: str, app: str) -> list[int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app,)
        ).fetchall()
    return [int(r[0]) for r in rows]


@pytest.mark.parametrize("stream", ["$all", "s"])
def test_a_copy_told_again_after_a_lost_lock_is_refused_once_the_first_copy_is_acked(
    dsn: str, schema: str, make_store: Any, stream: str
):
    """The store's connections die while the subscriber still has a batch; the lock is
    retaken and the events after the stored checkpoint are told again (new objects). The
    subscriber acks both copies in order, each in its own transaction: the second is refused
    (an adversarial probe had both pass, the first event applied twice: one floor for the
    whole subscription, raised by the first copy's ack), and delivery goes on after what is
    stored. Acks that name their events are checked against their own batch's start."""
    app = f"eo-relock-{os.getpid()}-{random.randrange(10**9)}"
    store = make_store(application_name=app)
    subscriber = QueueSubscriber()
    if stream == "$all":
        sub = store.subscribe_to_all_streams("proj", subscriber)
    else:
        sub = store.subscribe_to_stream(stream, "proj", subscriber)
    assert subscriber.subscribed() is sub
    store.append_to_stream("s", 0, events(1))
    first = subscriber.batch()
    store.append_to_stream("s", 1, events(4, start=2))
    subscriber.nothing(QUIET)  # back-pressure: the rest waits for the first batch's ack
    assert kill_backends(dsn, _backends_of(dsn, app)) > 0
    again = subscriber.batch()  # the lock retaken: told again after the stored checkpoint
    positions = [sub.position_of(e) for e in again]
    assert positions == [1, 2, 3, 4, 5]
    with psycopg.connect(dsn) as conn:
        with conn.transaction():
            sub.ack(first, conn=conn)  # the first copy, applied once
        refused = pytest.raises(eventstore_actors.CheckpointConflictError, match="earlier copy")
        with refused as err, conn.transaction():
            sub.ack(again, conn=conn)
        assert err.value.stored == 1
        assert checkpoint(dsn, schema, stream, "proj") == 1
        # The refused transaction rolled back: the rest is told again, and acked once.
        rest = subscriber.batch()
        assert [sub.position_of(e) for e in rest] == [2, 3, 4, 5]
        with conn.transaction():
            sub.ack(rest, conn=conn)
    assert checkpoint(dsn, schema, stream, "proj") == 5
    store.append_to_stream("s", 5, events(1, start=6))
    assert [sub.position_of(e) for e in subscriber.batch()] == [6]


def test_store_ack_takes_conn_too(dsn: str, schema: str, store: EventStore):
    store.append_to_stream("s", 0, events(1))
    sub, subscriber = _subscribed(store)
    batch = subscriber.batch()
    with psycopg.connect(dsn) as conn, conn.transaction():
        store.ack(sub, batch, conn=conn)
    assert checkpoint(dsn, schema, "$all", "proj") == 1


def test_a_stream_subscription_acks_stream_versions(dsn: str, schema: str, store: EventStore):
    store.append_to_stream("other", 0, events(5))
    store.append_to_stream("s", 0, events(2))
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_stream("s", "proj", subscriber)
    subscriber.subscribed()
    batch = subscriber.batch()
    with psycopg.connect(dsn) as conn, conn.transaction():
        sub.ack(batch, conn=conn)
    assert checkpoint(dsn, schema, "s", "proj") == 2


def test_the_callers_session_is_left_as_it_was(dsn: str, store: EventStore):
    store.append_to_stream("s", 0, events(1))
    sub, subscriber = _subscribed(store)
    batch = subscriber.batch()
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        conn.execute("SET search_path TO pg_catalog")
        conn.execute("CREATE TEMP TABLE mine (x int)")
        conn.execute("INSERT INTO mine VALUES (1)")
        sub.ack(batch, conn=conn)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        row = conn.execute("SELECT current_setting('search_path') AS p, count(*) AS n FROM mine")
        assert row.fetchone() == {"p": "pg_catalog", "n": 1}
        prepared = conn.execute("SELECT count(*) AS n FROM pg_prepared_statements").fetchone()
        assert prepared == {"n": 0}
        conn.commit()


# Bad input: refused before anything is written ------------------------------------------------
def test_bad_connections_are_refused_before_anything_is_written(
    dsn: str, schema: str, store: EventStore
):
    store.append_to_stream("s", 0, events(1))
    sub, subscriber = _subscribed(store)
    batch = subscriber.batch()
    with pytest.raises(TypeError, match="psycopg 3 Connection"):
        sub.ack(batch, conn="postgresql://")
    closed = psycopg.connect(dsn)
    closed.close()
    with pytest.raises(ValueError, match="closed"):
        sub.ack(batch, conn=closed)
    with psycopg.connect(dsn) as failed:
        with pytest.raises(psycopg.errors.DivisionByZero):
            failed.execute("SELECT 1/0")
        with pytest.raises(ValueError, match="failed transaction"):
            sub.ack(batch, conn=failed)
    other = psycopg.conninfo.make_conninfo(dsn, dbname="postgres")
    with psycopg.connect(other) as elsewhere:
        with pytest.raises(ValueError, match="another database"):
            sub.ack(batch, conn=elsewhere)
        assert elsewhere.info.transaction_status != psycopg.pq.TransactionStatus.INERROR
    with pytest.raises(ValueError, match=">= 0"), psycopg.connect(dsn) as conn:
        sub.ack(-1, conn=conn)
    with pytest.raises(TypeError):
        store.ack(sub, batch, conn=object())  # type: ignore[arg-type]
    assert checkpoint(dsn, schema, "$all", "proj") == 0
    subscriber.nothing(QUIET)  # no ack was taken: nothing more was sent


# The proof: SIGKILL at random points, the count stays exact -----------------------------------
EVENTS = 3000
KILLS = 12


def _start_projector(dsn: str, schema: str, log: Path) -> subprocess.Popen[str]:
    package_root = str(Path(eventstore_actors.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    return subprocess.Popen(
        [sys.executable, str(PROJECTOR), dsn, schema, "counter"],
        stdin=subprocess.PIPE,
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def test_a_projection_killed_at_random_points_counts_every_event_exactly_once(
    dsn: str, schema: str, store: EventStore, tmp_path: Path
):
    log = tmp_path / "projector.log"
    rng = random.Random(20260909)
    streams = [f"acct-{i}" for i in range(7)]
    versions = dict.fromkeys(streams, 0)
    written = 0
    while written < EVENTS:
        stream = rng.choice(streams)
        size = min(EVENTS - written, rng.randint(1, 6))
        batch = [EventData({"n": written + i}, event_type="tests.Counted") for i in range(size)]
        store.append_to_stream(stream, versions[stream], batch)
        versions[stream] += size
        written += size
    with psycopg.connect(dsn, autocommit=True) as conn:
        ident = sql.Identifier(schema)
        conn.execute(
            sql.SQL("CREATE TABLE {}.projection_counter (n bigint NOT NULL)").format(ident)
        )
        conn.execute(sql.SQL("INSERT INTO {}.projection_counter VALUES (0)").format(ident))
        conn.execute(
            sql.SQL("CREATE TABLE {}.projection_seen (event_id bigint PRIMARY KEY)").format(ident)
        )

        def count() -> int:
            row = conn.execute(sql.SQL("SELECT n FROM {}.projection_counter").format(ident))
            return int(row.fetchone()[0])  # type: ignore[index]

        kills = 0
        try:
            while kills < KILLS and count() < EVENTS:
                proc = _start_projector(dsn, schema, log)
                try:
                    before = count()
                    wait_until(
                        lambda b=before: count() > b or count() >= EVENTS,  # type: ignore[misc]
                        timeout=30,
                        what="the projector makes progress",
                    )
                    time.sleep(rng.uniform(0.0, 0.12))  # a random point, not a synchronisation
                    if count() < EVENTS:
                        kills += 1
                finally:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(timeout=10)
                    assert proc.stdin is not None
                    proc.stdin.close()
            assert kills >= 10, f"only {kills} kills landed before the projection finished"
            proc = _start_projector(dsn, schema, log)
            try:
                wait_until(lambda: count() >= EVENTS, timeout=60, what="the projection finishes")
                time.sleep(QUIET)  # nothing may be applied twice after the end either
            finally:
                assert proc.stdin is not None
                proc.stdin.close()
                proc.wait(timeout=20)
            assert proc.returncode == 0, f"the projector failed: {log.read_text()[-2000:]}"
            assert count() == EVENTS
            seen = conn.execute(sql.SQL("SELECT count(*) FROM {}.projection_seen").format(ident))
            assert seen.fetchone()[0] == EVENTS  # type: ignore[index]
        finally:
            conn.execute(
                sql.SQL("DROP TABLE IF EXISTS {}.projection_counter, {}.projection_seen").format(
                    ident, ident
                )
            )
    assert checkpoint(dsn, schema, "$all", "counter") == EVENTS


# Parked replays: acked in the caller's transaction, the checkpoint stays (issue 17, item 3) ----
def _park_and_replay(store: EventStore, sub: Any, subscriber: QueueSubscriber, dsn: str) -> None:
    """Events 1-3; 2 is parked, 1 and 3 acked in transactions; then 2 is marked for replay."""
    store.append_to_stream("s", 0, events(3))
    batch = subscriber.batch()
    assert [e.event_id for e in batch] == [1, 2, 3]
    with psycopg.connect(dsn) as conn:
        with conn.transaction():
            sub.ack(1, conn=conn)
        sub.nack(2, "park", "cannot apply it yet")
        rest = subscriber.batch()
        assert [e.event_id for e in rest] == [3]
        with conn.transaction():
            sub.ack(rest, conn=conn)
    assert [p.event.event_id for p in store.parked_events("proj")] == [2]
    assert store.replay_parked("proj") == 1


def test_a_replayed_parked_event_is_acked_in_a_transaction_and_delivery_goes_on(
    dsn: str, schema: str, store: EventStore
):
    sub, subscriber = _subscribed(store)
    _park_and_replay(store, sub, subscriber, dsn)
    replayed = subscriber.batch()
    assert [e.event_id for e in replayed] == [2]
    with psycopg.connect(dsn) as conn, conn.transaction():
        sub.ack(replayed, conn=conn)  # no false conflict: it is a replay, below the checkpoint
    assert checkpoint(dsn, schema, "$all", "proj") == 3  # not moved backwards
    wait_until(lambda: store.parked_events("proj") == [], what="off the parked list")
    store.append_to_stream("s", 3, events(2, start=4))
    newer = subscriber.batch()
    assert [e.event_id for e in newer] == [4, 5]
    with psycopg.connect(dsn) as conn, conn.transaction():
        sub.ack(newer, conn=conn)
    assert checkpoint(dsn, schema, "$all", "proj") == 5


def test_a_rolled_back_replay_ack_keeps_the_event_parked(dsn: str, schema: str, make_store: Any):
    store = make_store()
    sub, subscriber = _subscribed(store)
    _park_and_replay(store, sub, subscriber, dsn)
    replayed = subscriber.batch()
    with psycopg.connect(dsn) as conn:
        conn.execute("BEGIN")
        sub.ack(replayed, conn=conn)
        conn.rollback()
    store.append_to_stream("s", 3, events(1, start=4))
    assert [e.event_id for e in subscriber.batch()] == [4]  # the ack let delivery go on
    time.sleep(QUIET)  # ... but the parked row is the caller's to remove: it stays
    assert [p.event.event_id for p in store.parked_events("proj")] == [2]
    assert checkpoint(dsn, schema, "$all", "proj") == 3


def test_a_replay_acked_by_another_holder_is_a_conflict_that_says_so(
    dsn: str, schema: str, store: EventStore
):
    sub, subscriber = _subscribed(store)
    _park_and_replay(store, sub, subscriber, dsn)
    replayed = subscriber.batch()
    with psycopg.connect(dsn, autocommit=True) as other:  # another holder applied it
        other.execute(sql.SQL("DELETE FROM {}.parked_events").format(sql.Identifier(schema)))
    with psycopg.connect(dsn) as conn:
        conflict = pytest.raises(
            eventstore_actors.CheckpointConflictError, match=r"parked event 2.*another holder"
        )
        with conflict, conn.transaction():
            sub.ack(replayed, conn=conn)
    store.append_to_stream("s", 3, events(1, start=4))
    assert [e.event_id for e in subscriber.batch()] == [4]  # no stall after the conflict


def test_conflict_messages_say_which_positions_and_who_acked_them(
    dsn: str, schema: str, store: EventStore
):
    store.append_to_stream("s", 0, events(3))
    sub, subscriber = _subscribed(store)
    batch = subscriber.batch()
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute(
            sql.SQL("UPDATE {}.subscriptions SET last_seen = 2").format(sql.Identifier(schema))
        )
    with psycopg.connect(dsn) as conn:
        taken = pytest.raises(
            eventstore_actors.CheckpointConflictError,
            match=r"ack of position 3 .* positions 1-2 were acknowledged .* another holder",
        )
        with taken, conn.transaction():
            sub.ack(batch, conn=conn)
        again = subscriber.batch()
        assert [e.event_id for e in again] == [3]
        with conn.transaction():
            sub.ack(again, conn=conn)
        twice = pytest.raises(
            eventstore_actors.CheckpointConflictError,
            match=r"position 3 is already acknowledged .* an earlier transaction",
        )
        with twice, conn.transaction():
            sub.ack(again, conn=conn)


# Filters: filtered-out events advance the checkpoint too (issue 17, item 8) ---------------------
def _kinds(*types: str) -> list[EventData]:
    return [EventData({"t": t}, event_type=t) for t in types]


FILTERS: dict[str, dict[str, Any]] = {
    "event_types": {"event_types": ["Keep"]},
    "selector": {"selector": lambda e: e.event_type == "Keep"},
}


@pytest.mark.parametrize("kind", [*FILTERS, "stream_prefix", "stream"])
def test_a_filtered_exactly_once_subscription_reaches_lag_zero(
    dsn: str, schema: str, store: EventStore, kind: str
):
    subscriber = QueueSubscriber()
    stream = "$all"
    if kind == "stream":  # a stream subscription with event_types
        stream = "keep-1"
        sub = store.subscribe_to_stream(stream, "proj", subscriber, event_types=["Keep"])
        keep, drop = stream, stream
    elif kind == "stream_prefix":
        sub = store.subscribe_to_all_streams("proj", subscriber, stream_prefix="keep-")
        keep, drop = "keep-1", "drop-1"
    else:
        sub = store.subscribe_to_all_streams("proj", subscriber, **FILTERS[kind])
        keep, drop = "keep-1", "keep-2"
    assert subscriber.subscribed() is sub
    keeps = ("Keep",) if kind != "stream_prefix" else ("Any",)
    store.append_to_stream(keep, 0, _kinds(*keeps))
    store.append_to_stream(drop, ANY_VERSION, _kinds("Drop", "Drop"))
    batch = subscriber.batch()
    assert [e.event_type for e in batch] == list(keeps)
    with psycopg.connect(dsn) as conn, conn.transaction():
        sub.ack(batch, conn=conn)
    wait_until(
        lambda: store.subscription_info("proj", stream).lag == 0, what="lag 0 after a commit"
    )
    assert checkpoint(dsn, schema, stream, "proj") == 3
    # Filtered events after the last delivered one: stored by the subscription itself.
    store.append_to_stream(drop, ANY_VERSION, _kinds("Drop", "Drop"))
    wait_until(lambda: store.subscription_info("proj", stream).lag == 0, what="lag 0, idle")
    assert checkpoint(dsn, schema, stream, "proj") == 5
    # And the compare-and-set of the next ack still holds.
    store.append_to_stream(keep, ANY_VERSION, _kinds(*keeps))
    batch = subscriber.batch()
    with psycopg.connect(dsn) as conn, conn.transaction():
        sub.ack(batch, conn=conn)
    assert checkpoint(dsn, schema, stream, "proj") == 6


def test_filtered_events_never_pass_an_uncommitted_or_rolled_back_ack(
    dsn: str, schema: str, store: EventStore
):
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_all_streams("proj", subscriber, event_types=["Keep"])
    subscriber.subscribed()
    store.append_to_stream("s", 0, _kinds("Keep"))
    with psycopg.connect(dsn) as conn, conn.transaction():
        sub.ack(subscriber.batch(), conn=conn)
    store.append_to_stream("s", 1, _kinds("Keep"))
    batch = subscriber.batch()
    assert [e.event_id for e in batch] == [2]
    with psycopg.connect(dsn) as conn:
        conn.execute("BEGIN")
        sub.ack(batch, conn=conn)
        store.append_to_stream("s", 2, _kinds("Drop", "Drop"))
        time.sleep(QUIET)  # ticks run: the open transaction holds the row, nothing waits on it
        assert store.subscription_info("proj").checkpoint == 1
        conn.rollback()
    time.sleep(QUIET)  # ... and after the rollback, 2 is not acked: 3-4 are not stored
    assert checkpoint(dsn, schema, "$all", "proj") == 1
    store.append_to_stream("s", 4, _kinds("Keep"))
    batch = subscriber.batch()
    assert [e.event_id for e in batch] == [5]
    with psycopg.connect(dsn) as conn, conn.transaction():
        sub.ack(batch, conn=conn)
    assert checkpoint(dsn, schema, "$all", "proj") == 5


def test_an_ack_in_a_transaction_after_a_failure_is_stored(dsn: str, schema: str, make_store: Any):
    """Issue 17, item 21, exactly-once: the ack of the events before one the subscription
    cannot take is written in the caller's transaction, also after SubscriptionStopped."""

    def mapper(event: Any) -> Any:
        if event.event_id == 3:
            raise RuntimeError("cannot map")
        return event

    store = make_store()
    store.append_to_stream("s", 0, events(3))
    subscriber = QueueSubscriber()
    sub = store.subscribe_to_all_streams("proj", subscriber, mapper=mapper)
    subscriber.subscribed()
    assert [e.event_id for e in subscriber.batch()] == [1, 2]
    assert isinstance(subscriber.next(), eventstore_actors.SubscriptionStopped)
    with psycopg.connect(dsn) as conn, conn.transaction():
        sub.ack(2, conn=conn)
    assert checkpoint(dsn, schema, "$all", "proj") == 2


def test_deliveries_are_told_apart_by_their_event_objects_within_bounds() -> None:
    """`Control` remembers the batches told and not acked whole (their objects' identities,
    not the objects): an ack naming an object finds its own batch's floor, the latest first;
    a position counts for the latest batch holding it. Batches acked whole are forgotten; past
    the bounds, the oldest of the others (the batch in flight stays)."""
    from eventstore_actors.subscriptions.control import DELIVERED_IDS, DELIVERIES, Control

    control = Control(limit=10)
    first, again = [object(), object()], [object(), object(), object()]
    control.delivering(first, 0, 3)  # positions 1-3 (a gap at 2)
    control.delivering(again, 0, 3)  # told again after a lost lock: new objects, same start
    control.acked_in_transaction(1, control.delivery_of(first[0]))
    assert control.floor_of(control.delivery_of(first[-1])) == 1  # its own ack
    assert control.floor_of(control.delivery_of(again[-1])) == 0  # not raised by the copy's
    control.acked_in_transaction(2, None)  # by position: the latest batch holding it
    assert control.floor_of(control.delivery_of(again[0])) == 2
    assert control.floor_of(control.delivery_of(first[0])) == 1
    assert control.floor_of(None) == 2  # by position: the subscription's
    # Retries and copies, not acked: all remembered, up to the bound.
    for n in range(DELIVERIES - 2):
        control.delivering([object()], 3 + n, 4 + n)
    assert control.delivery_of(first[-1]) is not None
    control.delivering([object()], 100, 101)
    assert control.delivery_of(first[-1]) is None, "the oldest goes past the bound"
    assert control.delivery_of(again[-1]) is not None
    # Acked whole: forgotten as the next batch comes.
    done = [object()]
    control.delivering(done, 101, 102)
    control.acked_in_transaction(102, control.delivery_of(done[0]))
    assert control.delivery_of(done[0]) is not None
    big = [object() for _ in range(DELIVERED_IDS + 1)]
    control.delivering(big, 200, 200 + len(big))  # in flight: kept, alone if need be
    delivery = control.delivery_of(big[0])
    assert delivery is not None and control.floor_of(delivery) == 200
    assert control.latest_delivery() is delivery
    assert control.delivery_of(done[0]) is None and control.delivery_of(again[-1]) is None
