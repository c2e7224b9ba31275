"""Release 1 (commit 9f5705b) from the git history, for the rolling-upgrade tests.

`release_1_tree` extracts release 1's package and SQL with ``git archive`` (once per test
session); `Release1Process` runs `release1_child.py` with that tree first on PYTHONPATH, so the
child is a real release-1 process. Without git or that commit in the history the tests skip,
saying which is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import threading
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

from . import ChildProcess

__all__ = ["RELEASE_1", "Release1Process", "release_1_tree"]

#: The commit of release 1.
RELEASE_1 = "9f5705b"
REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("release1_child.py")

_lock = threading.Lock()
_trees: dict[Path, Path] = {}


def release_1_tree(base: Path) -> Path:
    """Release 1's tree (its package and sql/) under `base`; pytest.skip without git or the
    commit."""
    with _lock:
        if base in _trees:
            return _trees[base]
        git = shutil.which("git")
        if git is None:
            pytest.skip("git is not installed: release 1 is taken from the git history")
        try:
            archive = subprocess.run(
                [git, "-C", str(REPO), "archive", RELEASE_1, "eventstore_actors", "sql"],
                capture_output=True,
                check=True,
                timeout=60,
            ).stdout
        except subprocess.CalledProcessError as exc:
            pytest.skip(
                f"release 1 (commit {RELEASE_1}) is not in the git history of {REPO}: "
                f"{exc.stderr.decode(errors='replace').strip()}"
            )
        tree = base / "release-1"
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(tree, filter="data")
        _trees[base] = tree
        return tree


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

    def events(self, timeout: float) -> list[int]:
        """The event_ids of the next subscription batch."""
        notice: dict[str, Any] = self.notice(timeout)
        return [int(i) for i in notice["ids"]]
