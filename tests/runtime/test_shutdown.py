"""Ctrl-C and SIGTERM end the subscriber example of docs/subscriptions.md and
`eventstore-actors demo` at once, with no traceback (a running actor thread used to keep the
interpreter alive after the store stopped, and a second Ctrl-C printed a threading traceback)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import events

from eventstore_actors import EventStore

ROOT = Path(__file__).resolve().parents[2]
#: Seconds a signalled process may take to exit.
PROMPT = 10.0


class Running:
    """A child process whose stdout lines are collected by a thread (bounded waits)."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        env.pop("EVENTSTORE_DSN", None)
        self.proc = subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def wait_for_line(self, pattern: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not any(re.search(pattern, line) for line in self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(
                        f"no line matching {pattern!r}; stdout: {''.join(self.lines)!r}; "
                        f"exit: {self.proc.poll()}"
                    )
                self._changed.wait(min(left, 0.1))

    def signal_and_wait(self, signum: int) -> tuple[int, float, str]:
        """Send `signum`; the exit status, the seconds it took and stderr."""
        began = time.monotonic()
        self.proc.send_signal(signum)
        try:
            self.proc.wait(timeout=PROMPT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"still running {PROMPT} s after signal {signum}") from None
        took = time.monotonic() - began
        self._reader.join(timeout=5)
        assert self.proc.stderr is not None
        return self.proc.returncode, took, self.proc.stderr.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def running() -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for child in started:
        child.close()


def readme_example() -> str:
    """The subscriber example of docs/subscriptions.md, exactly as written."""
    text = (ROOT / "docs" / "subscriptions.md").read_text()
    marker = text.index("<!-- example: subscriber")
    block = re.search(r"```python\n(.*?)```", text[marker:], re.S)
    assert block is not None
    return block.group(1)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_readme_subscriber_example_stops_at_once(
    dsn: str, schema: str, tmp_path: Path, running: list[Running], signum: int
) -> None:
    code = readme_example()
    # The example's own DSN and default schema, pointed at this test's.
    code = code.replace('"postgresql://postgres@localhost/eventstore_dev"', repr(dsn))
    code = code.replace("EventStore.start(dsn)", f"EventStore.start(dsn, schema={schema!r})")
    script = tmp_path / "example.py"
    script.write_text(code)
    with EventStore.start(dsn, schema=schema) as store:
        store.append_to_stream("before", 0, events(2))
        child = Running([sys.executable, str(script)], tmp_path)
        running.append(child)
        child.wait_for_line(r"^2 before ")  # it waited for the first batch, whenever it came
        store.append_to_stream("after", 0, events(1))
        child.wait_for_line(r"^3 after ")
    status, took, stderr = child.signal_and_wait(signum)
    assert "Traceback" not in stderr, stderr
    assert status == 0, stderr
    assert child.lines[-1].strip() == "stopped"
    assert took < PROMPT


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_demo_follow_stops_on_the_first_signal(
    dsn: str, tmp_path: Path, running: list[Running], signum: int
) -> None:
    schema = f"demo_{os.urandom(4).hex()}"
    child = Running(
        [
            sys.executable,
            "-m",
            "eventstore_actors.cli",
            "demo",
            "--dsn",
            dsn,
            "--schema",
            schema,
            "--follow",
        ],
        tmp_path,
    )
    running.append(child)
    try:
        child.wait_for_line("press Ctrl-C to stop", timeout=60)
        with EventStore.start(dsn, schema=schema) as store:
            store.append_to_stream("account-9", 0, events(1))
        child.wait_for_line(r"got #6 account-9")  # it follows appends of other processes
        status, _took, stderr = child.signal_and_wait(signum)
        assert "Traceback" not in stderr, stderr
        assert status == 0, stderr
        assert "stopping" in "".join(child.lines)
    finally:
        from eventstore_actors import admin

        admin.drop(dsn, schema)


def test_demo_interrupted_mid_run_exits_without_a_traceback(
    dsn: str, tmp_path: Path, running: list[Running]
) -> None:
    schema = f"demo_{os.urandom(4).hex()}"
    child = Running(
        [sys.executable, "-m", "eventstore_actors.cli", "demo", "--dsn", dsn, "--schema", schema],
        tmp_path,
    )
    running.append(child)
    try:
        child.wait_for_line("subscribed to 'demo-printer'", timeout=60)
        status, _took, stderr = child.signal_and_wait(signal.SIGINT)
        # Interrupted (130), or it had just finished (0): either way at once and quietly.
        assert status in (0, 130), stderr
        assert "Traceback" not in stderr, stderr
    finally:
        from eventstore_actors import admin

        admin.drop(dsn, schema)
