"""Store-assigned event UUIDs: the UUIDv7 layout, time order, and no shared sequence between
a process and its forked children (the random bits come from the random module's generator,
which is reseeded in every child)."""

from __future__ import annotations

import os
import time
import uuid

import pytest

from eventstore_actors.storage.uuids import new_uuids


def test_layout_version_variant_and_time() -> None:
    before = time.time_ns() // 1_000_000
    made = new_uuids(100)
    after = time.time_ns() // 1_000_000
    assert len(set(made)) == 100
    for value in made:
        assert isinstance(value, uuid.UUID)
        assert value.version == 7
        assert value.variant == uuid.RFC_4122
        assert before <= value.int >> 80 <= after
        assert uuid.UUID(str(value)) == value  # a normal UUID in every respect


def test_later_milliseconds_sort_later() -> None:
    first = new_uuids(1)[0]
    deadline = time.monotonic() + 1.0
    while (second := new_uuids(1)[0]).int >> 80 == first.int >> 80:
        assert time.monotonic() < deadline
    assert second > first


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_repeat_the_parents_uuids() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next UUIDs, then exit at once
        try:
            os.write(write, b"".join(u.bytes for u in new_uuids(50)))
        finally:
            os._exit(0)
    os.close(write)
    mine = {u.bytes[6:] for u in new_uuids(50)}  # the random part (after the time)
    data = b""
    while chunk := os.read(read, 4096):
        data += chunk
    os.close(read)
    os.waitpid(pid, 0)
    theirs = {data[i + 6 : i + 16] for i in range(0, len(data), 16)}
    assert len(theirs) == 50
    assert not mine & theirs
