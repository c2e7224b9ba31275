"""Earlier releases from the git history, for the upgrade tests.

`release_tree` extracts a release's package and SQL with ``git archive`` (once per test
session): release 1 (commit 9f5705b) and release 2 (53fa9d5, the last commit at schema
version 2). `Release1Process` runs `release1_child.py` with release 1's tree first on
PYTHONPATH, so the child is a real release-1 process; `run_release` runs a snippet of Python
the same way. Without git or the commit in the history the tests skip, saying which is missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

from . import ChildProcess

__all__ = [
    "RELEASE_1",
    "RELEASE_2",
    "Release1Process",
    "release_1_tree",
    "release_tree",
    "run_release",
]

#: The commit of release 1.
RELEASE_1 = "9f5705b"
#: The last commit of release 2 (schema version 2).
RELEASE_2 = "53fa9d5"
REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("release1_child.py")

_lock = threading.Lock()
_trees: dict[tuple[Path, str], Path] = {}


def release_1_tree(base: Path) -> Path:
    """Release 1's tree (its package and sql/) under `base`; pytest.skip without git or the
    commit."""
    return release_tree(base, RELEASE_1)


def release_tree(base: Path, commit: str) -> Path:
    """The tree (package and sql/) of `commit` under `base`; pytest.skip without git or the
    commit."""
    with _lock:
        if (base, commit) in _trees:
            return _trees[base, commit]
        git = shutil.which("git")
        if git is None:
            pytest.skip("git is not installed: release 1 is taken from the git history")
        try:
            archive = subprocess.run(
                [git, "-C", str(REPO), "archive", commit, "eventstore_actors", "sql"],
                capture_output=True,
                check=True,
                timeout=60,
            ).stdout
        except subprocess.CalledProcessError as exc:
            pytest.skip(
                f"commit {commit} (an earlier release) is not in the git history of {REPO}: "
                f"{exc.stderr.decode(errors='replace').strip()}"
            )
        tree = base / f"release-{commit}"
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(tree, filter="data")
        _trees[base, commit] = tree
        return tree


def run_release(tree: Path, code: str, *args: str) -> str:
    """Run `code` in a child Python with `tree` first on PYTHONPATH (its package, not this
    checkout's); its stdout. `args` are its sys.argv[1:]."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree)
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tree,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


class Release1Process(ChildProcess):
    """A release-1 EventStore in a child process (see release1_child.py)."""

    def __init__(self, tree: Path, dsn: str, schema: str) -> None:
        self._tree = tree
        super().__init__(dsn, schema)
        reply = self.ok({"cmd": "ping"})
        assert Path(reply["file"]).resolve().is_relative_to(tree.resolve()), reply

    def _command(self, dsn: str, schema: str) -> tuple[list[str], dict[str, str]]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(self._tree)
        return [sys.executable, str(SCRIPT), dsn, schema], env

    def request(self, command: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        try:
            return super().request(command, timeout)
        except AssertionError:
            if self.proc.poll() is None:  # stuck: the child prints every thread's stack
                os.kill(self.proc.pid, signal.SIGUSR1)
                time.sleep(1.0)
            raise AssertionError(
                f"release 1 did not answer {command}: {''.join(self.stderr_tail[-120:])}"
            ) from None

    def events(self, timeout: float) -> list[int]:
        """The event_ids of the next subscription batch."""
        notice: dict[str, Any] = self.notice(timeout)
        return [int(i) for i in notice["ids"]]
