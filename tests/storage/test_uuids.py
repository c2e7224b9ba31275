"""Store-assigned event UUIDs: the UUIDv7 layout, time order, and no shared sequence between
a process and its forked children (the random bits come from a generator of the store's own,
seeded from the OS and reseeded in every child), whatever the application does with the
random module's shared generator (item 7 of issue 17)."""

from __future__ import annotations

import os
import subprocess
import sys
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


_SEEDED_CHILD = """
import random, sys
random.seed(0)
from eventstore_actors.storage.uuids import new_uuids
random.seed(0)
sys.stdout.write(" ".join(str(u) for u in new_uuids(20)))
"""


def test_two_processes_that_seed_the_random_module_alike_get_different_uuids() -> None:
    made = [
        subprocess.run(
            [sys.executable, "-c", _SEEDED_CHILD], capture_output=True, text=True, check=True
        ).stdout.split()
        for _ in range(2)
    ]
    assert len(made[0]) == len(made[1]) == 20
    randoms = [{uuid.UUID(u).bytes[6:] for u in out} for out in made]
    assert not randoms[0] & randoms[1]


def test_seeding_the_random_module_does_not_repeat_uuids_in_one_process() -> None:
    import random

    random.seed(0)
    first = {u.bytes[6:] for u in new_uuids(20)}
    random.seed(0)
    second = {u.bytes[6:] for u in new_uuids(20)}
    assert not first & second


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_differs_even_when_the_random_module_is_seeded() -> None:
    import random

    read, write = os.pipe()
    random.seed(0)
    pid = os.fork()
    if pid == 0:
        try:
            random.seed(0)
            os.write(write, b"".join(u.bytes for u in new_uuids(50)))
        finally:
            os._exit(0)
    os.close(write)
    random.seed(0)
    mine = {u.bytes[6:] for u in new_uuids(50)}
    data = b""
    while chunk := os.read(read, 4096):
        data += chunk
    os.close(read)
    os.waitpid(pid, 0)
    theirs = {data[i + 6 : i + 16] for i in range(0, len(data), 16)}
    assert len(theirs) == 50
    assert not mine & theirs
