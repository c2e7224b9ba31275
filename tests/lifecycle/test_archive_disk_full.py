"""An archive whose target fills up in the middle of a file (a full disk: RLIMIT_FSIZE in a
child process, a real write error from the real code path): a StoreUnavailableError that
says what was written, chained to the OSError; nothing printed by psycopg about a rollback
inside a transaction block; every event readable as before; the next archive does the rest.
Real PostgreSQL, real Parquet files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from eventstore_actors import EventData, EventStore

pytest.importorskip("pyarrow.parquet")
resource = pytest.importorskip("resource")

ROOT = Path(__file__).resolve().parents[2]

_FULL = textwrap.dedent(
    """
    import json, resource, signal, sys
    from eventstore_actors import EventStore
    from eventstore_actors.lifecycle.archive import writer

    dsn, schema, target, limit = sys.argv[1:5]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails: EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), int(limit)))
    writer.FILE_EVENTS, writer.ROW_GROUP = 100, 20
    with EventStore.start(dsn, schema=schema) as store:
        try:
            store.archive(before_event_id=1000, target=target)
            print(json.dumps({"error": None}))
        except Exception as exc:
            cause = exc.__cause__
            print(json.dumps({"error": type(exc).__name__, "message": str(exc),
                              "cause": type(cause).__name__ if cause else None}))
    """
)


def test_a_target_that_fills_up_mid_archive_raises_a_store_error_and_loses_nothing(
    make_store: Callable[..., EventStore], dsn: str, schema: str, tmp_path: Path
) -> None:
    store = make_store()
    small = [EventData(data={"i": i}, event_type="T") for i in range(100)]
    store.append_to_stream("small", 0, small)  # 1-100
    big = [EventData(data={"pad": os.urandom(400).hex()}, event_type="T") for _ in range(100)]
    store.append_to_stream("big", 0, big)  # 101-200: a file far over the limit
    before = [(e.event_id, e.stream_uuid, e.data) for e in store.read_all_streams_forward(0, 1000)]

    proc = subprocess.run(
        [sys.executable, "-c", _FULL, dsn, schema, str(tmp_path), "30000"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert proc.returncode == 0, proc.stderr[-2000:]
    outcome: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert outcome["error"] == "StoreUnavailableError", outcome
    assert outcome["cause"] == "OSError", outcome
    message = outcome["message"]
    assert "events-00000000000000000101-00000000000000000200.parquet" in message
    assert "nothing of event_ids 101..200 was archived" in message
    assert "the 100 events of its earlier files were moved" in message
    assert "error ignored" not in proc.stderr and "rollback" not in proc.stderr, proc.stderr
    # The first file is archived, the second left nothing behind; every event reads as before.
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".parquet") == [
        "events-00000000000000000001-00000000000000000100.parquet"
    ]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file
    after = [(e.event_id, e.stream_uuid, e.data) for e in store.read_all_streams_forward(0, 1000)]
    assert after == before
    # With room again, the next archive moves the rest.
    result = store.archive(before_event_id=1000, target=str(tmp_path))
    assert (result.first_event_id, result.last_event_id, result.events) == (101, 200, 100)
    after = [(e.event_id, e.stream_uuid, e.data) for e in store.read_all_streams_forward(0, 1000)]
    assert after == before
